"""Settings of the agent server: the one home of their defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServingConfig:
    """Where the server listens and how much work it accepts at once."""

    host: str = "127.0.0.1"
    """Loopback by default: opening the endpoint to a network is an explicit choice."""
    port: int = 8000
    max_queue: int = 32
    """Requests admitted at once (the one running plus those waiting); more get HTTP 503."""
    max_body_bytes: int = 1 << 20
    """Largest request body (1 MiB: room for a small image as a data URL); larger gets 413."""
    body_timeout_s: float = 10.0
    """Seconds a client has to send its whole request body, from the end of its headers; a
    body still incomplete then (short of its ``Content-Length``, or trickled) gets 408."""
    default_max_tokens: int = 16
    """Tokens decoded when a request names no ``max_tokens``."""
    max_tokens_limit: int = 256
    """Largest ``max_tokens`` a request may ask for (400 above)."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.max_queue < 1 or self.max_body_bytes < 1024:
            raise ValueError(
                f"max_queue must be >= 1 and max_body_bytes >= 1024, got {self.max_queue}, "
                f"{self.max_body_bytes}"
            )
        if not 0 < self.body_timeout_s <= 600:
            raise ValueError(f"body_timeout_s must be in (0, 600], got {self.body_timeout_s}")
        if not 1 <= self.default_max_tokens <= self.max_tokens_limit:
            raise ValueError(
                "need 1 <= default_max_tokens <= max_tokens_limit, got "
                f"{self.default_max_tokens}, {self.max_tokens_limit}"
            )
