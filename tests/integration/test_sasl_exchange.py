"""SASL against a scripted server, one outcome at a time: every 90x numeric, a server that
offers no SASL, one that offers other mechanisms, EXTERNAL, SCRAM-SHA-256 against a real
SCRAM server side (scramp's), and ECDSA-NIST256P-CHALLENGE checked as Atheme checks it.
Whatever happens, the bot ends CAP negotiation, registers and
joins; the log says what happened."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog.testing
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from scramp import ScramMechanism

from relaybot.config.schema import Config, SaslConfig
from tests.support.botrunner import BotRunner, with_irc
from tests.support.fakes import FixedEngine
from tests.support.scripted import ScriptedServer

pytestmark = pytest.mark.integration


PLAIN_KEYS = 'username = "relaybot"\npassword_env = "RELAYBOT_TEST_SASL"'


def sasl_config(
    config_factory: Callable[[str], Config], port: int, tmp: str, sasl: str = PLAIN_KEYS
) -> Config:
    return config_factory(f"""
[irc]
host = "127.0.0.1"
port = {port}
nick = "relaybot"
channels = ["#relay"]
[irc.sasl]
{sasl}
[state]
dir = "{tmp}"
""")


# outcome name -> (CAP LS value, server lines after the bot's AUTHENTICATE, expected log event)
def _numeric(code: str, text: str) -> bytes:
    return f":irc.test {code} relaybot {text}".encode()


OUTCOMES = {
    "903 success": (
        b"sasl",
        [
            _numeric("900", "relaybot!r@h relaybot :You are now logged in"),
            _numeric("903", ":SASL authentication successful"),
        ],
        "sasl_success",
    ),
    "904 failed": (b"sasl", [_numeric("904", ":SASL authentication failed")], "sasl_failed"),
    "905 too long": (b"sasl", [_numeric("905", ":SASL message too long")], "sasl_failed"),
    "906 aborted": (b"sasl", [_numeric("906", ":SASL authentication aborted")], "sasl_failed"),
    "907 already": (
        b"sasl",
        [_numeric("907", ":You have already authenticated")],
        "sasl_already_authenticated",
    ),
    "902 nick locked": (
        b"sasl",
        [_numeric("902", ":You must use a nick assigned to you")],
        "sasl_failed",
    ),
    "908 then 904": (
        b"sasl",
        [
            _numeric("908", "EXTERNAL,SCRAM-SHA-256 :are available"),
            _numeric("904", ":SASL authentication failed"),
        ],
        "sasl_mechanisms_offered",
    ),
}


def register_and_join(server: ScriptedServer) -> None:
    server.send(b":irc.test 001 relaybot :Welcome\r\n")
    server.wait_for(b"JOIN #relay", 10)


def plain_up_to_the_payload(server: ScriptedServer, offer: bytes = b"sasl") -> bytes:
    """Accept the bot and take it through CAP to its PLAIN payload; the payload, decoded."""
    server.accept()
    server.wait_for(b"CAP LS 302", 10)
    server.send(b":irc.test CAP * LS :multi-prefix " + offer + b"\r\n")
    server.wait_for(b"CAP REQ :sasl multi-prefix", 10)
    server.send(b":irc.test CAP relaybot ACK :sasl multi-prefix\r\n")
    server.wait_for(b"AUTHENTICATE PLAIN", 10)
    server.send(b"AUTHENTICATE +\r\n")
    return base64.b64decode(server.wait_for(b"AUTHENTICATE cmVs", 10).split(b" ", 1)[1])


@pytest.mark.parametrize("outcome", sorted(OUTCOMES))
def test_each_sasl_outcome_ends_cap_and_registers(
    outcome: str,
    config_factory: Callable[[str], Config],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: object,
) -> None:
    monkeypatch.setenv("RELAYBOT_TEST_SASL", "hunter2")
    ls_value, replies, expected_event = OUTCOMES[outcome]
    server = ScriptedServer()
    config = sasl_config(config_factory, server.port, str(tmp_path))
    with structlog.testing.capture_logs() as logs, BotRunner(config, FixedEngine()):  # type: ignore[arg-type]
        payload = plain_up_to_the_payload(server, ls_value)
        assert payload == b"relaybot\0relaybot\0hunter2"
        for line in replies:
            server.send(line + b"\r\n")
        server.wait_for(b"CAP END", 10)
        register_and_join(server)
    server.close()
    events = [e["event"] for e in logs]
    assert expected_event in events
    assert "hunter2" not in repr(logs)
    assert sum(line == b"CAP END" for line in server.received) == 1


def test_no_sasl_at_all_is_a_clear_error_and_the_bot_goes_on(
    config_factory: Callable[[str], Config],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: object,
) -> None:
    monkeypatch.setenv("RELAYBOT_TEST_SASL", "hunter2")
    server = ScriptedServer()
    config = sasl_config(config_factory, server.port, str(tmp_path))
    with structlog.testing.capture_logs() as logs, BotRunner(config, FixedEngine()):  # type: ignore[arg-type]
        server.accept()
        server.wait_for(b"CAP LS 302", 10)
        server.send(b":irc.test CAP * LS :multi-prefix\r\n")
        server.wait_for(b"CAP REQ :multi-prefix", 10)
        server.send(b":irc.test CAP relaybot ACK :multi-prefix\r\n")
        server.wait_for(b"CAP END", 10)
        register_and_join(server)
    server.close()
    unavailable = [e for e in logs if e["event"] == "sasl_unavailable"]
    assert len(unavailable) == 1
    assert unavailable[0]["problem"].startswith("the server offers no SASL")
    assert not any(line.startswith(b"AUTHENTICATE") for line in server.received)


def test_a_mechanism_not_listed_is_tried_then_cap_ends_on_904(
    config_factory: Callable[[str], Config],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: object,
) -> None:
    # The sasl= list lacks PLAIN: the bot asks for sasl and tries PLAIN all the same (as
    # Limnoria and Sopel do); the server's 908 and 904 then end CAP, and the bot registers.
    monkeypatch.setenv("RELAYBOT_TEST_SASL", "hunter2")
    server = ScriptedServer()
    config = sasl_config(config_factory, server.port, str(tmp_path))
    with structlog.testing.capture_logs() as logs, BotRunner(config, FixedEngine()):  # type: ignore[arg-type]
        plain_up_to_the_payload(server, b"sasl=EXTERNAL,SCRAM-SHA-256")
        server.send(_numeric("908", "EXTERNAL,SCRAM-SHA-256 :are available") + b"\r\n")
        server.send(_numeric("904", ":SASL authentication failed") + b"\r\n")
        server.wait_for(b"CAP END", 10)
        register_and_join(server)
    server.close()
    events = [e["event"] for e in logs]
    assert "sasl_mechanism_not_listed" in events and "sasl_failed" in events
    assert "sasl_unavailable" not in events


def test_external_sends_an_empty_authzid(
    config_factory: Callable[[str], Config],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: object,
) -> None:
    monkeypatch.setenv("RELAYBOT_TEST_SASL", "unused")
    server = ScriptedServer()
    config = sasl_config(config_factory, server.port, str(tmp_path))
    # The TLS client certificate is EXTERNAL's credential; the exchange itself is the same
    # on a plain socket, which is what this scripted server speaks.
    config = with_irc(config, sasl=SaslConfig("", None, "EXTERNAL"))
    with BotRunner(config, FixedEngine()):  # type: ignore[arg-type]
        server.accept()
        server.wait_for(b"CAP LS 302", 10)
        server.send(b":irc.test CAP * LS 302 :sasl=PLAIN,EXTERNAL\r\n")
        server.wait_for(b"CAP REQ :sasl", 10)
        server.send(b":irc.test CAP relaybot ACK :sasl\r\n")
        server.wait_for(b"AUTHENTICATE EXTERNAL", 10)
        server.send(b"AUTHENTICATE +\r\n")
        server.wait_for(b"AUTHENTICATE +", 10)
        server.send(b":irc.test 903 relaybot :SASL authentication successful\r\n")
        server.wait_for(b"CAP END", 10)
        register_and_join(server)
    server.close()


def test_cap_new_and_del_after_registration(
    config_factory: Callable[[str], Config], tmp_path: object
) -> None:
    server = ScriptedServer()
    config = config_factory(f"""
