"""FedAgent: federated construction of AI agents at the edge.

Importing the package makes the Hugging Face hub offline by default (``HF_HUB_OFFLINE=1``):
every model is built or read locally. It must be set before ``transformers`` is imported; an
explicit setting in the environment wins.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
