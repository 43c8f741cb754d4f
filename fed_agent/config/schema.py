"""Typed schemas of every config group: the one home of each default.

YAML files under ``configs/`` only override these fields; Hydra validates every file against
the dataclass registered for its group, so a misspelt key fails at compose time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from fed_agent.choices import check_choice
from fed_agent.contracts.market import MarketParams
from fed_agent.incentives.config import IncentiveConfig
from fed_agent.incentives.policies import LEARNED_POLICIES, designer_checkpoint
from fed_agent.incentives.profiles import check_simulated_markets
from fed_agent.privacy import PrivacyConfig
from fed_agent.screening.aggregation import AGGREGATORS
from fed_agent.screening.config import ScreeningConfig
from fed_agent.validation import check_flags, check_number

TASKS = ("decide", "describe")
PROMPT_STYLES = ("log", "natural")
"""``log``: the compact perception log (what the tiny bases are pre-trained on); ``natural``:
an instruction in words around the scene's description (what instruction-tuned bases such
as SmolLM2-Instruct read best)."""
AGGREGATIONS = tuple(AGGREGATORS)
LR_SCHEDULES = ("constant", "linear")
MODEL_NAMES = ("tiny-llm", "tiny-vlm", "smollm2-135m", "minilm-perception", "hf")
"""Every ``model.name``: the keys of ``fed_agent.models.registry.BUILDERS``, named here too so
that the config refuses an unknown base without importing torch."""
CLASSIFYING_MODELS = ("minilm-perception",)
"""Registry bases that classify (a head over the decisions) rather than generate text: they
have no language-model output head for ``model.train_lm_head``."""
LORA_TARGET_PATTERN = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")
"""A LoRA target names a layer (``q_proj``) or the dotted end of its path
(``self_attn.q_proj``): peft matches the end of each module's name, and
``fed_agent.modules.adapter`` joins the names into a regular expression."""
MODULE_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
"""A module name also names its adapter file ``<name>.safetensors`` in the agent directory."""
DEVICES = ("auto", "cpu", "cuda", "mps")
"""``model.device``: where a process puts its base and trains or scores on it. ``auto``: CUDA
when there is a GPU, else Apple's MPS, else the CPU. Every process resolves it on its own
machine; a SuperNode's ``device`` node-config key overrides it for its ES."""
DTYPES = ("auto", "float32", "bfloat16", "float16")
"""``model.dtype``: ``auto`` is bfloat16 on a CUDA device that supports it, else float32."""
QUANTIZATIONS = ("none", "4bit", "8bit")
"""``model.quantization``: bitsandbytes loading of a ``model=hf`` base (CUDA only)."""
SEED_LIMIT = 2**64
"""``seed`` is below this: torch seeds its generators with an unsigned 64-bit integer."""
RUN_NAME_FORBIDDEN = ("/", "\\", "\0")
"""A run name names its folder ``<output_dir>/<run_name>``: it holds none of these and is not
empty, ``.`` or ``..`` (spaces and quotes are fine)."""


