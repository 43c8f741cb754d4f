"""The contract designer: features, the action <-> menu boundary, scoring, checkpoints."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from fed_agent.contracts import (
    Market,
    MarketBatch,
    MarketRanges,
    audit,
    cloud_utility,
    named_market,
    sample_market,
    score_menus,
)
from fed_agent.contracts.market import MarketParams
from fed_agent.contracts.solvers import optimal_contract
from fed_agent.designer import (
    DESIGNERS,
    TRAINING_RANGES,
    ContractDesigner,
    DesignerConfig,
    EvaluationSet,
    action_dim,
    actions_to_menus,
    heldout_markets,
    menus_to_actions,
    state_dim,
    state_features,
    train_designer,
    validation_set,
)
from fed_agent.designer.designer import markets_in_ranges
from fed_agent.incentives.config import IncentiveConfig
from fed_agent.incentives.policies import shipped_checkpoint
from fed_agent.incentives.profiles import es_market, simulated_profiles
from fed_agent.rl.sac import EDMSACConfig

SHIPPED = Path(__file__).resolve().parents[1] / "fed_agent" / "assets" / "edmsac_default_k3.npz"
TINY = {"env_steps": 128, "num_envs": 32, "warmup_env_steps": 64, "eval_interval": 10_000}


def random_markets(count: int, seed: int = 0, num_types: int = 3) -> list:
    rng = np.random.default_rng(seed)
    return [sample_market(rng, MarketRanges(), num_types) for _ in range(count)]


def tiny_config(**changes: object) -> DesignerConfig:
    small = EDMSACConfig(hidden_sizes=[32, 32], critic_hidden_sizes=[32, 32], batch_size=32)
    return DesignerConfig(**{**TINY, "edmsac": small, **changes})


def test_state_features_have_fixed_width_and_stay_in_unit_box_inside_ranges() -> None:
    features = state_features(MarketBatch.from_markets(random_markets(50)), MarketRanges())
    assert features.shape == (50, state_dim(3))
    assert features.dtype == np.float32
    assert float(np.abs(features).max()) <= 1.0 + 1e-6


def test_every_action_maps_to_rising_period2_menus_within_the_bounds_of_f() -> None:
    markets = random_markets(40, seed=1)
    batch = MarketBatch.from_markets(markets)
    actions = np.random.default_rng(2).uniform(-1, 1, (40, action_dim(3)))
    f1, f2 = actions_to_menus(actions, batch)
    assert np.all(np.diff(f2, axis=-1) >= 0)  # period 1 may fall (non-monotone transitions)
    assert np.mean(np.all(np.diff(f1, axis=-1) >= 0, axis=1)) >= 0.6
    for menu in (f1[:, None, :], f2):
        assert np.all(menu >= batch.f_lo[:, None, None] - 1e-12)
        assert np.all(menu <= batch.f_hi[:, None, None] + 1e-12)
    back = actions_to_menus(menus_to_actions(f1, f2, batch), batch)
    np.testing.assert_allclose(back[0], f1, atol=1e-9)
    np.testing.assert_allclose(back[1], f2, atol=1e-9)
    # the extreme actions reach both ends of f's range
    low, _ = actions_to_menus(-np.ones((40, action_dim(3))), batch)
    high, _ = actions_to_menus(np.ones((40, action_dim(3))), batch)
    np.testing.assert_allclose(low, np.repeat(batch.f_lo[:, None], 3, axis=1))
    np.testing.assert_allclose(high, np.repeat(batch.f_hi[:, None], 3, axis=1))


@pytest.mark.parametrize("participation", ["per_period", "ex_ante"])
@pytest.mark.parametrize("num_types", [3, 5])
def test_the_mapping_expresses_every_exact_optimum(participation: str, num_types: int) -> None:
    # random markets with Dirichlet (mostly non-monotone) transitions, where the optima go
    # above the efficient level that the old mapping capped f at
    rng = np.random.default_rng(11 + num_types)
    markets = []
    for _ in range(12):
        market = sample_market(rng, MarketRanges(participation=participation), num_types)
        markets.append(market.replace(transition=rng.dirichlet(np.ones(num_types), num_types)))
    batch = MarketBatch.from_markets(markets)
    optima = [optimal_contract(m).contract for m in markets]
    f1 = np.stack([c.f1 for c in optima])
    f2 = np.stack([c.f2 for c in optima])
    above = np.any(f2 > batch.efficient_resource()[:, None, :] + 1e-3, axis=(1, 2))
    assert above.any()
    back1, back2 = actions_to_menus(menus_to_actions(f1, f2, batch), batch)
    scale = (batch.f_hi - batch.f_lo)[:, None]
    assert np.max(np.abs(back1 - f1) / scale) <= 1e-9
    assert np.max(np.abs(back2 - f2) / scale[:, None]) <= 1e-9


def test_most_of_the_action_space_is_implementable() -> None:
    markets = random_markets(40, seed=3)
    batch = MarketBatch.from_markets(markets)
    actions = np.random.default_rng(4).uniform(-1, 1, (40, action_dim(3)))
    scored = score_menus(*actions_to_menus(actions, batch), batch)
    assert np.mean(scored.violations == 0) >= 0.5


@pytest.mark.parametrize("name", DESIGNERS)
def test_each_designer_trains_and_proposes_contracts_that_pass_the_audit(name: str) -> None:
    designer = ContractDesigner(tiny_config(algorithm=name, market="default"))
    history = train_designer(designer, EvaluationSet([named_market("default")], np.array([85.61])))
    assert [row["env_steps"] for row in history] == [0.0, 128.0, 128.0]  # + the kept learner
    markets = random_markets(5, seed=7) + [named_market("default")]
    for contract, market in zip(designer.propose(markets), markets, strict=True):
        assert audit(contract, market) == []


@pytest.mark.parametrize("keep_best", [True, False])
def test_training_ends_with_the_best_evaluated_learner(keep_best: bool) -> None:
    # the named market is its own validation set: the kept learner is the best row's
    config = tiny_config(market="default", env_steps=512, eval_interval=64, keep_best=keep_best)
    designer = ContractDesigner(config)
    history = train_designer(designer)
    curve = history[:-1] if keep_best else history
    ratios = [row["utility_ratio"] for row in curve]
    assert len(set(np.round(ratios, 6))) > 2  # the policy moved, so selection matters
    final = designer.evaluate(validation_set(designer))["utility_ratio"]
    if keep_best:
        best = int(np.argmax(ratios))
        assert history[-1]["kept_env_steps"] == curve[best]["env_steps"]
        assert final == pytest.approx(max(ratios), abs=1e-12)
    else:
        assert final == pytest.approx(ratios[-1], abs=1e-12)
        assert history[-1]["kept_env_steps"] == 512.0


def test_unknown_designer_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match=r"valid choices: \['dmsac', 'edmsac', 'ppo', 'sac'\]"):
        DesignerConfig(algorithm="ddpg")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"violation_penalty": float("nan")}, "violation_penalty must be a finite number >= 0"),
        ({"reward_scale_frac": 0.0}, "reward_scale_frac must be a finite number > 0, got 0.0"),
        ({"num_types": 11}, "num_types must be in [2, 10], got 11"),
        ({"seed": -1}, "seed must be >= 0, got -1"),
        ({"eval_interval": 0}, "eval_interval must be >= 1, got 0"),
        ({"imitation_steps": 1.5}, "imitation_steps must be an integer, got 1.5"),
    ],
)
def test_a_training_setting_out_of_its_range_is_refused_naming_it(changes, message) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        DesignerConfig(**changes)


def test_designer_rejects_markets_of_another_size() -> None:
    designer = ContractDesigner(tiny_config())
    with pytest.raises(ValueError, match="K = 3"):
        designer.propose([named_market("paper")])


def test_checkpoint_round_trip_proposes_identical_menus(tmp_path: Path) -> None:
    designer = ContractDesigner(tiny_config(market="random"))
    train_designer(designer, EvaluationSet([named_market("default")], np.array([85.61])))
    markets = random_markets(8, seed=9)
    before = designer.propose_batch(markets)
    loaded = ContractDesigner.load(designer.save(tmp_path / "d.npz"))
    after = loaded.propose_batch(markets)
    for name in ("f1", "r1", "f2", "r2"):
        np.testing.assert_array_equal(getattr(before, name), getattr(after, name))
    assert loaded.config == designer.config
    assert loaded.learner.active_neuron_fraction() == pytest.approx(0.5)


def test_shipped_checkpoint_reaches_99_percent_of_the_optimum_on_the_default_market() -> None:
    torch.set_num_threads(1)
    designer = ContractDesigner.load(SHIPPED)
    market = named_market("default")
    assert SHIPPED.stat().st_size <= 5e6
    contract = designer.propose([market])[0]
    assert audit(contract, market) == []
    ratio = cloud_utility(contract, market) / optimal_contract(market).cloud_utility
    assert ratio >= 0.99
    assert designer.evaluate(EvaluationSet.solve([market]))["utility_ratio"] == pytest.approx(ratio)
    assert designer.learner.active_neuron_fraction() <= 0.6


def test_federation_ranges_contain_the_default_market() -> None:
    ranges = TRAINING_RANGES["federation"]
    market = named_market("default")
    assert ranges.workload_gcycles[0] <= market.workload_gcycles <= ranges.workload_gcycles[1]
    assert ranges.module_bytes[0] <= market.module_bytes <= ranges.module_bytes[1]
    drawn = sample_market(np.random.default_rng(0), ranges, 3)
    np.testing.assert_allclose(drawn.types, market.types)
    np.testing.assert_allclose(drawn.transition, market.transition)


def test_shipped_federation_checkpoint_serves_the_markets_of_a_federated_run() -> None:
    # each ES's market: its public facts, the measured adapter size and the cloud's belief
    # (the prior before its first choice, a row of P after it): what ContractStrategy builds
    torch.set_num_threads(1)
    designer = ContractDesigner.load(shipped_checkpoint("edmsac", 3))
    params, incentive = MarketParams(), IncentiveConfig()
    transition = Market.from_params(params).transition
    markets = []
    for partition_id in range(10):
        public, _ = simulated_profiles(0, partition_id, params, incentive)
        for belief in (None, *transition):
            markets.append(es_market(params, public, 28_672, belief))
    contracts = designer.propose(markets)
    assert all(audit(c, m) == [] for c, m in zip(contracts, markets, strict=True))
    utility = sum(cloud_utility(c, m) for c, m in zip(contracts, markets, strict=True))
    optimum = sum(optimal_contract(m).cloud_utility for m in markets)
    assert utility >= 0.97 * optimum


def _demonstration_markets(count: int) -> list[Market]:
    from fed_agent.designer.demonstrations import demonstration_markets

    return demonstration_markets("federation", 3, count, seed=0)


def test_demonstrations_are_the_exact_optima_as_actions() -> None:
    from fed_agent.designer import designer_reward
    from fed_agent.designer.demonstrations import solve_demonstrations

    markets = _demonstration_markets(5)
    demos = solve_demonstrations(markets, reward_scale_frac=0.1, violation_penalty=1.0)
    assert len(demos) == 5 and demos.failures == 0 and demos.solve_s > 0
    batch = MarketBatch.from_markets(markets)
    f1, f2 = actions_to_menus(demos.actions.double().numpy(), batch)
    optima = [optimal_contract(m) for m in markets]
    np.testing.assert_allclose(f1, np.stack([o.contract.f1 for o in optima]), atol=1e-5)
    np.testing.assert_allclose(f2, np.stack([o.contract.f2 for o in optima]), atol=1e-5)
    utility = np.array([o.cloud_utility for o in optima])
    reward = designer_reward(utility, np.zeros(5), batch, 0.1, 1.0)
    np.testing.assert_allclose(demos.rewards.numpy(), reward, rtol=1e-5)
    np.testing.assert_allclose(demos.states.numpy(), state_features(batch), rtol=1e-6)


def test_a_market_the_solver_fails_on_is_skipped_and_counted(monkeypatch, tmp_path) -> None:
    from fed_agent.designer import demonstrations as module

    markets = _demonstration_markets(4)
    real = module.optimal_contract

    def flaky(market: Market):
        if market is markets[1]:
            raise RuntimeError("cutting-plane LP failed")
        return real(market)

    monkeypatch.setattr(module, "optimal_contract", flaky)
    demos = module.solve_demonstrations(markets, 0.1, 1.0)
    assert (len(demos), demos.failures) == (3, 1)
    loaded = module.Demonstrations.load(demos.save(tmp_path / "demos.npz"))
    assert torch.equal(loaded.actions, demos.actions) and loaded.failures == 1
    monkeypatch.setattr(module, "optimal_contract", lambda market: flaky(markets[1]))
    with pytest.raises(ValueError, match="failed on every demonstration market"):
        module.solve_demonstrations(markets, 0.1, 1.0)


def test_a_repeated_market_is_solved_once_and_a_repeated_failure_counted_each_time(
    monkeypatch,
) -> None:
    """A fixed task (``paper``) repeats one market object: one exact solve, not one per row."""
    from fed_agent.designer import demonstrations as module

    fixed, other = _demonstration_markets(2)
    calls: list[Market] = []
    real = module.optimal_contract

    def counted(market: Market):
        calls.append(market)
        if market is other:
            raise RuntimeError("cutting-plane LP failed")
        return real(market)

    monkeypatch.setattr(module, "optimal_contract", counted)
    demos = module.solve_demonstrations([fixed, other, fixed, fixed, other], 0.1, 1.0)
    assert len(calls) == 2
    assert (len(demos), demos.failures) == (3, 2)
    assert torch.equal(demos.actions[0], demos.actions[2])


@pytest.mark.slow
def test_imitating_demonstrations_moves_proposals_towards_held_out_optima() -> None:
    """Cloning 96 exact optima (and no reward at all) brings an untrained EDMSAC designer's
    deterministic actions much closer to the optimal actions of markets it never saw."""
    from fed_agent.designer.demonstrations import solve_demonstrations

    demos = solve_demonstrations(_demonstration_markets(96), 0.1, 1.0)
    heldout = heldout_markets(TRAINING_RANGES["federation"], 3, count=16, seed=5)
    batch = MarketBatch.from_markets(heldout)
    optima = [optimal_contract(m).contract for m in heldout]
    target = menus_to_actions(
        np.stack([c.f1 for c in optima]), np.stack([c.f2 for c in optima]), batch
    )
    config = tiny_config(market="federation", env_steps=32, keep_best=False)

    def action_error(designer: ContractDesigner) -> float:
        actions = designer.learner.act(designer.states(batch), deterministic=True)
        return float(np.mean((actions.numpy() - target) ** 2))

    untrained = action_error(ContractDesigner(config))
    cloned = ContractDesigner(replace(config, env_steps=1, imitation_steps=800))
    train_designer(cloned, evaluation=EvaluationSet.solve(heldout[:2]), demonstrations=demos)
    assert action_error(cloned) < 0.5 * untrained, (untrained, action_error(cloned))


def test_markets_in_ranges_accepts_its_own_draws_and_nothing_wider() -> None:
    federation = TRAINING_RANGES["federation"]
    rng = np.random.default_rng(4)
    inside = [sample_market(rng, federation, 3) for _ in range(40)]
    assert markets_in_ranges(inside, federation).all()
    wider = [
        inside[0].replace(discount=0.6),  # delta is fixed at 0.5 in a federation
        inside[1].replace(participation="per_period"),
        inside[2].replace(omega=31.0),
        inside[3].replace(transition=np.eye(3)),  # persistence 1, not -0.8
        inside[4].replace(workload_gcycles=31.0),  # 1.5 x 20 is the most
    ]
    assert not markets_in_ranges(wider, federation).any()
    broad = MarketRanges()
    drawn = [sample_market(rng, broad, 4) for _ in range(20)]
    assert markets_in_ranges(drawn, broad).all()
    assert not markets_in_ranges(drawn, federation).any()
