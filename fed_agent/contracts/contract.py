"""Contract items and the two-period dynamic contract (menus for period 1 and period 2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ContractItem:
    """One item of a menu: the computing resource ``f_ghz`` committed and the ``reward`` paid."""

    f_ghz: float
    reward: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.f_ghz) and self.f_ghz > 0):
            raise ValueError(f"f_ghz: must be a finite number > 0, got {self.f_ghz!r}")
        if not (np.isfinite(self.reward) and self.reward >= 0):
            raise ValueError(f"reward: must be a finite number >= 0, got {self.reward!r}")


def _checked(values: object, name: str, shape: tuple[int, ...]) -> np.ndarray:
    array = np.array(values, dtype=float)
    if array.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {array.shape}")
    low = array.min()  # NaN if any entry is NaN: one reduction checks sign and NaN
    if not (low >= 0 and array.max() < np.inf):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name}: every entry must be finite")
        raise ValueError(f"{name}: every entry must be >= 0, got min {low!r}")
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class DynamicContract:
    """A two-period dynamic contract for K types.

    Attributes
    ----------
    f1, r1 : np.ndarray
        Period-1 menu, shape (K,): item i = (f1[i], r1[i]) is meant for period-1 type i.
    f2, r2 : np.ndarray
        Period-2 menus, shape (K, K): row i is the menu offered after period-1 report i, and
        item (i, j) is meant for period-2 type j.
    """

    f1: np.ndarray
    r1: np.ndarray
    f2: np.ndarray
    r2: np.ndarray

    def __post_init__(self) -> None:
        f1 = np.asarray(self.f1)
        if f1.ndim != 1 or f1.size == 0:
            raise ValueError(f"f1: expected a non-empty 1-D array, got shape {f1.shape}")
        k = f1.size
        object.__setattr__(self, "f1", _checked(self.f1, "f1", (k,)))
        object.__setattr__(self, "r1", _checked(self.r1, "r1", (k,)))
        object.__setattr__(self, "f2", _checked(self.f2, "f2", (k, k)))
        object.__setattr__(self, "r2", _checked(self.r2, "r2", (k, k)))

    @classmethod
    def stacked(
        cls, f1: np.ndarray, r1: np.ndarray, f2: np.ndarray, r2: np.ndarray
    ) -> list[DynamicContract]:
        """One contract per row of stacked menus f1, r1 (B, K) and f2, r2 (B, K, K).

        The same checks as the constructor, done once on the whole stack (a round builds a
        thousand contracts; checking them one by one cost a tenth of its design time).
        """
        f1 = np.asarray(f1, dtype=float)
        if f1.ndim != 2 or f1.shape[1] == 0:
            raise ValueError(f"f1: expected a (B, K) array with K >= 1, got shape {f1.shape}")
        rows, k = f1.shape
        arrays = [
            _checked(f1, "f1", (rows, k)),
            _checked(r1, "r1", (rows, k)),
            _checked(f2, "f2", (rows, k, k)),
            _checked(r2, "r2", (rows, k, k)),
        ]
        contracts = []
        for b in range(rows):
            contract = object.__new__(cls)
            for name, array in zip(("f1", "r1", "f2", "r2"), arrays, strict=True):
                object.__setattr__(contract, name, array[b])
            contracts.append(contract)
        return contracts

    @property
    def num_types(self) -> int:
        """Number K of types the menus are written for."""
        return int(self.f1.size)

    def period1_menu(self) -> list[ContractItem]:
        """The period-1 menu as items, one per reportable type."""
        return [ContractItem(float(f), float(r)) for f, r in zip(self.f1, self.r1, strict=True)]

    def period2_menu(self, report: int) -> list[ContractItem]:
        """The period-2 menu offered to an ES whose period-1 report was ``report``."""
        if not 0 <= report < self.num_types:
            raise ValueError(f"report: must be a type index in [0, {self.num_types}), got {report}")
        return [
            ContractItem(float(f), float(r))
            for f, r in zip(self.f2[report], self.r2[report], strict=True)
        ]

    def terms(self, period: int, item: int, report: int | None = None) -> tuple[float, float]:
        """(f in GHz, reward) of item ``item`` of the period's menu (period 2: row ``report``)."""
        if period == 1:
            return float(self.f1[item]), float(self.r1[item])
        if period == 2 and report is not None:
            return float(self.f2[report, item]), float(self.r2[report, item])
        raise ValueError(f"period must be 1, or 2 with a period-1 report; got {period}, {report}")

    @classmethod
    def static(cls, f: np.ndarray, r: np.ndarray) -> DynamicContract:
        """The contract that offers the same menu (f, r) in both periods, whatever the history."""
        f, r = np.asarray(f, dtype=float), np.asarray(r, dtype=float)
        k = f.size
        return cls(f, r, np.tile(f, (k, 1)), np.tile(r, (k, 1)))

    def flat_f(self) -> np.ndarray:
        """All K + K^2 computing resources, period 1 first then period 2 row by row."""
        return np.concatenate([self.f1, self.f2.ravel()])

    def flat_r(self) -> np.ndarray:
        """All K + K^2 rewards in the order of :meth:`flat_f`."""
        return np.concatenate([self.r1, self.r2.ravel()])

    @classmethod
    def from_flat(cls, f: np.ndarray, r: np.ndarray, num_types: int) -> DynamicContract:
        """Inverse of :meth:`flat_f` / :meth:`flat_r`."""
        k = num_types
        return cls(f[:k], r[:k], np.reshape(f[k:], (k, k)), np.reshape(r[k:], (k, k)))