@dataclass
class FederationConfig:
    """How many edge servers (ESs) take part, for how long, and how long to wait for them."""

    num_es: int = 10
    """Virtual ESs in a simulation (the number of SuperNodes)."""
    num_rounds: int = 5
    es_per_round: int = 4
    """Upper limit on ESs that train per round (chosen by ``incentive.selection`` among the
    accepting ones; the rest stay idle that round). 4 of the 10 default ESs: FedAvg advances
    about as far per round as one ES's local steps, so for a fixed compute budget fewer,
    longer local runs reach a better module (docs/models.md, "Why the default learns the
    rule")."""
    min_available_es: int = 2
    """A round waits for at least this many connected ESs before it starts."""
    round_timeout_s: float = 600.0
    """Replies later than this are dropped from the round."""
    client_cpus: float = 1.0
    """Ray CPUs reserved per ClientApp in simulation; Ray gives each that many torch threads.
    1: one ES per core at a time. With it and a 64-step cloud reference the default run took
    173-185 s on 2 cores; with 2 (one ES at a time, two threads) and the longer reference,
    277 s."""
    client_gpus: float = 0.0
    """GPUs reserved per ClientApp in simulation (Flower's client-resources num-gpus);
    fractional shares a GPU: 0.25 runs four ESs on one. 0: the ESs use no GPU."""
    aggregation: str = "fedavg"
    server_learning_rate: float = 1.0
    """The global module moves this x the way to the round's aggregate (FedOpt's server
    learning rate, Reddi et al., ICLR 2021): 1 is plain FedAvg; above 1 extrapolates the
    averaged step, which non-IID updates shorten by partly cancelling. The main job
    (``configs/experiment/default.yaml``) uses 1.5, measured there (docs/models.md)."""
    checkpoint_every: int = 1
    """Checkpoint the cloud (module, ledger, beliefs, contracts) every this many rounds."""
    resume_from: str = ""
    """A previous run's output folder: continue after its newest checkpoint (empty = fresh)."""
    fold_offers: bool = True
    """Send a round's offers with the module in its TRAIN messages (the ES picks its item and
    trains at once) when every ES that accepts will be chosen; false: always ask first with a
    separate offer QUERY. In a deployment every message is a ClientApp process start."""

    def __post_init__(self) -> None:
        check_flags("federation", self)
        for name in (
            "num_es",
            "num_rounds",
            "es_per_round",
            "min_available_es",
            "checkpoint_every",
        ):
            check_number(f"federation.{name}", getattr(self, name), 1, integer=True)
        check_number("federation.round_timeout_s", self.round_timeout_s, 0, ends="()")
        check_number("federation.client_cpus", self.client_cpus, 0, ends="()")
        check_number("federation.server_learning_rate", self.server_learning_rate, 0, 4, ends="(]")
        for name in ("es_per_round", "min_available_es"):
            if getattr(self, name) > self.num_es:
                raise ValueError(
                    f"federation.{name} must be <= federation.num_es ({self.num_es}), got "
                    f"{getattr(self, name)}"
                )
        check_number("federation.client_gpus", self.client_gpus, 0)
        check_choice("federation.aggregation", self.aggregation, AGGREGATIONS)


