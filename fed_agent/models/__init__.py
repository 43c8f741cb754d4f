"""Base models: ``registry`` (``model.name`` -> a loaded base), ``base``, ``tokenizer``,
``pretrain``, ``real_models`` (SmolLM2, MiniLM, any Hugging Face folder) and ``vlm``."""
