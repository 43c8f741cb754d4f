"""The command line's one rule for errors: the user's (a bad path, file or setting) is one line
on stderr and exit code 2; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import argparse
import errno
from pathlib import Path

import pytest

from fed_agent import cli
from fed_agent.config import ConfigError
from fed_agent.errors import UserError, is_user_error, one_line_message
from tests.conftest import run_fed_agent

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("a-file/table.csv", "--out {tmp}/a-file/table.csv: {tmp}/a-file is not a folder"),
        (".", "--out {tmp} is a folder; name the file to write"),
    ],
)
def test_contract_solve_refuses_an_unwritable_out_before_solving(tmp_path, out, message):
    (tmp_path / "a-file").write_text("")
    target = tmp_path / out if out != "." else tmp_path
    result = run_fed_agent("contract", "solve", "--solution", "static", "--out", str(target))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "fed-agent contract: " + message.format(tmp=tmp_path)
    ]
    assert "== static" not in result.stdout  # refused before anything was solved


@pytest.mark.parametrize(
    "error",
    [
        UserError("bad"),
        ConfigError("bad"),
        FileNotFoundError(errno.ENOENT, "No such file", "x"),
        PermissionError(errno.EACCES, "Permission denied", "x"),
        OSError(errno.EROFS, "Read-only file system", "x"),
    ],
)
def test_user_errors_are_one_line_and_exit_code_2(monkeypatch, capsys, error):
    def handler(args: argparse.Namespace) -> int:
        raise error

    monkeypatch.setattr(cli, "build_parser", lambda: _parser(handler))
    assert cli.main(["go"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fed-agent go: ")


@pytest.mark.parametrize(
    "error", [KeyError("k"), TypeError("t"), ValueError("v"), OSError(errno.EIO, "I/O")]
)
def test_other_exceptions_are_bugs_and_keep_their_traceback(monkeypatch, error):
    def handler(args: argparse.Namespace) -> int:
        raise error

    monkeypatch.setattr(cli, "build_parser", lambda: _parser(handler))
    with pytest.raises(type(error)):
        cli.main(["go"])
    assert not is_user_error(error)


def test_a_multi_line_message_is_joined_into_one():
    assert one_line_message(UserError("first\n\n  second  \n")) == "first second"
    assert one_line_message(UserError("")) == "UserError"


def _parser(handler) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fed-agent")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("go").set_defaults(handler=handler)
    return parser


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"not a checkpoint"])
def test_designer_eval_on_a_corrupt_checkpoint_is_one_line(tmp_path, capsys, content):
    checkpoint = tmp_path / "designer.npz"
    checkpoint.write_bytes(content)
    code = cli.main(["designer", "eval", "--checkpoint", str(checkpoint), "--heldout", "2"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith(f"fed-agent designer: {checkpoint} is not a designer checkpoint")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["privacy.noise_multiplier=nan"], "privacy.noise_multiplier must be a finite number > 0"),
        (["--profile", "{tmp}/bad.yaml"], "profile {tmp}/bad.yaml is not a YAML mapping: "),
        (["market.kappa=1e30"], "market: the edmsac policy cannot design a contract on these"),
    ],
)
def test_deploy_local_refuses_a_bad_setting_or_profile_before_writing_anything(
    tmp_path, caplog, extra, message
):
    (tmp_path / "bad.yaml").write_text("willingness-type: [1\n")
    workdir = tmp_path / "local"
    argv = ["deploy", "local", "--num-nodes", "1", "--workdir", str(workdir)]
    code = cli.main([*argv, *(a.format(tmp=tmp_path) for a in extra)])
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith(message.format(tmp=tmp_path)) and "\n" not in errors[0]
    assert not workdir.exists()  # no certificate, key or log written, no process started


def test_deploy_run_refuses_a_bad_setting_before_it_writes_the_connection(tmp_path, caplog):
    home = tmp_path / "flwr-home"
    code = cli.main(
        ["deploy", "run", "--superlink", "127.0.0.1:1", "--ca", str(tmp_path / "ca.crt"),
         "--flwr-home", str(home), "privacy.noise_multiplier=nan"]
    )  # fmt: skip
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert code == 2
    assert errors == ["bad config: privacy.noise_multiplier must be a finite number > 0, got nan"]
    assert not home.exists()


@pytest.mark.parametrize(
    ("argv", "prog", "message"),
    [
        (["contract", "solve", "--seed", "-1"], "contract solve", "argument --seed: must be >= 0"),
        (["run", "--timeout-s", "nan"], "run", "argument --timeout-s: must be a finite number > 0"),
        (
            ["designer", "eval", "--threads", "0"],
            "designer eval",
            "argument --threads: must be >= 1",
        ),
        (
            ["designer", "eval", "--heldout", "-1"],
            "designer eval",
            "argument --heldout: must be >=",
        ),
        (["evaluate", "--concurrency", "4", "0"], "evaluate", "argument --concurrency: must be >="),
        (["deploy", "certs", "--out", "c", "--num-keys", "-1"], "deploy certs", "argument --num-k"),
        (["data", "split", "x", "--num-es", "abc", "--out", "y"], "data split", "argument --num-e"),
        (["nope"], "", "argument COMMAND: invalid choice: 'nope' (choose from 'contract', "),
    ],
)
def test_a_bad_option_is_one_line_and_exit_code_2(capsys, argv, prog, message):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    prog = f"fed-agent {prog}".strip()
    assert exit_.value.code == 2 and len(lines) == 1
    assert lines[0].startswith(f"{prog}: error: {message}")
    assert lines[0].endswith(f" (see {prog} --help)")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--violation-penalty", "nan"], "bad option: violation_penalty must be a finite number"),
        (["--num-types", "11"], "bad option: num_types must be in [2, 10], got 11"),
        (["--prune-rate", "1.5"], "bad option: prune_rate must be in [0, 1), got 1.5"),
        (["--out", "{tmp}"], "--out {tmp} is a folder; name the file to write"),
        (["--log", "{tmp}/a-file/log.jsonl"], "--log {tmp}/a-file/log.jsonl: {tmp}/a-file is not"),
    ],
)
def test_designer_train_refuses_bad_options_before_training(tmp_path, capsys, options, message):
    (tmp_path / "a-file").write_text("")
    argv = ["designer", "train", "--out", str(tmp_path / "d.npz"), "--env-steps", "64"]
    code = cli.main([*argv, *(o.format(tmp=tmp_path) for o in options)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("fed-agent designer: " + message.format(tmp=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # nothing trained or logged


def test_an_out_path_no_file_can_be_written_under_is_refused_even_for_root():
    """``os.access`` says yes to root under /proc; creating a file there fails."""
    from fed_agent.outputs import check_output_path

    with pytest.raises(UserError) as err:
        check_output_path(Path("/proc/no-such-dir/table.csv"), "--out", is_file=True)
    assert str(err.value) == (
        "--out /proc/no-such-dir/table.csv: /proc is not writable (No such file or directory)"
    )


def test_a_run_past_its_timeout_is_one_logged_line_exit_1_and_stops_the_superlink(
    tmp_path, monkeypatch, caplog
):
    """``--timeout-s`` is an outcome of the run (exit 1, like a failed run), not a traceback;
    a sweep records such a job as failed and goes on (``FederationRunError``)."""
    import logging
    import subprocess

    from fed_agent.deploy import launcher

    stopped = []
    monkeypatch.setattr(launcher, "start_simulation_superlink", lambda *a: "superlink")
    monkeypatch.setattr(launcher, "stop_process_tree", stopped.append)

    def too_long(command, **kwargs):
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    monkeypatch.setattr(launcher.subprocess, "run", too_long)
    argv = ["run", "--experiment", "smoke", "--timeout-s", "5", f"output_dir={tmp_path}"]
    with caplog.at_level(logging.ERROR):
        assert cli.main(argv) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        f"the run did not finish within 5 s (--timeout-s); stopped, its outputs so far are in "
        f"{tmp_path / 'smoke'}"
    ]
    assert stopped == ["superlink"]
