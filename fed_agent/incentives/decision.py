"""The ES's side of a contract round: which item it picks and how much work that means."""

from __future__ import annotations

from dataclasses import dataclass

from fed_agent import latency
from fed_agent.contracts import DynamicContract, Market, es_choice, period2_choice


@dataclass(frozen=True)
class Choice:
    """An ES's answer to an offer: the item index (its reported type), or None to decline."""

    item: int | None

    @property
    def accepted(self) -> bool:
        """True when the ES took an item."""
        return self.item is not None


def choose_item(
    contract: DynamicContract,
    market: Market,
    period: int,
    true_type: int,
    report: int | None,
    oracle: bool = False,
) -> Choice:
    """Self-selection: the utility-maximising item of period 1 or 2, or a decline.

    ``report`` is the ES's period-1 report (needed in period 2). With ``oracle`` (the
    complete-information benchmark) the cloud already knows the type: the ES can only take its
    own type's item or decline.
    """
    if oracle:
        f, r = item_terms(contract, period, true_type, report)
        cost = latency.energy_cost(f, market.workload_gcycles, market.kappa)
        utility = r - float(cost) / market.types[true_type]
        return Choice(true_type if utility >= -1e-9 else None)
    if period == 1:
        return Choice(es_choice(contract, market, true_type))
    if period == 2:
        if report is None:
            raise ValueError("period 2 needs the ES's period-1 report")
        return Choice(period2_choice(contract, market, report, true_type))
    raise ValueError(f"period must be 1 or 2, got {period}")


def item_terms(
    contract: DynamicContract, period: int, item: int, report: int | None
) -> tuple[float, float]:
    """(f in GHz, reward) of item ``item`` of the period's menu (period 2: row ``report``)."""
    if period == 1:
        return float(contract.f1[item]), float(contract.r1[item])
    return float(contract.f2[report, item]), float(contract.r2[report, item])


def local_steps_for(f_ghz: float, f_max_ghz: float, full_steps: int) -> int:
    """Training steps for a committed computing resource: proportional to f, at least 1."""
    return max(1, round(full_steps * f_ghz / f_max_ghz))