[irc]
host = "127.0.0.1"
port = {server.port}
nick = "relaybot"
channels = ["#relay"]
[state]
dir = "{tmp_path}"
""")
    with structlog.testing.capture_logs() as logs, BotRunner(config, FixedEngine()) as runner:  # type: ignore[arg-type]
        server.accept()
        server.wait_for(b"CAP LS 302", 10)
        # A multi-line LS with a capability value, split across two lines.
        server.send(b":irc.test CAP * LS * :multi-prefix cap-notify\r\n")
        server.send(b":irc.test CAP * LS :draft/other=port=6697 draft/unknown\r\n")
        server.wait_for(b"CAP REQ :multi-prefix cap-notify", 10)
        server.send(b":irc.test CAP relaybot ACK :multi-prefix cap-notify\r\n")
        server.wait_for(b"CAP END", 10)
        register_and_join(server)
        server.send(b":irc.test CAP relaybot NEW :account-tag sasl=PLAIN\r\n")
        server.wait_for(b"CAP REQ :account-tag", 10)  # not sasl: registration is over
        server.send(b":irc.test CAP relaybot ACK :account-tag\r\n")
        server.send(b":irc.test CAP relaybot DEL :account-tag\r\n")
        runner.wait_until(
            lambda: any(e["event"] == "caps_removed" for e in logs), 10, "CAP DEL handled"
        )
        assert "account-tag" not in runner.on_reactor(lambda: set(runner.net.session._caps_enabled))
    server.close()


def start_scram(server: ScriptedServer) -> bytes:
    """Negotiate up to the bot's client-first message, and return it decoded."""
    server.accept()
    server.wait_for(b"CAP LS 302", 10)
    server.send(b":irc.test CAP * LS 302 :sasl=SCRAM-SHA-256,PLAIN\r\n")
    server.wait_for(b"CAP REQ :sasl", 10)
    server.send(b":irc.test CAP relaybot ACK :sasl\r\n")
    server.wait_for(b"AUTHENTICATE SCRAM-SHA-256", 10)
    server.send(b"AUTHENTICATE +\r\n")
    return base64.b64decode(server.wait_for(b"AUTHENTICATE biws", 10).split(b" ", 1)[1])


