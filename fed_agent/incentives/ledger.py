"""The payment ledger: one row per ES offer per round, written when the round commits.

A round's rows become final together with the round's aggregate and checkpoint (the strategy's
``commit_round``): until then they live in memory only, so a run that dies mid-round has
written none of them and a resumed run that redoes the round pays it once.

Only accepted, validated and aggregated work is paid. Each row holds what the cloud offered and
observed, the reward paid, the cloud's value of the work, and the cloud's own estimates of the
ES's utility and modelled latency: nothing in a row comes from a figure the ES reports about
its private type (only ``wall_s`` is self-reported, typed and bounded by the protocol).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fed_agent.outputs import write_text_atomic
from fed_agent.text import one_line

STATUSES = (
    "no_offer",
    "declined",
    "not_selected",
    "paid",
    "rejected",
    "no_reply",
    "forfeit",
    "incompatible",
    "excluded",
)
"""``forfeit``: an ES engaged ex ante vanished before period 2; its held pay is forfeited.
``incompatible``: the node cannot take part: its ClientApp cannot answer the contract protocol,
or it names an ES's identity it cannot prove (recorded once; never asked again).
``excluded``: the ES took an exit item (f = 0): no work this round and no pay for work; it
is paid what the item carries, which is 0 except for the deferred pay of its period-1 work
on a period-2 exit under ex ante participation."""
EARNING_STATUSES = ("paid", "excluded", "not_selected")
"""Statuses of rows whose ``paid``/``held`` (less ``released``) are what the round's contracts
earned: work, the exit item, and (not chosen) the deferred pay of period-1 work."""
NOT_OFFERS = ("no_offer", "forfeit", "incompatible")
"""Statuses of rows that record no offer."""


@dataclass
class LedgerEntry:
    """One ES in one round."""

    round: int
    period: int
    node_id: int
    """The Flower node id of the ES."""
    status: str
    item: int = -1
    f_ghz: float = 0.0
    reward_offered: float = 0.0
    paid: float = 0.0
    cloud_value: float = 0.0
    es_utility: float = 0.0
    """The cloud's estimate: R - c(f) / theta of the type the chosen item is designed for (a
    function of the ES's choice; the ES's true utility never leaves it)."""
    modelled_latency_s: float = 0.0
    """The cloud's W / f + S / r from the ES's public facts and the contracted f."""
    wall_s: float = 0.0
    """Local training wall time as the ES reported it (bounded; never used for pay)."""
    belief_on_revealed_type: float = float("nan")
    reason: str = ""
    offer_source: str = ""
    """Who designed the contract offered: designer (the policy), fallback (the guard's
    pooling reference was better), exact (the guard's exact solve was better than both) or
    no_offer (even the best would lose money)."""
    excluded_types: str = ""
    """The exit items of the contract offered (``1:i`` period-1 type i, ``2:h,j`` period-2
    type j after report h; :func:`fed_agent.contracts.solvers.references.excluded_items`)."""
    held: float = 0.0
    """Pay earned this round but held back until the epoch's period-2 work is delivered."""
    released: float = 0.0
    """Earlier held pay paid out this round (included in ``paid``)."""
    forfeited: float = 0.0
    """Held pay the ES lost by not delivering its period-2 work."""
    pay_fraction: float = 1.0
    """The share of the offered reward its work earned (screening's settlement: updates that
    copy or combine others share one update's pay; one that improves the cloud's split less
    than its effort promises earns in proportion); 1 for full pay."""


TEXT_COLUMNS = ("status", "reason", "offer_source", "excluded_types")
"""The ledger's text columns (read back as strings whatever they hold)."""


def parse_entries(csv_text: str, source: str) -> list[LedgerEntry]:
    """The entries of a ledger CSV.

    Raises
    ------
    ValueError
        Naming ``source`` (the file) when the text is not a ledger: unparseable CSV, unknown
        or missing columns, or an unknown status.
    """
    if not csv_text.strip():
        return []
    text = {c: str for c in TEXT_COLUMNS}  # a reason of "0" or "" stays text, not a float
    try:
        frame = pd.read_csv(
            io.StringIO(csv_text), keep_default_na=False, na_values=[""], dtype=text
        )
        present = [c for c in TEXT_COLUMNS if c in frame]
        frame[present] = frame[present].fillna("")
        entries = [LedgerEntry(**row) for row in frame.to_dict("records")]
    except (pd.errors.ParserError, TypeError, ValueError) as err:
        raise ValueError(f"{source} is not a ledger: {err}") from err
    unknown = sorted({e.status for e in entries} - set(STATUSES))
    if unknown:
        raise ValueError(f"{source} is not a ledger: unknown status {unknown[:3]}")
    return entries


class Ledger:
    """All entries of a run, persisted as CSV after every round."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[LedgerEntry] = []
        if path.is_file():
            self.entries = parse_entries(path.read_text(), str(path))

    def add(self, entry: LedgerEntry) -> None:
        """Append one entry (the status must be known); its texts cut to one short line
        (:func:`fed_agent.text.one_line`: a reason may quote what a node sent)."""
        if entry.status not in STATUSES:
            raise ValueError(f"unknown ledger status {entry.status!r}; valid choices: {STATUSES}")
        entry.reason = one_line(entry.reason) if entry.reason else ""
        entry.offer_source = one_line(entry.offer_source) if entry.offer_source else ""
        entry.excluded_types = entry.excluded_types if isinstance(entry.excluded_types, str) else ""
        self.entries.append(entry)

    def frame(self) -> pd.DataFrame:
        """All entries as a table."""
        return pd.DataFrame(
            [asdict(e) for e in self.entries], columns=list(LedgerEntry.__annotations__)
        )

    def csv_text(self) -> str:
        """All entries as CSV text (what :meth:`write` writes and a checkpoint keeps)."""
        return self.frame().to_csv(index=False)

    def write(self, text: str | None = None) -> None:
        """Persist atomically (``text``: the :meth:`csv_text` already taken, e.g. for the
        checkpoint, so that both copies are the same bytes)."""
        write_text_atomic(self.csv_text() if text is None else text, self.path)

    def round_summary(self, server_round: int) -> dict[str, float]:
        """Cloud utility, payments, participation and modelled latency of one round.

        ``participation_rate``: the share of offered ESs that took an item (whether or not
        they were then chosen); ``participants``: the ESs paid for accepted work.
        """
        rows = [e for e in self.entries if e.round == server_round]
        paid = [e for e in rows if e.status == "paid"]
        offered = [e for e in rows if e.status not in NOT_OFFERS]
        accepted = [e for e in rows if e.item >= 0]  # took an item (chosen or not)
        earning = [e for e in rows if e.status in EARNING_STATUSES]
        earned = float(sum(e.paid - e.released + e.held for e in earning))
        return {
            "offers": len(offered),
            "no_offers": len(rows) - len(offered),
            "participants": len(paid),
            "excluded": sum(e.status == "excluded" for e in rows),
            "participation_rate": len(accepted) / len(offered) if offered else 0.0,
            # what this round's work earns, whether paid now or held back to period 2
            "payments": earned,
            "cash_paid": float(sum(e.paid for e in rows)),
            "held": float(sum(e.held for e in rows)),
            "forfeited": float(sum(e.forfeited for e in rows)),
            # value of the work minus its pay; held pay an ES forfeits comes back to the cloud
            "cloud_utility": float(sum(e.cloud_value for e in paid))
            - earned
            + float(sum(e.forfeited for e in rows)),
            "round_latency_model_s": float(max((e.modelled_latency_s for e in paid), default=0.0)),
            "es_utility_mean": float(np.mean([e.es_utility for e in paid])) if paid else 0.0,
            "belief_accuracy": float(
                np.nanmean([e.belief_on_revealed_type for e in rows])
                if any(not np.isnan(e.belief_on_revealed_type) for e in rows)
                else np.nan
            ),
        }
