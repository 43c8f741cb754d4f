"""The deployable agent: ``export`` (write and load an agent folder: standard peft adapters,
the base and a manifest) and ``extend`` (append a module to an agent)."""