@dataclass
class ModelConfig:
    """The base model (from the registry) and the LoRA agent module put on top of it."""

    name: str = "tiny-llm"
    """A key of the base-model registry (fed_agent.models.registry.BUILDERS)."""
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    vocab_size: int = 1024
    """Target vocabulary of the locally trained byte-level BPE tokenizer."""
    max_seq_len: int = 128
    vision_hidden_size: int = 64
    vision_layers: int = 2
    patch_size: int = 8
    pretrain_steps: int = 150
    """Language-model pre-training of the tiny base on the public scene corpus (not the tasks)."""
    pretrain_lr: float = 3e-3
    pretrain_corpus_size: int = 3000
    lora_r: int = 4
    lora_alpha: int = 8
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=list)
    """Layers of the language model that carry LoRA (a vision tower never does); empty: peft's
    defaults for the architecture (q_proj and v_proj on Llama and Qwen2, query and value on
    BERT; a VLM takes its language model's)."""
    lora_freeze_a: bool = False
    """FFA-LoRA: keep every A matrix at its shared seeded initialisation and train only B, so
    the weighted mean of the B matrices is exactly the mean of the updates B @ A."""
    cache_dir: str = ""
    """Where built base models are cached; empty = the machine's cache (fed_agent.cache:
    $FED_AGENT_CACHE, else the project's .cache/fed_agent)."""
    path: str = ""
    """For ``name: hf``: a Hugging Face model id or a local directory (ignored otherwise).
    Checked when a run starts (``fed_agent.models.preflight``), not here: the config holds
    no disk or cache look-ups."""
    use_chat_template: bool = True
    """Wrap each prompt in the tokenizer's chat template (as a user turn, with the generation
    prompt) when the tokenizer has one; false: the plain prompt."""
    train_projector: bool = True
    """A VLM's projector (vision -> text embeddings) trains in full and travels with the
    adapter; false: it stays frozen."""
    train_vision_tower: bool = False
    """A VLM's vision tower trains in full and travels with the adapter (large: MBs a round)."""
    train_lm_head: bool = False
    """The language model's output head (vocabulary x hidden) trains in full and travels with
    the adapter, for answers in tokens the base barely predicts (the tiny bases' digits). On a
    tied head the trained copy is untied from the input embeddings. Any generating base; a
    classifying one (minilm-perception) refuses it at load."""
    device: str = "auto"
    """auto, cpu, cuda or mps (see DEVICES): the one home of the device setting."""
    dtype: str = "auto"
    """auto, float32, bfloat16 or float16 (see DTYPES) for the base's weights."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, ~30 % more time a step."""
    quantization: str = "none"
    """none, 4bit or 8bit (see QUANTIZATIONS): bitsandbytes loading of a ``model=hf`` base;
    needs CUDA, refused at config load on a machine without it."""

    def __post_init__(self) -> None:
        check_flags("model", self)
        check_choice("model.name", self.name, MODEL_NAMES)
        for name in (
            "hidden_size",
            "num_layers",
            "num_heads",
            "vocab_size",
            "max_seq_len",
            "lora_r",
            "intermediate_size",
            "vision_hidden_size",
            "vision_layers",
            "patch_size",
            "pretrain_corpus_size",
            "lora_alpha",
            "num_kv_heads",
        ):
            check_number(f"model.{name}", getattr(self, name), 1, integer=True)
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.hidden_size ({self.hidden_size}) must be divisible by "
                f"model.num_heads ({self.num_heads})"
            )
        if self.num_kv_heads > self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model.num_kv_heads ({self.num_kv_heads}) must be >= 1 and divide "
                f"model.num_heads ({self.num_heads})"
            )
        check_number("model.lora_dropout", self.lora_dropout, 0, 1, ends="[)")
        if isinstance(self.lora_targets, str) or not isinstance(self.lora_targets, Sequence):
            raise ValueError(
                f"model.lora_targets must be a list of layer names, got {self.lora_targets!r}"
            )
        for target in self.lora_targets:
            if not isinstance(target, str) or not LORA_TARGET_PATTERN.fullmatch(target):
                raise ValueError(
                    "model.lora_targets must list layer names (letters, digits and _, or a "
                    f"dotted path of them), got {target!r} in {self.lora_targets!r}"
                )
        if self.train_lm_head and self.name in CLASSIFYING_MODELS:
            raise ValueError(
                f"model.train_lm_head needs a generating base; model={self.name} classifies"
            )
        check_number("model.pretrain_steps", self.pretrain_steps, 0, integer=True)
        check_number("model.pretrain_lr", self.pretrain_lr, 0, ends="()")
        check_choice("model.device", self.device, DEVICES)
        check_choice("model.dtype", self.dtype, DTYPES)
        check_choice("model.quantization", self.quantization, QUANTIZATIONS)
        if self.quantization != "none":
            if self.name != "hf":
                raise ValueError(
                    f"model.quantization={self.quantization} loads a model=hf base only, "
                    f"got model={self.name}"
                )
            _check_cuda_for_quantization(self.quantization)


def _check_cuda_for_quantization(quantization: str) -> None:
    """Refuse bitsandbytes loading on a machine without CUDA (one line)."""
    import torch  # only for a quantised base: the config loads without torch otherwise

    if not torch.cuda.is_available():
        raise ValueError(
            f"model.quantization={quantization} needs a CUDA GPU (bitsandbytes); this machine "
            "has none: use model.quantization=none"
        )


