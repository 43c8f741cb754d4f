"""Fast checks of the deployment tooling: certificates, keys, node configs, command lines."""

from __future__ import annotations

import ssl
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

from fed_agent.deploy.certs import check_host, generate_node_keys, generate_tls
from fed_agent.deploy.flwr_cli import write_connection
from fed_agent.deploy.nodes import load_profile, node_config, node_config_arg, parse_pairs
from fed_agent.deploy.processes import SuperLinkSpec, SuperNodeSpec


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return generate_tls(tmp_path_factory.mktemp("tls"), ["127.0.0.1", "localhost", "es.example"])


def test_server_certificate_is_signed_by_the_ca_and_names_every_host(tls) -> None:
    ca = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(tls.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "es.example"]
    # what Python's TLS client (httpx in flwr) will load
    context = ssl.create_default_context(cafile=str(tls.ca_cert))
    context.load_cert_chain(str(tls.server_cert), str(tls.server_key))


def test_private_keys_are_readable_by_their_owner_only(tls, tmp_path: Path) -> None:
    keys = generate_node_keys(tmp_path, 2)
    for path in (tls.server_key, tls.server_key.with_name("ca.key"), keys[0].private_key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_node_keys_are_distinct_nist_ecdsa_openssh_pairs(tmp_path: Path) -> None:
    keys = generate_node_keys(tmp_path, 2)
    private = load_ssh_private_key(keys[0].private_key.read_bytes(), None)
    public = load_ssh_public_key(keys[0].public_key.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.curve.name == "secp384r1"
    assert private.public_key().public_numbers() == public.public_numbers()
    assert keys[0].public_key.read_bytes() != keys[1].public_key.read_bytes()


def test_node_config_carries_partition_and_passes_profile_keys_through(tmp_path: Path) -> None:
    profile_file = tmp_path / "profile.yaml"
    profile_file.write_text("willingness-type: 2\nregion: north-east\nhas-gpu: false\n")
    profile = {**load_profile(profile_file), **parse_pairs(["unit-cost=0.25"])}
    rendered = node_config_arg(node_config(1, 3, profile))
    assert rendered == (
        'willingness-type=2 region="north-east" has-gpu=false unit-cost=0.25 '
        "partition-id=1 num-partitions=3"
    )
    # what flwr parses it into
    from flwr.common.config import parse_config_args

    assert parse_config_args([rendered]) == {
        "willingness-type": 2,
        "region": "north-east",
        "has-gpu": False,
        "unit-cost": 0.25,
        "partition-id": 1,
        "num-partitions": 3,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("willingness-type: [1\n", "is not a YAML mapping: while parsing a flow sequence"),
        ("- 1\n- 2\n", "must be a mapping of node-config keys, got [1, 2]"),
        ("unit-cost: .nan\n", "'unit-cost' must be a finite number, got nan"),
        ("unit-cost: -.inf\n", "'unit-cost' must be a finite number, got -inf"),
    ],
)
def test_a_bad_profile_is_refused_in_one_line_naming_the_file(tmp_path: Path, text, message):
    profile_file = tmp_path / "profile.yaml"
    profile_file.write_text(text)
    with pytest.raises(ValueError) as err:
        load_profile(profile_file)
    assert str(err.value).startswith(f"profile {profile_file}")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_node_config_pairs_keep_non_yaml_text_and_refuse_non_finite_numbers() -> None:
    assert parse_pairs(["region=[north", "tag=a: b", "n=2"]) == {
        "region": "[north",
        "tag": "a: b",
        "n": 2,
    }
    with pytest.raises(ValueError, match="^--node-config: 'unit-cost' must be a finite number"):
        parse_pairs(["unit-cost=.inf"])


def test_the_supernodes_auth_key_is_the_es_identity_key_unless_the_profile_names_one(
    tmp_path: Path,
) -> None:
    key = tmp_path / "keys" / "supernode-1"
    assert node_config(1, 3, {}, key)["identity-key"] == str(key.resolve())
    own = {"identity-key": "/etc/fedagent/es-1.key"}
    assert node_config(1, 3, own, key)["identity-key"] == "/etc/fedagent/es-1.key"
    assert "identity-key" not in node_config(1, 3, {})


@pytest.mark.parametrize(
    ("pid", "num", "profile", "match"),
    [
        (3, 3, {}, "outside"),
        (0, 3, {"partition-id": 1}, "profile sets partition-id"),
        (0, 3, {"note": 'say "hi"'}, "quotes"),
        (0, 3, {"bad key": 1}, "spaces"),
    ],
)
def test_bad_node_configs_are_refused(pid: int, num: int, profile: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        node_config_arg(node_config(pid, num, profile))


def test_connection_config_trusts_the_ca(tls, tmp_path: Path) -> None:
    path = write_connection(tmp_path, "fedagent", "127.0.0.1:9092", tls.ca_cert)
    config = tomllib.loads(path.read_text())
    assert config["superlink"]["default"] == "fedagent"
    assert config["superlink"]["fedagent"] == {
        "address": "127.0.0.1:9092",
        "root-certificates": str(tls.ca_cert),
    }
    with pytest.raises(ValueError, match="CA certificate"):
        write_connection(tmp_path, "fedagent", "127.0.0.1:9092", None)


def test_command_lines_use_tls_auth_and_no_runtime_installs(tls, tmp_path: Path) -> None:
    link = SuperLinkSpec("0.0.0.0", 9092, tls, auth=True).command(tmp_path / "log")
    assert "--insecure" not in link
    assert "--enable-supernode-auth" in link
    assert "--disable-runtime-dependency-installation" in link
    assert link[link.index("--ssl-certfile") + 1] == str(tls.server_cert)
    node = SuperNodeSpec(
        "127.0.0.1:9092",
        tls.ca_cert,
        tmp_path / "key",
        {"partition-id": 0, "num-partitions": 1},
        9094,
        30,
    ).command()
    assert "--insecure" not in node
    assert node[node.index("--root-certificates") + 1] == str(tls.ca_cert)
    assert node[node.index("--auth-supernode-private-key") + 1] == str(tmp_path / "key")
    assert "--allow-runtime-dependency-installation" not in node
    assert node[node.index("--max-wait-time") + 1] == "30"


def test_deploy_tooling_never_imports_flwr() -> None:
    code = (
        "import sys, fed_agent.deploy.local, fed_agent.commands.deploy, benchmarks.attacks, "
        "fed_agent.screening.robust\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'flwr')\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_cli_lists_the_deploy_commands() -> None:
    from fed_agent.cli import build_parser

    args = build_parser().parse_args(
        [
            "deploy",
            "supernode",
            "--superlink",
            "h:1",
            "--ca",
            "c",
            "--key",
            "k",
            "--partition-id",
            "0",
            "--num-partitions",
            "2",
            "--node-config",
            "willingness-type=1",
        ]
    )
    assert args.deploy_command == "supernode" and args.node_config == ["willingness-type=1"]


def test_superexecs_poll_for_tasks_quickly_unless_the_operator_says_otherwise(
    tmp_path: Path, monkeypatch
) -> None:
    from fed_agent.deploy.launcher import SUPEREXEC_POLL_S, flower_env

    monkeypatch.delenv("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", raising=False)
    env = flower_env(tmp_path, 9092)
    assert float(env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"]) == SUPEREXEC_POLL_S < 1.0
    monkeypatch.setenv("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", "2")
    assert flower_env(tmp_path, 9092)["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] == "2"


def test_a_status_read_that_times_out_is_retried_until_the_deadline(monkeypatch) -> None:
    from fed_agent.deploy import flwr_cli
    from fed_agent.deploy.launcher import FederationRunError

    answers = iter(
        [FederationRunError("flwr list gave no answer within 60 s"), (7, "running", "")]
        + [(7, "finished:completed", "")]
    )

    def status(env, connection, run_id):
        assert run_id == 7
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(flwr_cli, "run_status", status)
    assert flwr_cli.wait_finished(7, "c", {}, timeout_s=10, poll_s=0.01) == (
        "finished:completed",
        "",
    )
    monkeypatch.setattr(
        flwr_cli, "run_status", lambda env, c, r: (_ for _ in ()).throw(FederationRunError("slow"))
    )
    with pytest.raises(flwr_cli.DeploymentError, match="run 7: slow"):
        flwr_cli.wait_finished(7, "c", {}, timeout_s=0.05, poll_s=0.01)


def test_the_run_status_is_the_asked_runs_and_newest_means_last_submitted(monkeypatch) -> None:
    """Run ids are random 64-bit numbers: the largest is not the newest (this made the deploy
    resume test fail about half the time: the resumed run was 'not the newest run')."""
    import json
    import subprocess

    from fed_agent.deploy import launcher

    runs = [
        {"run-id": "9000", "status": "finished:completed", "pending-at": "2026-11-30 03:10:00"},
        {"run-id": "12", "status": "running", "pending-at": "2026-11-30 03:14:00"},
    ]
    listed = subprocess.CompletedProcess([], 0, stdout=json.dumps({"runs": runs}), stderr="")
    monkeypatch.setattr(launcher.subprocess, "run", lambda *a, **k: listed)
    assert launcher.run_status({}, "c", 9000) == (9000, "finished:completed", "")
    assert launcher.run_status({}, "c") == (12, "running", "")
    with pytest.raises(launcher.FederationRunError, match="run 5 is not listed"):
        launcher.run_status({}, "c", 5)


@pytest.mark.parametrize("host", ["bad host!", "", "-lead.example", "a..b", "x" * 64])
def test_a_host_no_certificate_can_name_is_refused_before_any_key(tmp_path: Path, host) -> None:
    with pytest.raises(ValueError) as err:
        generate_tls(tmp_path / "certs", ["127.0.0.1", host])
    assert str(err.value) == (
        f"--host {host!r} is neither an IP address nor a DNS name (letters, digits, '-' and '.')"
    )
    assert not (tmp_path / "certs").exists()


def test_ip_addresses_and_dns_names_are_valid_hosts() -> None:
    for host in ("::1", "10.0.0.7", "localhost", "superlink-1.edge.example", "*.example.org"):
        check_host(host)
