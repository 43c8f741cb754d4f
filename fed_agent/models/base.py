"""What every registry entry returns: a frozen base model, how it is scored, how LoRA fits it.

Kept apart from ``registry.py`` so that each model family (tiny, real, VLM) can build a
``BaseModel`` without importing the registry that lists them all.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from fed_agent.cache import default_cache_dir
from fed_agent.config.schema import ModelConfig

TASK_KINDS = ("generate", "classify")
"""``generate``: a causal LM scored by next-token log-likelihood of the answer.
``classify``: an encoder with a head whose logits are the decision classes (ACTIONS order)."""

FULL_HASH_MAX_ELEMENTS = 2**22
"""Models up to this many elements are fingerprinted in full; larger ones on a sample."""
SAMPLE_ELEMENTS = 2**12
"""Values hashed per tensor of a large model (a strided sample)."""


class ModelLoadError(RuntimeError):
    """A base model that cannot be found, built or loaded."""


@dataclass
class BaseModel:
    """A frozen base model with its tokenizer and the facts the agent-module code needs."""

    name: str
    model: torch.nn.Module
    tokenizer: object
    image_tokens: int
    """Image tokens per example, the ones the model's image features replace (0 for a
    text-only model)."""
    fingerprint: str
    path: Path
    task_kind: str = "generate"
    """One of :data:`TASK_KINDS`: decides how examples are batched, trained and scored."""
    lora_scope: str = ""
    """Submodule name that must appear in a LoRA target's path ("" = anywhere). On a VLM this
    keeps LoRA on the language model only (the vision tower has q_proj/v_proj too)."""
    trainable_modules: tuple[str, ...] = ()
    """Modules trained in full and sent with the adapter (peft ``modules_to_save``): a VLM's
    projector, a classifier's head, the LM's output head (``model.train_lm_head``)."""
    image_inputs: Callable[[dict], dict] | None = None
    """A Hugging Face VLM's conversion of a batch with canonical images (``pixel_values``
    (B, 3, H, W) in [-1, 1]) into the inputs its architecture reads; the base's forward
    applies it itself, a stock copy of the model needs it (``hf_vision.py``)."""
    chat_template: bool = False
    """Prompts are wrapped in the tokenizer's chat template (``model.use_chat_template`` and a
    tokenizer that has one; set by the registry)."""
    image_prompt: tuple[int, ...] = ()
    """The token ids one image takes in a prompt as the model's own processor writes them: its
    ``image_tokens`` image tokens and the marker tokens around them (Idefics3's
    ``<fake_token_around_image><global-img>``...). Empty: the image tokens alone."""

    def __post_init__(self) -> None:
        if self.task_kind not in TASK_KINDS:
            raise ValueError(
                f"unknown task_kind {self.task_kind!r}; valid choices: {list(TASK_KINDS)}"
            )

    @property
    def is_vision(self) -> bool:
        """True for a VLM (examples carry images)."""
        return self.image_tokens > 0

    @property
    def image_ids(self) -> tuple[int, ...]:
        """The ids an image takes in every prompt (:attr:`image_prompt`, else the tokenizer's
        ``image_token`` ``image_tokens`` times; empty for a text-only model)."""
        if self.image_prompt or not self.image_tokens:
            return self.image_prompt
        image = self.tokenizer.convert_tokens_to_ids(self.tokenizer.image_token)
        return (image,) * self.image_tokens

    @property
    def num_parameters(self) -> int:
        """Parameters of the base alone (LoRA not included)."""
        return sum(p.numel() for n, p in self.model.named_parameters() if _is_base(n))

    @property
    def num_bytes(self) -> int:
        """Bytes of the base's weights: what sending the full model would cost."""
        return sum(
            p.numel() * p.element_size() for n, p in self.model.named_parameters() if _is_base(n)
        )


def _is_base(name: str) -> bool:
    """A parameter of the base itself: not LoRA, not a trained copy of a module (peft)."""
    return "lora_" not in name and "modules_to_save" not in name


def weights_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over the names, shapes and values of every parameter and buffer, in order.

    In a model above :data:`FULL_HASH_MAX_ELEMENTS` elements each tensor contributes a strided
    sample of about :data:`SAMPLE_ELEMENTS` values: hashing all 538 MB of SmolLM2-135M took
    1.0-1.4 s here, on every load. The sample tells bases apart (another checkpoint, conversion
    or seed changes every sampled tensor); it is not a tamper-proof checksum. The tiny models
    are hashed in full.
    """
    state = model.state_dict()
    is_large = sum(t.numel() for t in state.values()) > FULL_HASH_MAX_ELEMENTS
    digest = hashlib.sha256()
    for name, tensor in state.items():
        flat = tensor.detach().reshape(-1)
        if is_large and flat.numel() > SAMPLE_ELEMENTS:
            flat = flat[:: flat.numel() // SAMPLE_ELEMENTS]
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        if flat.dtype == torch.bfloat16:  # numpy has no bfloat16: hash its raw 16-bit words
            flat = flat.view(torch.int16)
        digest.update(flat.contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def cache_root(cfg: ModelConfig) -> Path:
    """The directory that holds built bases: ``model.cache_dir``, else the machine's cache
    (:func:`fed_agent.cache.default_cache_dir`)."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser().resolve()
    return default_cache_dir()


@contextlib.contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """Hold a machine-wide lock for building ``path``: one builder, the others wait and load."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def output_head(model: torch.nn.Module) -> str:
    """The qualified name of ``model``'s output head (``get_output_embeddings``, e.g. ``lm_head``).

    Raises
    ------
    ModelLoadError
        When the model has none (an encoder with a classifier head).
    """
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if getter is not None else None
    for name, module in model.named_modules():
        if head is not None and module is head:
            return name
    raise ModelLoadError(
        f"model.train_lm_head: {type(model).__name__} has no language-model output head"
    )


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, no gradients: a base is never trained, only its LoRA module is."""
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model
