"""One rule for numeric settings: a real number of the right kind, finite, inside its range.

Every config dataclass checks its numeric fields with :func:`check_number` in its
``__post_init__``, so NaN, infinities, booleans and strings fail when the config is loaded,
with a message that names the field, never inside a run.
"""

from __future__ import annotations

import math
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
    number = float(value)
    above = low is None or (number > low if ends[0] == "(" else number >= low)
    below = high is None or (number < high if ends[1] == ")" else number <= high)
    if not (math.isfinite(number) and above and below):
        what = "" if integer else " a finite number"
        raise ValueError(f"{name} must be{what}{_range_text(low, high, ends)}, got {value!r}")