@dataclass
class TrainingConfig:
    """Local training of an agent module on one ES."""

    local_steps: int = 480
    """Optimiser steps per round at full effort (the step budget); an ES contracted at f GHz
    takes ``local_steps * f / market.f_max_ghz`` of them (96-200 at the default contracts)."""
    batch_size: int = 16
    learning_rate: float = 1e-3
    max_grad_norm: float = 1.0
    eval_batch_size: int = 64
    lr_schedule: str = "constant"
    """Learning rate over one local training call: constant or linear (decay to 0)."""

    def __post_init__(self) -> None:
        check_number("training.local_steps", self.local_steps, 0, integer=True)
        check_number("training.batch_size", self.batch_size, 1, integer=True)
        check_number("training.eval_batch_size", self.eval_batch_size, 1, integer=True)
        check_number("training.learning_rate", self.learning_rate, 0, ends="()")
        # clipping to 0 would zero every step: a norm bound must be > 0
        check_number("training.max_grad_norm", self.max_grad_norm, 0, ends="()")
        check_choice("training.lr_schedule", self.lr_schedule, LR_SCHEDULES)


DATA_SOURCES = ("synthetic", "files")
"""``synthetic``: every ES generates its scenes from the seed (the embedded default);
``files``: every ES reads its own data folder (docs/data.md)."""


@dataclass
class DataConfig:
    """Where the ESs' data, the held-out split and the cloud's own split come from.

    ``synthetic`` (the default): mobile-metaverse perception scenes generated per ES, with the
    fields below from ``samples_per_es`` to ``prompt_style``. ``files``: every ES reads its own
    folder (``data.jsonl`` + ``dataset.json``, docs/data.md) and the cloud reads its held-out
    and reference splits from ``eval_path`` and ``cloud_path``; the generator fields are unused
    except ``image_size`` (images are resized to it).
    """

    source: str = "synthetic"
    """synthetic or files (see DATA_SOURCES)."""
    path: str = ""
    """``source=files``, simulation: the folder holding one data folder per ES, named by its
    partition id (``<path>/0/``, ``<path>/1/``, ...). In a deployment each SuperNode names its
    own folder instead (node config ``data-path``, ``fed-agent deploy supernode --data-path``)."""
    eval_path: str = ""
    """``source=files``: the cloud's held-out evaluation folder (never an ES's)."""
    cloud_path: str = ""
    """``source=files``: the cloud's own small labelled folder, its reference for judging
    updates (never an ES's)."""
    samples_per_es: int = 256
    eval_samples: int = 500
    """Held-out scenes, generated from their own seed stream (no ES trains on them); each is
    asked as every task, so 500 scenes put one standard error of an accuracy at <= 2.2 points."""
    dirichlet_alpha: float = 0.5
    """Concentration of each ES's mixture over scene kinds (small = more non-IID)."""
    tasks: list[str] = field(default_factory=lambda: ["decide"])
    """What the ESs train on; ``describe`` (text generation) costs steps the decision needs."""
    image_size: int = 32
    prompt_style: str = "log"
    """How text prompts are worded: log or natural (see PROMPT_STYLES)."""

    def __post_init__(self) -> None:
        check_choice("data.source", self.source, DATA_SOURCES)
        if self.source == "files":
            missing = [f"data.{k}" for k in ("eval_path", "cloud_path") if not getattr(self, k)]
            if missing:
                raise ValueError(
                    f"data.source=files needs {' and '.join(missing)}: the cloud's held-out and "
                    "reference splits come from its own files, never from an ES"
                )
        check_choice("data.prompt_style", self.prompt_style, PROMPT_STYLES)
        for name in ("samples_per_es", "eval_samples"):
            check_number(f"data.{name}", getattr(self, name), 1, integer=True)
        check_number("data.dirichlet_alpha", self.dirichlet_alpha, 0, ends="()")
        if isinstance(self.tasks, str) or not isinstance(self.tasks, Sequence) or not self.tasks:
            raise ValueError(
                f"data.tasks must list at least one of {list(TASKS)}, got {self.tasks!r}"
            )
        for task in self.tasks:
            check_choice("data.tasks", task, TASKS)
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"data.tasks must name each task once, got {list(self.tasks)}")
        check_number("data.image_size", self.image_size, 8, integer=True)


