"""Validation before side effects: every bad value is refused when the config loads.

Each error is one line naming the field and the rule; ``fed-agent run`` exits 2 before any
SuperLink starts or any run folder is created, and prints no traceback.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fed_agent.config import ConfigError, ModelConfig, load_config
from tests.conftest import run_fed_agent

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            "federation.round_timeout_s=nan",
            "federation.round_timeout_s must be a finite number > 0",
        ),
        (
            "federation.round_timeout_s=inf",
            "federation.round_timeout_s must be a finite number > 0",
        ),
        ("federation.round_timeout_s=-1", "federation.round_timeout_s must be a finite number > 0"),
        ("federation.es_per_round=11", r"federation.es_per_round must be <= federation.num_es"),
        (
            "federation.server_learning_rate=0",
            r"federation.server_learning_rate must be a finite number in \(0, 4\]",
        ),
        (
            "federation.server_learning_rate=nan",
            r"federation.server_learning_rate must be a finite number in",
        ),
        (
            "federation.server_learning_rate=5",
            r"federation.server_learning_rate must be a finite number in",
        ),
        ("federation.min_available_es=11", "federation.min_available_es must be <= federation"),
        ("model.lora_dropout=1.5", r"model.lora_dropout must be a finite number in \[0, 1\)"),
        ("model.lora_dropout=1.0", r"model.lora_dropout must be a finite number in \[0, 1\)"),
        ("model.lora_dropout=-0.1", r"model.lora_dropout must be a finite number in \[0, 1\)"),
        ("model.num_kv_heads=3", r"model.num_kv_heads \(3\) must be >= 1 and divide"),
        ("model.num_kv_heads=0", r"^model.num_kv_heads must be >= 1, got 0$"),
        ("model.num_heads=3", r"model.hidden_size \(128\) must be divisible by model.num_heads"),
        ("run_name=../../escape", "run_name must name one folder"),
        ("run_name=a/b", "run_name must name one folder"),
        ("run_name=..", "run_name must name one folder"),
        ("model.device=tpu", r"model.device: unknown value 'tpu'; valid choices"),
        ("model.dtype=int3", r"model.dtype: unknown value 'int3'; valid choices"),
        ("model.quantization=4bit", "model.quantization=4bit loads a model=hf base only"),
        ("federation.client_gpus=-0.5", "federation.client_gpus must be a finite number >= 0"),
        (
            "incentive=fedavg_flat_fee incentive.flat_fee_f_ghz=6",
            r"^incentive.flat_fee_f_ghz must be a finite number in \[1, 5\], got 6.0 \(market",
        ),
        (f"seed={2**64}", r"^seed must be in \[0, 1.84467e\+19\), got 18446744073709551616$"),
        (
            f"training.learning_rate={10**400}",
            "^training.learning_rate must be a finite number, got an integer beyond 1e308$",
        ),
        (
            "model=minilm-perception model.train_lm_head=true",
            "^model.train_lm_head needs a generating base; model=minilm-perception classifies$",
        ),
        (
            "+federation.num_ess=20",
            r"^\+federation.num_ess=20: no setting federation.num_ess to add Valid keys at "
            r"federation: \['aggregation', ",
        ),
        ("++nope=1", r"^\+\+nope=1: no setting nope to add Valid keys at the top level: "),
        ("data.tasks=[decide,describe,decide]", r"^data.tasks must name each task once, got \["),
        ("privacy.enabled=-1", "^privacy.enabled must be true or false, got -1$"),
        ("federation.fold_offers=yes", "^federation.fold_offers must be true or false, got yes$"),
        ("screening.quality_clause=1", "^screening.quality_clause must be true or false, got 1$"),
        ("agent.merged=[true]", r"^agent.merged must be true or false, got \[true\]$"),
        ("model.name=gpt-17", r"model.name: unknown value 'gpt-17'; valid choices: \['hf', "),
        (
            "model.lora_targets=[[q_proj,v_proj]]",
            r"model.lora_targets must list layer names .*, got \['q_proj', 'v_proj'\] in",
        ),
        ("model.lora_targets=[q_proj,v_proj|o_proj]", r"got 'v_proj\|o_proj' in \['q_proj', "),
        ("model=[nan]", r"^model takes the name of one of \['hf', .*\], got \[nan\]$"),
        ("+market=[shuffle(1,2)]", r"^market takes the name of one of \['default', "),
        ("privacy.enabled=\"'a\nb'\"", "^privacy.enabled must be true or false, got 'a b'$"),
        ("+nope=\"'a\nb'\"", r"^\+nope='a b': no setting nope to add Valid keys"),
        (
            "incentive.policy=none privacy.enabled=true",
            r"^privacy.enabled=True needs a contract run: incentive.policy=none \(Flower's FedAvg\) "
            "has no checkpoints and no central DP$",
        ),
        (
            "incentive.policy=none federation.resume_from=outputs/default",
            "^federation.resume_from=outputs/default needs a contract run: incentive.policy=none",
        ),
    ],
)
def test_a_bad_value_is_refused_at_load_time_in_one_line(overrides, message, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=message) as err:
        load_config("default", overrides)
    assert "\n" not in str(err.value)


def test_good_values_at_the_limits_load():
    cfg = load_config(
        "default",
        "federation.es_per_round=10 federation.min_available_es=10 model.lora_dropout=0.5 "
        "model.num_kv_heads=4",
    )
    assert cfg.federation.es_per_round == cfg.federation.num_es == 10
    assert load_config("default", ["run_name=my run"]).run_name == "my run"
    assert load_config("default", [f"seed={2**64 - 1}"]).seed == 2**64 - 1
    flat = load_config("default", ["incentive=fedavg_flat_fee", "incentive.flat_fee_f_ghz=5"])
    assert flat.incentive.flat_fee_f_ghz == flat.market.f_max_ghz == 5.0
    assert load_config("default", ["++federation.num_es=4"]).federation.num_es == 4
    flags = load_config("default", ["privacy.enabled=true", "federation.fold_offers=False"])
    assert flags.privacy.enabled is True and flags.federation.fold_offers is False
    targets = load_config("default", ["model.lora_targets=[self_attn.q_proj,v_proj]"])
    assert targets.model.lora_targets == ["self_attn.q_proj", "v_proj"]


@pytest.mark.parametrize("targets", [[""], ["q_proj", None], ["q proj"], ["q_proj."]])
def test_lora_targets_are_layer_names_on_direct_construction_too(targets):
    with pytest.raises(ValueError, match=f"got {re.escape(repr(targets[-1]))} in"):
        ModelConfig(lora_targets=targets)


@pytest.mark.parametrize("targets", ["q_proj", 5, None])
def test_lora_targets_are_a_list_on_direct_construction(targets):
    """An agent manifest builds its ModelConfig directly: a string is no list of letters."""
    with pytest.raises(ValueError, match=r"^model.lora_targets must be a list of layer names, got"):
        ModelConfig(lora_targets=targets)


@pytest.mark.timeout(300)
def test_fed_agent_run_refuses_a_bad_config_before_any_folder_exists(tmp_path):
    out = tmp_path / "outputs"
    for overrides in (
        ["model=hf", "model.path=openai-community/gpt2"],  # not cached, and offline
        ["federation.round_timeout_s=nan"],
        ["run_name=../../escape"],
    ):
        result = run_fed_agent("run", "--experiment", "smoke", *overrides, f"output_dir={out}")
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, result.stderr
        assert len(lines) == 1 and lines[0].startswith("ERROR") and "bad config: " in lines[0]
        assert "Traceback" not in result.stderr + result.stdout
        assert not out.exists()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("num_types", ["50", "-3", "1"])
def test_contract_solve_refuses_k_outside_the_solvers_range(num_types):
    result = run_fed_agent("contract", "solve", "--num-types", num_types)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"bad option: --num-types must be an integer in [2, 10] (the solver's range), got "
        f"{num_types}"
    ]
    assert "Traceback" not in result.stderr


def test_only_the_main_job_takes_the_measured_server_step():
    """The 1.5 server step was measured on the default experiment only (docs/models.md)."""
    assert load_config("default").federation.server_learning_rate == 1.5
    assert load_config("smoke").federation.server_learning_rate == 1.0
    assert (
        load_config(
            "default", ["federation.server_learning_rate=1"]
        ).federation.server_learning_rate
        == 1.0
    )


@pytest.mark.parametrize("where", ["a-file", "/proc/no-such-dir"])
def test_run_refuses_an_output_dir_it_cannot_write_before_any_process(
    tmp_path, monkeypatch, caplog, where
):
    from fed_agent import cli
    from fed_agent.deploy import launcher

    monkeypatch.setattr(launcher, "start_simulation_superlink", lambda *a: pytest.fail("started"))
    (tmp_path / "a-file").write_text("")
    out = tmp_path / where  # an absolute ``where`` replaces tmp_path
    code = cli.main(["run", "--experiment", "smoke", f"output_dir={out}"])
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    blocker = f"{out} is not a folder" if where == "a-file" else "/proc is not writable"
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith(f"bad config: output_dir {out}/smoke: {blocker}")


@pytest.mark.parametrize("which", ["corrupt", "another_k"])
def test_run_refuses_a_designer_checkpoint_that_does_not_load_before_any_process(
    tmp_path, monkeypatch, caplog, which
):
    from fed_agent import cli
    from fed_agent.deploy import launcher

    monkeypatch.setattr(launcher, "start_simulation_superlink", lambda *a: pytest.fail("started"))
    corrupt = tmp_path / "designer.npz"
    corrupt.write_bytes(b"not a checkpoint")
    k3 = ROOT / "fed_agent" / "assets" / "edmsac_federation_k3.npz"
    overrides = (
        [f"incentive.designer_checkpoint={corrupt}"]
        if which == "corrupt"
        else ["market=paper", f"incentive.designer_checkpoint={k3}"]
    )
    code = cli.main(["run", "--experiment", "smoke", f"output_dir={tmp_path}", *overrides])
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    expected = (
        f"bad config: {corrupt} is not a designer checkpoint"
        if which == "corrupt"
        else f"bad config: designer checkpoint {k3} serves K = 3 types, the market has K = 5"
    )
    assert code == 2 and len(errors) == 1 and errors[0].startswith(expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["designer.npz"]


@pytest.mark.parametrize(
    ("overrides", "policy"),
    [
        (["market.kappa=1e30"], "edmsac"),
        (["market.omega=1e30", "incentive=optimal"], "optimal"),
        (["market.theta_min=1e-30", "incentive=static"], "static"),
    ],
)
def test_run_refuses_a_market_no_contract_can_be_designed_on_before_any_process(
    tmp_path, monkeypatch, caplog, overrides, policy
):
    """Scales inside the config's ranges that the solvers cannot handle: refused with the
    solver's reason, before any process and before any run folder exists."""
    from fed_agent import cli
    from fed_agent.deploy import launcher

    monkeypatch.setattr(launcher, "start_simulation_superlink", lambda *a: pytest.fail("started"))
    load_config("smoke", overrides)  # the config itself loads
    code = cli.main(["run", "--experiment", "smoke", f"output_dir={tmp_path}", *overrides])
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert code == 2 and len(errors) == 1 and "\n" not in errors[0]
    assert errors[0].startswith(
        f"bad config: market: the {policy} policy cannot design a contract on these settings ("
    )
    assert "LP failed" in errors[0]
    assert list(tmp_path.iterdir()) == []


def test_run_refuses_an_agent_to_extend_that_is_not_one_before_any_process(
    tmp_path, monkeypatch, caplog
):
    from fed_agent import cli
    from fed_agent.deploy import launcher

    monkeypatch.setattr(launcher, "start_simulation_superlink", lambda *a: pytest.fail("started"))
    missing = tmp_path / "nope"
    argv = ["run", "--experiment", "smoke", f"output_dir={tmp_path}"]
    code = cli.main([*argv, "agent.module_name=decision", f"agent.extend={missing}"])
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert code == 2 and len(errors) == 1 and "\n" not in errors[0]
    assert errors[0].startswith("bad config: ") and str(missing) in errors[0]
    assert "is not a directory" in errors[0]
    assert list(tmp_path.iterdir()) == []
