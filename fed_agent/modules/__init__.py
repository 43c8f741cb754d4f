"""The LoRA agent module: ``adapter`` (build, load, states), ``batching``, ``training`` (local
training and its schedule), ``reference`` (the cloud's reference update) and ``generation``."""
