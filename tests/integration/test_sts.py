"""IRCv3 STS against scripted servers, one plaintext and one TLS (certificates from
tests/support/certs.py): the plaintext link told `sts=port=N` is left before registering and the
bot comes back over TLS at once; the TLS link's duration is stored in the state directory, and
a restarted bot then never tries plaintext; `duration=0` removes the policy."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog.testing

from relaybot.config.schema import Config
from tests.support.botrunner import BotRunner
from tests.support.certs import make_ca, make_cert
from tests.support.fakes import FixedEngine
from tests.support.scripted import ScriptedServer

pytestmark = pytest.mark.integration


def tls_server(tmp_path: Path) -> tuple[ScriptedServer, Path]:
    """A TLS scripted server with a certificate for 127.0.0.1, and the CA that signed it."""
    ca = make_ca(tmp_path / "pki")
    leaf = make_cert(tmp_path / "pki", "server", ca=ca)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(leaf.cert, leaf.key)
    return ScriptedServer(tls=context), ca.cert


def config_for(config_factory: Callable[[str], Config], port: int, ca: Path, state: Path) -> Config:
    # Plaintext as configured; the CA is what the TLS that STS asks for verifies against.
    return config_factory(f"""
[irc]
host = "127.0.0.1"
port = {port}
nick = "relaybot"
channels = ["#relay"]
ca_file = "{ca}"
[state]
dir = "{state}"
""")


def register_over_tls(server: ScriptedServer, sts: bytes) -> None:
    server.accept()
    server.wait_for(b"CAP LS 302", 10)
    server.send(b":irc.test CAP * LS :multi-prefix " + sts + b"\r\n")
    server.wait_for(b"CAP REQ :multi-prefix", 10)
    server.send(b":irc.test CAP relaybot ACK :multi-prefix\r\n")
    server.wait_for(b"CAP END", 10)
    server.send(b":irc.test 001 relaybot :Welcome\r\n")
    server.wait_for(b"JOIN #relay", 10)


def stored(state: Path) -> dict[str, object]:
    files = list(state.rglob("sts.json"))
    assert len(files) == 1, files
    policies = json.loads(files[0].read_text())["policies"]
    assert isinstance(policies, dict)
    return policies


def test_upgrade_then_policy_then_no_plaintext_then_removal(
    config_factory: Callable[[str], Config], tmp_path: Path
) -> None:
    plain = ScriptedServer()
    secure, ca = tls_server(tmp_path)
    state = tmp_path / "state"
    config = config_for(config_factory, plain.port, ca, state)
    sts = f"sts=port={secure.port},duration=3600".encode()

    with structlog.testing.capture_logs() as logs, BotRunner(config, FixedEngine()):  # type: ignore[arg-type]
        plain.accept()
        plain.wait_for(b"CAP LS 302", 10)
        plain.send(b":irc.test CAP * LS :multi-prefix " + sts + b"\r\n")
        plain.wait_closed(10)
        # Left before registering: nothing requested, CAP never ended.
        assert not any(
            line.startswith((b"CAP REQ", b"CAP END", b"JOIN")) for line in plain.received
        )
        # At once, over TLS, to the port the policy named; its duration is stored.
        register_over_tls(secure, sts)
    events = [entry["event"] for entry in logs]
    assert "sts_upgrade" in events and "sts_policy_stored" in events
    assert "tls_established" in events
    assert "reconnect_scheduled" not in events  # no backoff for an upgrade
    policy = stored(state)["127.0.0.1"]
    assert isinstance(policy, dict) and policy["port"] == secure.port
    assert policy["duration"] == 3600

    # A restarted bot with the same state: straight to TLS, the plaintext port never tried.
    secure.received.clear()
    with structlog.testing.capture_logs() as logs, BotRunner(config, FixedEngine()):  # type: ignore[arg-type]
        register_over_tls(secure, f"sts=port={secure.port},duration=0".encode())
    assert "sts_policy_applied" in [entry["event"] for entry in logs]
    plain.listener.settimeout(0.5)
    with pytest.raises(TimeoutError):
        plain.listener.accept()
    # duration=0 on the TLS link removed the policy.
    assert stored(state) == {}
    plain.close()
    secure.close()
