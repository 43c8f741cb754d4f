"""Agent modules: base models, LoRA modules, local training, aggregation, deployable agents.

- base models: ``registry`` (``model.name`` -> a loaded base), ``base``, ``tokenizer``,
  ``pretrain``, ``real_models`` (SmolLM2, MiniLM, any Hugging Face id), ``vlm``
- the LoRA agent module and its training: ``adapter``, ``batching``, ``training``, ``generation``
- adapter aggregation and update screening (numpy only): ``aggregation``, ``robust``
- the deployable agent: ``export`` (write/load), ``extend`` (append a module to an agent)

Importing this package makes the Hugging Face hub offline by default (``HF_HUB_OFFLINE=1``):
every model is built or read locally. It must be set before ``transformers`` is imported,
which only this package does; an explicit setting in the environment wins.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
