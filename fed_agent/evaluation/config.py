"""Settings of the deployed-agent evaluation: the one home of their defaults."""

from __future__ import annotations

from dataclasses import dataclass

from fed_agent.validation import check_number


@dataclass(frozen=True)
class EvaluationConfig:
    """How many requests are timed and how the cloud-only deployment is modelled."""

    requests: int = 50
    """Timed requests per deployment (after the warm-up ones), for p50/p95."""
    warmup_requests: int = 3
    """Untimed requests first: the first calls in a process are much slower (allocations)."""
    max_new_tokens: int = 16
    """Tokens decoded per timed request (EOS ignored while timing: a fixed decode length)."""
    eval_batch_size: int = 32
    rtt_ms: float = 60.0
    """Round trip edge device <-> cloud of the modelled cloud-only deployment (a typical
    4G/5G-to-regional-cloud figure)."""
    uplink_mbps: float = 10.0
    """Uplink rate for sending the request (prompt text, or the raw image for a VLM)."""

    def __post_init__(self) -> None:
        for name, low in (
            ("requests", 1),
            ("warmup_requests", 0),
            ("max_new_tokens", 1),
            ("eval_batch_size", 1),
        ):
            check_number(f"evaluation.{name}", getattr(self, name), low, integer=True)
        check_number("evaluation.rtt_ms", self.rtt_ms, 0)
        check_number("evaluation.uplink_mbps", self.uplink_mbps, 0, ends="()")
