"""``fed-agent evaluate`` on a bad agent folder: one line on stderr, exit code 2, no traceback,
and nothing built or written where the manifest points."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fed_agent.cli import main
from fed_agent.config import to_yaml
from fed_agent.packaging.export import ADAPTER_FILE, MANIFEST, export_agent

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def good_agent(tmp_path_factory, smoke_cfg):
    from fed_agent.modules.adapter import agent_module

    module = agent_module(smoke_cfg.model, smoke_cfg.seed)
    module.reset()
    folder = tmp_path_factory.mktemp("agents") / "good"
    return export_agent(folder, module, module.initial_state, {"config_yaml": to_yaml(smoke_cfg)})


def _edit_manifest(agent: Path, change) -> None:
    manifest = json.loads((agent / MANIFEST).read_text())
    change(manifest)
    (agent / MANIFEST).write_text(json.dumps(manifest))


def _edit_adapter(agent: Path, change) -> None:
    tensors = load_file(agent / ADAPTER_FILE)
    first = sorted(tensors)[0]
    tensors[first] = change(tensors[first])
    save_file(tensors, agent / ADAPTER_FILE, metadata={"base_fingerprint": "x"})


def _base_config(**values):
    def change(manifest):
        manifest["base"]["model_config"].update(values)

    return change


def _as_chain(chain, inputs):
    """The single module as a format-2 chain ``chain`` of it (named ``agent``) with ``inputs``."""

    def change(manifest):
        spec = {"base": manifest.pop("base"), "adapter": manifest.pop("adapter"), "inputs": inputs}
        manifest.update(format_version=2, chain=chain, modules={"agent": spec})

    return change


CASES = {
    "missing folder": (None, "is not an agent directory: manifest.json is missing"),
    "empty folder": ("empty", "is not an agent directory: manifest.json is missing"),
    "no manifest": (lambda a: (a / MANIFEST).unlink(), "manifest.json is missing"),
    "bad json": (lambda a: (a / MANIFEST).write_text("{not json"), "is not a valid agent manifest"),
    "binary manifest": (
        lambda a: (a / MANIFEST).write_bytes(b"\xff\xfe{}"),
        "manifest.json is not a valid agent manifest: 'utf-8' codec can't decode",
    ),
    "fingerprint not a string": (
        lambda a: _edit_manifest(a, lambda m: m["base"].update(fingerprint=5)),
        "manifest.json: base.fingerprint must be a string, got 5",
    ),
    "nul in the adapter path": (
        lambda a: _edit_manifest(a, lambda m: m["adapter"].update(file="a\0b")),
        "manifest.json: adapter.file must be a non-empty relative path",
    ),
    "lora_targets a string": (
        lambda a: _edit_manifest(a, _base_config(lora_targets="q_proj")),
        "model.lora_targets must be a list of layer names, got 'q_proj'",
    ),
    "empty chain": (
        lambda a: _edit_manifest(a, _as_chain([], [])),
        "manifest.json: an agent needs at least one module",
    ),
    "inputs not a list": (
        lambda a: _edit_manifest(a, _as_chain(["agent"], 5)),
        "manifest.json: module 'agent': inputs must be a list, got 5",
    ),
    "inputs of no earlier module": (
        lambda a: _edit_manifest(a, _as_chain(["agent"], ["agent"])),
        "manifest.json: module 'agent' takes inputs ['agent'] that do not run before it",
    ),
    "wrong schema": (
        lambda a: (a / MANIFEST).write_text(json.dumps({"format_version": 1, "base": 3})),
        "is not a valid agent manifest: missing",
    ),
    "missing adapter": (
        lambda a: (a / ADAPTER_FILE).unlink(),
        "adapter.safetensors does not exist",
    ),
    "corrupt safetensors": (
        lambda a: (a / ADAPTER_FILE).write_bytes(b"garbage" * 10),
        "is corrupt or not safetensors",
    ),
    "nan adapter": (
        lambda a: _edit_adapter(a, lambda t: torch.full_like(t, float("nan"))),
        "holds NaN or Inf",
    ),
    "wrong shapes": (
        lambda a: _edit_adapter(a, lambda t: torch.zeros(3, 3)),
        "has shape (3, 3), expected",
    ),
    "bad run config": (
        lambda a: (a / "config.yaml").write_text("federation:\n  num_es: many\n"),
        "config.yaml is not a valid run config",
    ),
    "cache_dir in the manifest": (
        lambda a: _edit_manifest(a, _base_config(cache_dir=str(a.parent / "chosen-cache"))),
        "base.model_config.cache_dir",
    ),
    "hf path outside the agent": (
        lambda a: _edit_manifest(a, _base_config(name="hf", path=str(a.parent / "elsewhere"))),
        "base.model_config.path",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_agent_folder_is_one_line_and_exit_code_2(case, good_agent, tmp_path, capsys):
    make, expected = CASES[case]
    agent = tmp_path / "agent"
    if make == "empty":
        agent.mkdir()
    elif make is not None:
        shutil.copytree(good_agent, agent)
        make(agent)
    out = tmp_path / "eval"
    code = main(["evaluate", str(agent), "--out", str(out), "--requests", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("fed-agent evaluate: "), err
    assert expected in err[0]
    assert not out.exists() and not (tmp_path / "chosen-cache").exists()


def test_an_unwritable_out_is_refused_before_loading(good_agent, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    code = main(["evaluate", str(good_agent), "--out", str(tmp_path / "a-file" / "eval")])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        f"fed-agent evaluate: --out {tmp_path / 'a-file' / 'eval'}: {tmp_path / 'a-file'} is not "
        "a folder"
    )


@pytest.mark.timeout(120)
def test_the_process_prints_no_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "fed_agent.cli", "evaluate", str(tmp_path / "nope")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"fed-agent evaluate: {tmp_path / 'nope'} is not an agent directory: manifest.json is "
        "missing"
    ]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--rtt-ms", "nan", "evaluation.rtt_ms must be a finite number >= 0, got nan"),
        ("--uplink-mbps", "inf", "evaluation.uplink_mbps must be a finite number > 0, got inf"),
        ("--requests", "0", "evaluation.requests must be >= 1, got 0"),
    ],
)
def test_an_option_out_of_range_is_one_line(good_agent, tmp_path, capsys, option, value, message):
    code = main(["evaluate", str(good_agent), "--out", str(tmp_path / "eval"), option, value])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"fed-agent evaluate: {message}"
