"""One rule for numeric settings: a real number of the right kind, finite, inside its range.

Every config dataclass checks its numeric fields with :func:`check_number` in its
``__post_init__``, so NaN, infinities, booleans and strings fail when the config is loaded,
with a message that names the field, never inside a run; :func:`check_flags` does the same for
its ``bool`` fields (a config built from a manifest's JSON, not through the loader, included).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable
from numbers import Integral, Real

ENDS = ("[]", "[)", "(]", "()")
"""Which ends of a range are closed (``[``/``]``) or open (``(``/``)``)."""


def _range_text(low: float | None, high: float | None, ends: str) -> str:
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if ends[0] == '(' else '>='} {low:g}"
    if low is None:
        return f" {'<' if ends[1] == ')' else '<='} {high:g}"
    return f" in {ends[0]}{low:g}, {high:g}{ends[1]}"


def check_number(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    ends: str = "[]",
    integer: bool = False,
) -> None:
    """Refuse ``value`` unless it is a finite number (an integer if ``integer``) in range.

    Parameters
    ----------
    name : str
        The field's dotted config key (``privacy.noise_multiplier``); it leads the message.
    low, high : float, optional
        Bounds of the range (None: unbounded on that side).
    ends : str
        Which ends are closed: ``"[]"``, ``"[)"``, ``"(]"`` or ``"()"``.
    integer : bool
        Only integers are accepted (booleans never are).

    Raises
    ------
    ValueError
        ``"<name> must be ..., got <value>"`` for a wrong type, NaN, an infinity or a value
        outside the range.
    """
    if ends not in ENDS:
        raise ValueError(f"ends must be one of {ENDS}, got {ends!r}")
    kind = Integral if integer else Real
    if isinstance(value, bool) or not isinstance(value, kind):
        what = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    if integer:  # compared as it is: as a float, 2**64 - 1 would round up to 2**64
        number: float = value  # type: ignore[assignment]
    else:
        try:
            number = float(value)  # type: ignore[arg-type]
        except OverflowError:  # an integer beyond 1e308
            number = math.inf
    finite = integer or math.isfinite(number)
    above = low is None or (number > low if ends[0] == "(" else number >= low)
    below = high is None or (number < high if ends[1] == ")" else number <= high)
    if not (finite and above and below):
        what = "" if integer else " a finite number"
        raise ValueError(f"{name} must be{what}{_range_text(low, high, ends)}, got {value!r}")


def check_flags(section: str, config: object) -> None:
    """Refuse a value other than ``True`` or ``False`` in any ``bool`` field of the dataclass
    ``config`` (a manifest's ``"no"`` or ``0`` would otherwise read as a setting).

    Raises
    ------
    ValueError
        ``"<section>.<field> must be true or false, got <value>"``.
    """
    for field in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, field.name)
        if field.type in (bool, "bool") and not isinstance(value, bool):
            raise ValueError(f"{section}.{field.name} must be true or false, got {value!r}")


def number_option(
    low: float | None = None,
    high: float | None = None,
    *,
    ends: str = "[]",
    integer: bool = False,
) -> Callable[[str], float]:
    """An argparse ``type`` that applies :func:`check_number`'s rule to a command-line option,
    so that ``--seed -1`` or ``--timeout-s nan`` is refused as a usage error before the
    command does anything, instead of failing deep inside it (or not at all).

    Returns
    -------
    callable
        ``text -> int`` (``integer``) or ``text -> float``; raises
        :class:`argparse.ArgumentTypeError` (``"must be >= 0, got -1"``) otherwise.
    """

    def parse(text: str) -> float:
        try:
            value: object = int(text) if integer else float(text)
        except ValueError:
            value = text
        try:
            check_number("", value, low, high, ends=ends, integer=integer)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err).strip()) from None
        return value  # type: ignore[return-value]

    parse.__name__ = "integer" if integer else "number"
    return parse