@dataclass
class AgentConfig:
    """The deployable agent a run exports: its module's name and an earlier agent to extend."""

    module_name: str = "agent"
    """Name of this run's module in the exported agent (a format-1 agent records it only when
    it is not the default)."""
    extend: str = ""
    """An earlier agent directory (format 1 or 2) to extend (empty = a single-module agent).
    Its modules run first and are copied unchanged, checked against this machine's bases with
    this run's seed; this run's module is appended last, with no ``inputs``: it sees the plain
    request prompt, as it did in training (fed_agent/runtime.py)."""
    merged: bool = False
    """Also export each module merged into its base: a stock transformers ``save_pretrained``
    model in ``agent/merged/`` (``merged/<name>/`` per module of a multi-module agent), as large
    as the base. The peft adapter folders and the base folder are written either way."""

    def __post_init__(self) -> None:
        check_flags("agent", self)
        if not isinstance(self.module_name, str) or not MODULE_NAME_PATTERN.fullmatch(
            self.module_name
        ):
            raise ValueError(
                "agent.module_name must start with a letter or digit and hold only letters, "
                f"digits, _ or - (it names <name>.safetensors), got {self.module_name!r}"
            )


@dataclass
class ExperimentConfig:
    """The whole configuration of one federated run."""

    seed: int = 0
    output_dir: str = "outputs"
    """Run outputs go to <output_dir>/<run_name>; relative paths resolve against the cwd."""
    run_name: str = "default"
    federation: FederationConfig = field(default_factory=FederationConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    market: MarketParams = field(default_factory=MarketParams)
    """The contract market (types, transitions, costs, value); defaults in MarketParams."""
    incentive: IncentiveConfig = field(default_factory=IncentiveConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    screening: ScreeningConfig = field(default_factory=ScreeningConfig)
    """How the cloud judges each returned update (fed_agent/screening/judge.py)."""
    agent: AgentConfig = field(default_factory=AgentConfig)
    """The exported agent: this run's module name and an earlier agent to extend."""

    def __post_init__(self) -> None:
        # torch's generators take a 64-bit seed: a larger one fails when a run seeds them
        check_number("seed", self.seed, 0, SEED_LIMIT, ends="[)", integer=True)
        name = self.run_name
        if name in ("", ".", "..") or any(c in name for c in RUN_NAME_FORBIDDEN):
            raise ValueError(
                "run_name must name one folder: not empty, '.' or '..', and without path "
                f"separators (/ or \\), got {name!r}"
            )
        check_simulated_markets(self.market, self.incentive)
        if self.incentive.policy == "none":  # Flower's FedAvg: no checkpoints, no central DP
            for name, value in (
                ("federation.resume_from", self.federation.resume_from),
                ("privacy.enabled", self.privacy.enabled),
            ):
                if value:
                    raise ValueError(
                        f"{name}={value} needs a contract run: incentive.policy=none (Flower's "
                        "FedAvg) has no checkpoints and no central DP"
                    )
        if self.incentive.policy == "fedavg_flat_fee":  # its one item must be a feasible f
            try:
                check_number(
                    "incentive.flat_fee_f_ghz",
                    self.incentive.flat_fee_f_ghz,
                    self.market.f_min_ghz,
                    self.market.f_max_ghz,
                )
            except ValueError as err:
                raise ValueError(f"{err} (market.f_min_ghz to market.f_max_ghz)") from err
        # a learned policy needs a designer for this K: fail here, before any run folder
        if self.incentive.policy in LEARNED_POLICIES:
            try:
                designer_checkpoint(self.incentive, self.market.num_types)
            except FileNotFoundError as err:
                raise ValueError(str(err)) from err