def authenticate(payload: str) -> bytes:
    return b"AUTHENTICATE " + base64.b64encode(payload.encode()) + b"\r\n"


@pytest.mark.parametrize("forged", [False, True], ids=["server proves itself", "forged"])
def test_scram_sha_256_against_a_scram_server(
    forged: bool,
    config_factory: Callable[[str], Config],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: object,
) -> None:
    monkeypatch.setenv("RELAYBOT_TEST_SASL", "pencil")
    mechanism = ScramMechanism("SCRAM-SHA-256")
    auth_info = mechanism.make_auth_info("pencil", iteration_count=4096)
    scram = mechanism.make_server(lambda username: auth_info)
    server = ScriptedServer()
    config = sasl_config(
        config_factory, server.port, str(tmp_path), f'mechanism = "SCRAM-SHA-256"\n{PLAIN_KEYS}'
    )
    with structlog.testing.capture_logs() as logs, BotRunner(config, FixedEngine()):  # type: ignore[arg-type]
        client_first = start_scram(server)
        assert client_first.startswith(b"n,,n=relaybot,r=")  # no channel binding
        scram.set_client_first(client_first.decode())
        server.send(authenticate(scram.get_server_first()))
        final = server.wait_for(b"AUTHENTICATE Yz1iaXdz", 10).split(b" ", 1)[1]  # "c=biws"
        scram.set_client_final(base64.b64decode(final).decode())  # raises on a wrong proof
        server_final = scram.get_server_final()
        if forged:
            server_final = "v=" + base64.b64encode(b"\0" * 32).decode()
        server.send(authenticate(server_final))
        if forged:
            server.wait_for(b"AUTHENTICATE *", 10)
            server.send(b":irc.test 906 relaybot :SASL authentication aborted\r\n")
        else:
            server.wait_for(b"AUTHENTICATE +", 10)
            server.send(b":irc.test 900 relaybot relaybot!r@h relaybot :You are now logged in\r\n")
            server.send(b":irc.test 903 relaybot :SASL authentication successful\r\n")
        server.wait_for(b"CAP END", 10)
        register_and_join(server)
    server.close()
    events = [e["event"] for e in logs]
    assert ("sasl_success" in events) is not forged
    assert ("sasl_failed" in events) is forged
    assert "pencil" not in repr(logs)


