"""Deploy commands check their inputs first and report an operator's mistake in one line."""

from __future__ import annotations

import http.server
import logging
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fed_agent.cli import main
from fed_agent.deploy import processes
from fed_agent.deploy.certs import TlsFiles, generate_node_keys, generate_tls
from fed_agent.deploy.flwr_cli import DeploymentError
from fed_agent.deploy.launcher import free_port
from fed_agent.deploy.preflight import (
    PreflightError,
    UntrustedSuperLink,
    check_certificate,
    check_identity_key,
    check_node_private_key,
    check_node_public_key,
    check_port_free,
    check_superlink,
    check_tls_key,
    parse_address,
    prepare_database,
)
from fed_agent.deploy.processes import SuperLinkSpec, error_line, start_superlink


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> TlsFiles:
    return generate_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def other_tls(tmp_path_factory) -> TlsFiles:
    return generate_tls(tmp_path_factory.mktemp("other-tls"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return generate_node_keys(tmp_path_factory.mktemp("keys"), 1)


@pytest.fixture
def https_health(tls):
    """A TLS server on 127.0.0.1 answering /health with the federation's certificate."""

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(tls.server_cert), str(tls.server_key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_certificates_and_keys_must_exist_and_parse(tmp_path, tls, other_tls, keys) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(PreflightError, match=r"--ca .*missing\.crt: no such file"):
        check_certificate(tmp_path / "missing.crt", "--ca")
    with pytest.raises(PreflightError, match="not a PEM certificate"):
        check_certificate(garbage, "--ca")
    server = check_certificate(tls.server_cert, "server certificate")
    check_tls_key(tls.server_key, server, "key")
    with pytest.raises(PreflightError, match="does not belong to the server certificate"):
        check_tls_key(other_tls.server_key, server, "key")
    check_node_private_key(keys[0].private_key)
    check_identity_key(keys[0].private_key, "identity-key")
    with pytest.raises(PreflightError, match=r"^identity-key .*absent: no such file$"):
        check_identity_key(keys[0].private_key.parent / "absent", "identity-key")
    rsa_key = tmp_path / "id_rsa"  # an SSH key the SuperNode would take, but no identity key
    rsa_key.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    check_node_private_key(rsa_key)
    with pytest.raises(PreflightError, match=r"id_rsa: a .*RSAPrivateKey, neither ECDSA nor"):
        check_identity_key(rsa_key, "identity-key")
    check_node_public_key(keys[0].public_key)
    with pytest.raises(PreflightError, match="private key .that is the public half"):
        check_node_private_key(keys[0].public_key)
    with pytest.raises(PreflightError, match="not an OpenSSH public key"):
        check_node_public_key(garbage)


def test_a_port_in_use_and_a_bad_address_are_refused() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PreflightError, match=rf"--port {port} on 127.0.0.1: .*in use"):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)  # free again once closed
    assert parse_address("superlink.example.org:9092") == ("superlink.example.org", 9092)
    for bad in ("superlink.example.org", "host:port", "host:70000", ":9092"):
        with pytest.raises(PreflightError, match="expected host:port"):
            parse_address(bad)


def test_the_database_folder_is_created_and_a_folder_is_no_database(tmp_path) -> None:
    # the docs' `--database /var/lib/fedagent/state.db` on a machine without that folder
    database = tmp_path / "var" / "lib" / "fedagent" / "state.db"
    assert prepare_database(database) == database
    assert database.parent.is_dir() and not database.exists()
    with pytest.raises(PreflightError, match="is a folder"):
        prepare_database(database.parent)
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(PreflightError, match="cannot create its folder"):
        prepare_database(blocked / "sub" / "state.db")


def test_the_superlink_probe_tells_no_superlink_from_an_untrusted_one(
    https_health, tls, other_tls
) -> None:
    check_superlink(https_health, tls.ca_cert)
    with pytest.raises(UntrustedSuperLink, match="does not verify against --ca"):
        check_superlink(https_health, other_tls.ca_cert)
    with pytest.raises(PreflightError, match="connection refused") as refused:
        check_superlink(f"127.0.0.1:{free_port()}", tls.ca_cert)
    assert not isinstance(refused.value, UntrustedSuperLink)


def test_error_line_picks_the_cause_of_a_failure() -> None:
    traceback = (
        "\x1b[92mINFO \x1b[0m: Starting Flower SuperLink\nTraceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\nssl.SSLError: [SSL] PEM lib (_ssl.c:3905)\n'
        "ERROR [uvicorn.error] Application startup failed. Exiting.\nSystemExit: 1\n"
    )
    assert error_line(traceback) == "ssl.SSLError: [SSL] PEM lib (_ssl.c:3905)"
    bind = "INFO: Started\n\x1b[31mERROR\x1b[0m: [Errno 98] address already in use\nINFO: bye\n"
    assert error_line(bind) == "ERROR: [Errno 98] address already in use"
    assert error_line("one\ntwo\n\n") == "two"
    assert error_line("") == "(the log is empty)"


def _fake_flower(tmp_path: Path, monkeypatch, code: int) -> None:
    """Every Flower binary becomes a script that fails the way flower-superlink does."""
    script = tmp_path / "fake-flower"
    script.write_text(
        "#!/bin/sh\necho 'INFO : Starting'\necho 'Traceback (most recent call last):'\n"
        f"echo 'ssl.SSLError: [SSL] PEM lib (_ssl.c:3905)'\nexit {code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(processes, "flower_bin", lambda name: str(script))


def test_a_superlink_that_dies_is_reported_with_its_last_error_line(
    tmp_path, monkeypatch, tls
) -> None:
    _fake_flower(tmp_path, monkeypatch, 1)
    spec = SuperLinkSpec("127.0.0.1", free_port(), tls)
    with pytest.raises(DeploymentError, match=r"exited with code 1: ssl\.SSLError: \[SSL\] PEM"):
        start_superlink(spec, {}, tmp_path / "logs", timeout_s=30)


def test_a_supernode_that_dies_is_reported_with_its_last_error_line(
    tmp_path, monkeypatch, tls, keys, caplog
) -> None:
    _fake_flower(tmp_path, monkeypatch, 3)
    monkeypatch.chdir(tmp_path)
    args = ["deploy", "supernode", "--superlink", f"127.0.0.1:{free_port()}"]
    args += ["--ca", str(tls.ca_cert), "--key", str(keys[0].private_key)]
    args += ["--partition-id", "0", "--num-partitions", "2", "--port", str(free_port())]
    with caplog.at_level(logging.INFO):
        assert main(args) == 3
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        "flower-supernode exited with code 3: ssl.SSLError: [SSL] PEM lib (_ssl.c:3905) "
        f"(log {tmp_path / '.flwr/deploy/logs/supernode-0.log'})"
    ]
    # the SuperLink was not up: a warning, not a refusal (a SuperNode retries until it is)
    assert any("connection refused" in r.getMessage() for r in caplog.records)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fed_agent.cli", "deploy", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_register_without_a_superlink_says_so_in_one_line(tls, keys) -> None:
    port = free_port()
    done = _cli("register", "--superlink", f"127.0.0.1:{port}", "--ca", str(tls.ca_cert),
                str(keys[0].public_key))  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert f"SuperLink 127.0.0.1:{port}: connection refused" in lines[0]


def test_superlink_refuses_bad_inputs_before_starting(tmp_path, tls, other_tls) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("ca.crt", "server.pem"):
        (certs / name).write_bytes((tls.ca_cert.parent / name).read_bytes())
    (certs / "server.key").write_bytes(other_tls.server_key.read_bytes())
    port = free_port()
    done = _cli("superlink", "--certs", str(certs), "--port", str(port), "--host", "127.0.0.1")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "does not belong to the server certificate" in done.stderr.strip().splitlines()[-1]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        done = _cli("superlink", "--certs", str(tls.ca_cert.parent), "--host", "127.0.0.1",
                    "--port", str(taken))  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"--port {taken} on 127.0.0.1: cannot listen there (in use)" in done.stderr


def test_a_real_superlink_with_a_garbled_certificate_is_reported_by_its_cause(
    tmp_path, tls
) -> None:
    from fed_agent.deploy.launcher import flower_env

    garbled = tmp_path / "server.pem"
    garbled.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    port = free_port()
    spec = SuperLinkSpec("127.0.0.1", port, TlsFiles(tls.ca_cert, garbled, tls.server_key))
    env = flower_env(tmp_path / "flwr-home", port)
    with pytest.raises(DeploymentError, match=r"exited with code \d+: .*SSLError"):
        start_superlink(spec, env, tmp_path / "logs", timeout_s=60)
