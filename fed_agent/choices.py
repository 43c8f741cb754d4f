"""One rule for string options: an unknown value raises and lists the valid choices."""

from __future__ import annotations

from collections.abc import Iterable


def check_choice(field_name: str, value: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise raise a ValueError naming them."""
    valid = sorted(choices)
    if value not in valid:
        raise ValueError(f"{field_name}: unknown value {value!r}; valid choices: {valid}")
    return value