def test_ecdsa_nist256p_challenge_signature_verifies(
    config_factory: Callable[[str], Config], tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "sasl.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ScriptedServer()
    config = sasl_config(
        config_factory,
        server.port,
        str(tmp_path),
        'mechanism = "ECDSA-NIST256P-CHALLENGE"\nusername = "relaybot"\nkey_file = "sasl.pem"',
    )
    challenge = os.urandom(32)
    with structlog.testing.capture_logs() as logs, BotRunner(config, FixedEngine()):  # type: ignore[arg-type]
        server.accept()
        server.wait_for(b"CAP LS 302", 10)
        server.send(b":irc.test CAP * LS 302 :sasl=ECDSA-NIST256P-CHALLENGE,PLAIN\r\n")
        server.wait_for(b"CAP REQ :sasl", 10)
        server.send(b":irc.test CAP relaybot ACK :sasl\r\n")
        server.wait_for(b"AUTHENTICATE ECDSA-NIST256P-CHALLENGE", 10)
        server.send(b"AUTHENTICATE +\r\n")
        server.wait_for(b"AUTHENTICATE " + base64.b64encode(b"relaybot"), 10)
        server.send(b"AUTHENTICATE " + base64.b64encode(challenge) + b"\r\n")
        signed = server.wait_for(b"AUTHENTICATE ME", 10)  # a DER SEQUENCE: 0x30, then its length
        signature = base64.b64decode(signed.split(b" ", 1)[1])
        # Atheme: ECDSA_verify(0, challenge, 32, signature, pubkey); raises if it does not hold.
        key.public_key().verify(signature, challenge, ec.ECDSA(Prehashed(hashes.SHA256())))
        server.send(b":irc.test 900 relaybot relaybot!r@h relaybot :You are now logged in\r\n")
        server.send(b":irc.test 903 relaybot :SASL authentication successful\r\n")
        server.wait_for(b"CAP END", 10)
        register_and_join(server)
    server.close()
    assert "sasl_success" in [e["event"] for e in logs]
    assert "PRIVATE" not in repr(logs)


# --- irc.sasl.required ----------------------------------------------------------------------------


def required_config(config_factory: Callable[[str], Config], port: int, tmp: object) -> Config:
    # A short backoff: the test waits for the reconnect.
    config = sasl_config(config_factory, port, str(tmp), PLAIN_KEYS + "\nrequired = true")
    return with_irc(config, reconnect_min=0.2, reconnect_max=0.4)


def test_required_sasl_failing_quits_and_reconnects_instead_of_registering(
    config_factory: Callable[[str], Config],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: object,
) -> None:
    monkeypatch.setenv("RELAYBOT_TEST_SASL", "hunter2")
    server = ScriptedServer()
    config = required_config(config_factory, server.port, tmp_path)
    with structlog.testing.capture_logs() as logs, BotRunner(config, FixedEngine()) as runner:  # type: ignore[arg-type]
        plain_up_to_the_payload(server)
        server.send(_numeric("904", ":SASL authentication failed") + b"\r\n")
        server.wait_for(b"QUIT :SASL login required", 10)
        server.wait_closed(10)
        first = list(server.received)
        assert b"CAP END" not in first
        assert not any(line.startswith(b"JOIN") for line in first)
        assert not runner.on_reactor(lambda: runner.net.session.registered)
        # The usual reconnect, after the backoff; this time SASL works and the bot registers.
        server.received.clear()
        plain_up_to_the_payload(server)
        server.send(_numeric("903", ":SASL authentication successful") + b"\r\n")
        server.wait_for(b"CAP END", 10)
        register_and_join(server)
    server.close()
    events = [e["event"] for e in logs]
    assert events.count("sasl_required_failed") == 1
    assert events.index("sasl_required_failed") < events.index("reconnect_scheduled")
    assert "registered" in events and "hunter2" not in repr(logs)


def test_required_sasl_on_a_server_without_sasl_never_registers(
    config_factory: Callable[[str], Config],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: object,
) -> None:
    monkeypatch.setenv("RELAYBOT_TEST_SASL", "hunter2")
    server = ScriptedServer()
    config = required_config(config_factory, server.port, tmp_path)
    with BotRunner(config, FixedEngine()):  # type: ignore[arg-type]
        server.accept()
        server.wait_for(b"CAP LS 302", 10)
        server.send(b":irc.test CAP * LS :multi-prefix\r\n")
        server.wait_for(b"QUIT :SASL login required", 10)
        server.wait_closed(10)
        assert not any(line.startswith((b"CAP REQ", b"CAP END")) for line in server.received)
    server.close()


def test_required_sasl_and_a_server_that_registers_without_cap(
    config_factory: Callable[[str], Config],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: object,
) -> None:
    # A server that ignores CAP and registers the bot at once: 001 comes, no JOIN follows.
    monkeypatch.setenv("RELAYBOT_TEST_SASL", "hunter2")
    server = ScriptedServer()
    config = required_config(config_factory, server.port, tmp_path)
    with BotRunner(config, FixedEngine()):  # type: ignore[arg-type]
        server.accept()
        server.wait_for(b"USER relaybot", 10)
        server.send(b":irc.test 001 relaybot :Welcome\r\n")
        server.wait_for(b"QUIT :SASL login required", 10)
        server.wait_closed(10)
        assert not any(line.startswith(b"JOIN") for line in server.received)
    server.close()


# --- the NickServ IDENTIFY fallback ---------------------------------------------------------------

NICKSERV = '[irc.nickserv]\npassword_env = "RELAYBOT_TEST_NS"\naccount = "relayacct"\n'


def nickserv_config(
    config_factory: Callable[[str], Config], port: int, tmp: object, sasl: bool
) -> Config:
    sasl_table = f"[irc.sasl]\n{PLAIN_KEYS}\n" if sasl else ""
    return config_factory(f"""
[irc]
host = "127.0.0.1"
port = {port}
nick = "relaybot"
channels = ["#relay"]
{sasl_table}{NICKSERV}
[state]
dir = "{tmp}"
""")


@pytest.mark.parametrize("sasl", ["none configured", "904"])
def test_nickserv_identify_when_sasl_did_not_log_in(
    sasl: str,
    config_factory: Callable[[str], Config],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: object,
) -> None:
    monkeypatch.setenv("RELAYBOT_TEST_SASL", "hunter2")
    monkeypatch.setenv("RELAYBOT_TEST_NS", "ns-secret-9")
    server = ScriptedServer()
    config = nickserv_config(config_factory, server.port, tmp_path, sasl != "none configured")
    with structlog.testing.capture_logs() as logs, BotRunner(config, FixedEngine()) as runner:  # type: ignore[arg-type]
        if sasl == "904":
            plain_up_to_the_payload(server)
            server.send(_numeric("904", ":SASL authentication failed") + b"\r\n")
        else:
            server.accept()
            server.wait_for(b"CAP LS 302", 10)
            server.send(b":irc.test CAP * LS :multi-prefix echo-message\r\n")
            server.wait_for(b"CAP REQ", 10)
            server.send(b":irc.test CAP relaybot ACK :multi-prefix echo-message\r\n")
        server.wait_for(b"CAP END", 10)
        server.send(b":irc.test 001 relaybot :Welcome\r\n")
        server.wait_for(b"JOIN #relay", 10)
        identify = [line for line in server.received if b"IDENTIFY" in line]
        assert identify == [b"PRIVMSG NickServ :IDENTIFY relayacct ns-secret-9"]
        # Before the JOIN, so that channels for identified users have a chance.
        assert server.received.index(identify[0]) < server.received.index(b"JOIN #relay")
        # The server echoes it back (echo-message): still no context anywhere holds it.
        server.send(b":relaybot!r@h PRIVMSG NickServ :IDENTIFY relayacct ns-secret-9\r\n")
        server.send(b":NickServ!s@services NOTICE relaybot :You are now identified\r\n")
        server.send(b":relaybot!r@h JOIN #relay\r\n")
        runner.wait_until(
            lambda: runner.on_reactor(lambda: runner.net.session.joined_channels()) == ["#relay"],
            10,
            "the join",
        )
        assert runner.turns("NickServ") is None
        assert "ns-secret-9" not in runner.prompt_text("#relay")
    server.close()
    assert "ns-secret-9" not in repr(logs)
    sent = [e for e in logs if e["event"] == "nickserv_identify_sent"]
    assert sent == [
        {
            "component": "session",
            "event": "nickserv_identify_sent",
            "log_level": "info",
            "network": "default",
            "service": "NickServ",
            "account": "relayacct",
        }
    ]


def test_no_nickserv_identify_when_sasl_logged_in(
    config_factory: Callable[[str], Config],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: object,
) -> None:
    monkeypatch.setenv("RELAYBOT_TEST_SASL", "hunter2")
    monkeypatch.setenv("RELAYBOT_TEST_NS", "ns-secret-9")
    server = ScriptedServer()
    config = nickserv_config(config_factory, server.port, tmp_path, sasl=True)
    with BotRunner(config, FixedEngine()):  # type: ignore[arg-type]
        plain_up_to_the_payload(server)
        server.send(_numeric("900", "relaybot!r@h relayacct :You are now logged in") + b"\r\n")
        server.send(_numeric("903", ":SASL authentication successful") + b"\r\n")
        server.wait_for(b"CAP END", 10)
        register_and_join(server)
    server.close()
    assert not any(b"IDENTIFY" in line for line in server.received)
