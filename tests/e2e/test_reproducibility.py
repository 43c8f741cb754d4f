"""Same config and seed, same run: two real simulations, Flower's node ids drawn anew each time."""

from __future__ import annotations

import pandas as pd
import pytest

from fed_agent.deploy.launcher import launch_simulation
from fed_agent.outputs import reproducible_digest

pytestmark = pytest.mark.slow

# 6 ESs of which a seeded draw offers 3 and selection keeps 2: the ESs a round picks, and the
# row of the batched design each gets, follow the node order, which the random ids must not set
SAMPLED = (
    "federation.num_es=6 federation.es_per_round=2 incentive.max_offers_per_round=3 "
    "federation.num_rounds=3"
)


@pytest.mark.timeout(1200)
def test_two_runs_of_one_seed_with_one_or_two_cpus_per_es_are_identical(tmp_path):
    folders = []
    for cpus in (1, 2):
        overrides = f"{SAMPLED} federation.client_cpus={cpus} output_dir={tmp_path / str(cpus)}"
        folders.append(launch_simulation("smoke", overrides).output_dir)
    one, two = (pd.read_csv(f / "metrics.csv") for f in folders)
    assert list(one["round"]) == [0, 1, 2, 3]
    assert (one["participants"].iloc[1:] == 2).all()  # selection did choose among accepters
    assert one["adapter_sha256"].tolist() == two["adapter_sha256"].tolist()
    assert one["adapter_sha256"].nunique() == 4  # every round changed the module
    assert reproducible_digest(folders[0] / "metrics.csv") == reproducible_digest(
        folders[1] / "metrics.csv"
    )
    ledgers = [pd.read_csv(f / "ledger.csv") for f in folders]
    assert set(ledgers[0]["node_id"]).isdisjoint(ledgers[1]["node_id"])  # Flower's ids differ
    columns = ["round", "status", "item", "f_ghz", "reward_offered"]
    pd.testing.assert_frame_equal(ledgers[0][columns], ledgers[1][columns])
