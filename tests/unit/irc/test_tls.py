"""TLS: CA verification, fingerprint pins, client certificates and refusals, against a real
TLS miniircd (and a small Python TLS server where a client certificate must be checked)."""

from __future__ import annotations

import dataclasses
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from relaybot.config.loader import loads_config
from relaybot.config.schema import IrcConfig
from relaybot.irc import tls
from relaybot.irc.tls import TlsSetupError, TlsVerificationError
from tests.support.botrunner import BotRunner
from tests.support.certs import CertPair, encrypt_key, make_ca, make_cert, start_miniircd_tls
from tests.support.fakes import FixedEngine
from tests.support.ircservers import HOST, RawClient, RunningServer, free_port, parse_line

# --- fixtures ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pki:
    ca: CertPair  # signs `server`, `wrong_host` and `client`
    server: CertPair  # CA-signed, subjectAltName IP:127.0.0.1
    wrong_host: CertPair  # CA-signed, subjectAltName DNS:irc.example.org only
    self_signed: CertPair  # self-signed, subjectAltName IP:127.0.0.1
    client: CertPair  # CA-signed, extendedKeyUsage clientAuth
    other_ca: CertPair  # a CA that signed none of the above


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d, "ca")
    return Pki(
        ca=ca,
        server=make_cert(d, "server", ca=ca),
        wrong_host=make_cert(d, "wrong-host", ca=ca, san="DNS:irc.example.org"),
        self_signed=make_cert(d, "self-signed"),
        client=make_cert(d, "client", ca=ca, san="DNS:relaybot", usage="clientAuth"),
        other_ca=make_ca(d, "other-ca"),
    )


def _server(factory: pytest.TempPathFactory, pair: CertPair) -> Iterator[RunningServer]:
    server = start_miniircd_tls(factory.mktemp("miniircd"), pair.cert, pair.key)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def trusted_server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[RunningServer]:
    yield from _server(tmp_path_factory, pki.server)


@pytest.fixture(scope="module")
def self_signed_server(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> Iterator[RunningServer]:
    yield from _server(tmp_path_factory, pki.self_signed)


@pytest.fixture(scope="module")
def wrong_host_server(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> Iterator[RunningServer]:
    yield from _server(tmp_path_factory, pki.wrong_host)


def irc_config(port: int = 6697, **changes: Any) -> IrcConfig:
    return IrcConfig(
        host=HOST, nick="relaybot", port=port, tls=True, connect_timeout=5.0, **changes
    )


def register(sock: socket.socket, nick: str) -> RawClient:
    """A RawClient over an already connected (TLS) socket, registered with the server."""
    client = RawClient(sock, nick)
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :{nick}")
    client.wait_for(lambda line: parse_line(line)[1] == "001", 10)
    return client


def tls_client(server: RunningServer, nick: str, ca: CertPair) -> RawClient:
    context = ssl.create_default_context(cafile=str(ca.cert))
    sock = context.wrap_socket(
        socket.create_connection((server.host, server.port), timeout=10), server_hostname=HOST
    )
    return register(sock, nick)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


# --- unit tests ----------------------------------------------------------------------------


def test_fingerprint_is_lowercase_hex_sha256_of_the_der(pki: Pki) -> None:
    value = tls.fingerprint(pki.server.der)
    assert value == pki.server.sha256  # what `openssl x509 -fingerprint -sha256` says
    assert len(value) == 64 and value == value.lower() and ":" not in value
    assert (
        tls.fingerprint(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_no_context_without_tls() -> None:
    assert tls.client_context(dataclasses.replace(irc_config(), tls=False)) is None


def test_default_context_verifies_ca_and_hostname_with_tls12_minimum(pki: Pki) -> None:
    context = tls.client_context(irc_config(ca_file=str(pki.ca.cert)))
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_pinned_context_leaves_trust_to_the_pin_check() -> None:
    context = tls.client_context(irc_config(tls_fingerprints=("ab" * 32,)))
    assert context is not None
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname


def test_tls_verify_false_logs_a_warning() -> None:
    with capture_logs() as logs:
        context = tls.client_context(irc_config(tls_verify=False))
    assert context is not None and context.verify_mode == ssl.CERT_NONE
    [warning] = events(logs, "tls_verification_disabled")
    assert warning["log_level"] == "warning" and "tls_fingerprints" in warning["hint"]


def test_errors_are_the_kinds_the_session_catches() -> None:
    assert issubclass(TlsVerificationError, ssl.SSLError)
    assert issubclass(TlsVerificationError, OSError)
    assert issubclass(TlsSetupError, ValueError)
    error = TlsVerificationError("nope", host=HOST, port=1, presented=None)
    assert str(error) == "nope"


@pytest.mark.parametrize(
    ("which", "expected"),
    [
        ("missing cert", "irc.client_cert_file: cannot read"),
        ("garbage cert", "irc.client_cert_file: .* holds no PEM certificate"),
        ("corrupt cert", "irc.client_cert_file: .* is not a valid PEM certificate"),
        ("missing key", "irc.client_key_file: cannot read"),
        ("garbage key", "irc.client_key_file: .* holds no PEM private key"),
        ("wrong key", "irc.client_key_file: .* does not match the certificate"),
        ("encrypted key", "irc.client_key_file: .* is encrypted"),
        ("no key at all", "irc.client_cert_file: .* holds no PEM private key; put the key"),
        ("key without cert", "irc.client_key_file: set without irc.client_cert_file"),
        ("garbage ca", "irc.ca_file: cannot load"),
    ],
)
def test_bad_certificate_files_name_the_config_key(
    pki: Pki, tmp_path: Path, which: str, expected: str
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not PEM\n")
    corrupt = tmp_path / "corrupt.pem"
    corrupt.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    cert, key = str(pki.client.cert), str(pki.client.key)
    files = {
        "missing cert": {"client_cert_file": str(tmp_path / "gone.pem"), "client_key_file": key},
        "garbage cert": {"client_cert_file": str(garbage), "client_key_file": key},
        "corrupt cert": {"client_cert_file": str(corrupt), "client_key_file": key},
        "missing key": {"client_cert_file": cert, "client_key_file": str(tmp_path / "gone")},
        "garbage key": {"client_cert_file": cert, "client_key_file": str(garbage)},
        "wrong key": {"client_cert_file": cert, "client_key_file": str(pki.server.key)},
        "encrypted key": {
            "client_cert_file": cert,
            "client_key_file": str(encrypt_key(pki.client, tmp_path / "enc.key")),
        },
        "no key at all": {"client_cert_file": cert},
        "key without cert": {"client_key_file": key},
        "garbage ca": {"ca_file": str(garbage)},
    }[which]
    with pytest.raises(TlsSetupError, match=expected):
        tls.make_connector(irc_config(**files))


def test_client_certificate_and_key_in_one_file_load(pki: Pki, tmp_path: Path) -> None:
    combined = tmp_path / "combined.pem"
    combined.write_bytes(pki.client.cert.read_bytes() + pki.client.key.read_bytes())
    assert tls.client_context(irc_config(client_cert_file=str(combined))) is not None


# --- against a TLS miniircd ----------------------------------------------------------------


@pytest.mark.integration
def test_ca_signed_certificate_connects_and_registers(
    pki: Pki, trusted_server: RunningServer
) -> None:
    connect = tls.make_connector(irc_config(trusted_server.port, ca_file=str(pki.ca.cert)))
    with capture_logs() as logs:
        sock = connect((trusted_server.host, trusted_server.port))
    assert isinstance(sock, ssl.SSLSocket) and sock.gettimeout() is None
    with register(sock, "catrust") as client:
        assert client.lines[0].startswith(":irc.test 001 catrust ")
    [established] = events(logs, "tls_established")
    assert established["trust"] == "ca"
    assert established["fingerprint"] == pki.server.sha256
    assert established["version"] in ("TLSv1.2", "TLSv1.3")


@pytest.mark.integration
def test_self_signed_certificate_is_refused(pki: Pki, self_signed_server: RunningServer) -> None:
    connect = tls.make_connector(irc_config(self_signed_server.port))  # system CAs
    with capture_logs() as logs, pytest.raises(TlsVerificationError) as caught:
        connect((self_signed_server.host, self_signed_server.port))
    message = str(caught.value)
    assert message == "certificate for 127.0.0.1 not trusted: self-signed certificate"
    assert caught.value.fingerprint == pki.self_signed.sha256
    [rejected] = events(logs, "tls_certificate_rejected")
    assert rejected["log_level"] == "error"
    assert rejected["reason"] == message
    assert (rejected["host"], rejected["port"]) == (HOST, self_signed_server.port)
    assert rejected["fingerprint"] == pki.self_signed.sha256  # so the operator could pin it
    # The server is still fine: a trusting client gets through afterwards.
    sock = tls.make_connector(irc_config(tls_fingerprints=(pki.self_signed.sha256,)))(
        (self_signed_server.host, self_signed_server.port)
    )
    register(sock, "afterwards").close()


@pytest.mark.integration
def test_certificate_from_an_unknown_ca_is_refused(pki: Pki, trusted_server: RunningServer) -> None:
    config = irc_config(ca_file=str(pki.other_ca.cert))
    with capture_logs() as logs, pytest.raises(TlsVerificationError, match="not trusted: unable"):
        tls.connect((trusted_server.host, trusted_server.port), config, tls.client_context(config))
    assert events(logs, "tls_certificate_rejected")[0]["fingerprint"] == pki.server.sha256


@pytest.mark.integration
def test_hostname_mismatch_is_refused(pki: Pki, wrong_host_server: RunningServer) -> None:
    connect = tls.make_connector(irc_config(ca_file=str(pki.ca.cert)))
    with capture_logs() as logs, pytest.raises(TlsVerificationError) as caught:
        connect((wrong_host_server.host, wrong_host_server.port))
    assert "mismatch, certificate is not valid for '127.0.0.1'" in str(caught.value)
    assert events(logs, "tls_certificate_rejected")[0]["fingerprint"] == pki.wrong_host.sha256


@pytest.mark.integration
def test_pinned_self_signed_certificate_connects(
    pki: Pki, self_signed_server: RunningServer, tmp_path: Path
) -> None:
    # The pin as an operator would paste it from openssl: upper case, with colons.
    digest = pki.self_signed.sha256
    pin = ":".join(digest[i : i + 2] for i in range(0, 64, 2)).upper()
    config = (
        loads_config(
            f'[irc]\nhost = "{HOST}"\nport = {self_signed_server.port}\nnick = "pinned"\n'
            f'tls = true\ntls_fingerprints = ["{"ab" * 32}", "{pin}"]\n',
            base_dir=tmp_path,
        )
        .networks[0]
        .irc
    )
    with capture_logs() as logs:
        sock = tls.make_connector(config)((self_signed_server.host, self_signed_server.port))
    with register(sock, "pinned"):
        pass
    [established] = events(logs, "tls_established")
    assert established["trust"] == "pinned"
    assert established["fingerprint"] == pki.self_signed.sha256


@pytest.mark.integration
def test_wrong_pin_is_refused_with_the_presented_fingerprint(
    pki: Pki, self_signed_server: RunningServer
) -> None:
    connect = tls.make_connector(irc_config(tls_fingerprints=("0" * 64,)))
    with capture_logs() as logs, pytest.raises(TlsVerificationError) as caught:
        connect((self_signed_server.host, self_signed_server.port))
    expected = f"certificate fingerprint sha256:{pki.self_signed.sha256} matches none of"
    assert str(caught.value).startswith(expected)
    [rejected] = events(logs, "tls_certificate_rejected")
    assert rejected["fingerprint"] == pki.self_signed.sha256
    assert not events(logs, "tls_established")


@pytest.mark.integration
def test_a_pin_replaces_ca_trust(pki: Pki, trusted_server: RunningServer) -> None:
    """With pins set, even a certificate the CA file would accept must match a pin."""
    config = irc_config(ca_file=str(pki.ca.cert), tls_fingerprints=(pki.self_signed.sha256,))
    with pytest.raises(TlsVerificationError, match=r"matches none of irc\.tls_fingerprints"):
        tls.make_connector(config)((trusted_server.host, trusted_server.port))
    config = dataclasses.replace(config, tls_fingerprints=(pki.server.sha256,))
    tls.make_connector(config)((trusted_server.host, trusted_server.port)).close()


@pytest.mark.integration
def test_pins_are_enforced_even_with_tls_verify_false(self_signed_server: RunningServer) -> None:
    config = irc_config(tls_verify=False, tls_fingerprints=("0" * 64,))
    with pytest.raises(TlsVerificationError, match="matches none"):
        tls.make_connector(config)((self_signed_server.host, self_signed_server.port))


@pytest.mark.integration
def test_tls_verify_false_accepts_any_certificate(self_signed_server: RunningServer) -> None:
    with capture_logs() as logs:
        connect = tls.make_connector(irc_config(tls_verify=False))
        sock = connect((self_signed_server.host, self_signed_server.port))
    register(sock, "careless").close()
    assert events(logs, "tls_verification_disabled")
    assert events(logs, "tls_established")[0]["trust"] == "unverified"


def test_refused_connection_is_a_plain_oserror() -> None:
    with pytest.raises(ConnectionRefusedError):
        tls.make_connector(irc_config())((HOST, free_port()))


# --- client certificates, against a Python TLS server that asks for one ---------------------


class ClientCertServer:
    """Accepts one TLS connection, asking for a client certificate (CERT_OPTIONAL)."""

    def __init__(self, pair: CertPair, client_ca: CertPair) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(pair.cert, pair.key)
        self.context.load_verify_locations(cafile=str(client_ca.cert))
        self.context.verify_mode = ssl.CERT_OPTIONAL
        self.listener = socket.create_server((HOST, 0))
        self.listener.settimeout(10)
        self.port = int(self.listener.getsockname()[1])
        self.peer: bytes | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            raw, _ = self.listener.accept()
            with self.context.wrap_socket(raw, server_side=True) as conn:
                self.peer = conn.getpeercert(binary_form=True)
                conn.sendall(b":irc.test NOTICE * :hello\r\n")
        except BaseException as exc:
            self.error = exc
        finally:
            self.listener.close()

    def result(self) -> bytes | None:
        self.thread.join(10)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        return self.peer


@pytest.mark.integration
@pytest.mark.parametrize("layout", ["separate files", "one file", "none"])
def test_client_certificate_is_presented(pki: Pki, tmp_path: Path, layout: str) -> None:
    server = ClientCertServer(pki.server, client_ca=pki.ca)
    files: dict[str, str] = {}
    if layout == "separate files":
        files = {"client_cert_file": str(pki.client.cert), "client_key_file": str(pki.client.key)}
    elif layout == "one file":
        combined = tmp_path / "client.pem"
        combined.write_bytes(pki.client.cert.read_bytes() + pki.client.key.read_bytes())
        files = {"client_cert_file": str(combined)}
    connect = tls.make_connector(irc_config(ca_file=str(pki.ca.cert), **files))
    with connect((HOST, server.port)) as sock:
        assert sock.recv(100).startswith(b":irc.test NOTICE")
    peer = server.result()
    if layout == "none":
        assert peer is None
    else:
        assert peer is not None and tls.fingerprint(peer) == pki.client.sha256


# --- the whole bot -------------------------------------------------------------------------


def bot_toml(server: RunningServer, extra: str = "") -> str:
    return f"""
[irc]
host = "{server.host}"
port = {server.port}
nick = "tlsbot"
channels = ["#tls"]
tls = true
{extra}
[state]
dir = "state"
"""


@pytest.mark.integration
def test_bot_joins_and_answers_over_tls(
    pki: Pki, trusted_server: RunningServer, tmp_path: Path
) -> None:
    config = loads_config(bot_toml(trusted_server, f'ca_file = "{pki.ca.cert}"'), tmp_path)
    with BotRunner(config, FixedEngine("hello over tls")) as runner:  # type: ignore[arg-type]
        runner.wait_until(lambda: runner.turns("#tls") is not None, 20, "the bot to join #tls")
        with tls_client(trusted_server, "alice", pki.ca) as alice:
            alice.join("#tls")
            alice.privmsg("#tls", "tlsbot: are you there?")
            reply = alice.wait_for(
                lambda line: line.startswith(":tlsbot!") and " PRIVMSG #tls :" in line, 20
            )
        assert "hello over tls" in reply
        assert runner.net.session.connection.is_connected()


@pytest.mark.integration
def test_bot_refuses_an_untrusted_server_and_keeps_retrying(
    pki: Pki, self_signed_server: RunningServer, tmp_path: Path
) -> None:
    extra = "reconnect_min = 0.1\nreconnect_max = 0.3\n"
    config = loads_config(bot_toml(self_signed_server, extra), tmp_path)
    with capture_logs() as logs, BotRunner(config, FixedEngine("never")) as runner:  # type: ignore[arg-type]
        runner.wait_until(
            lambda: len(events(logs, "connect_failed")) >= 3, 20, "three failed connects"
        )
        assert runner.thread.is_alive()
        assert runner.turns("#tls") is None
        assert not runner.net.session.registered
    failures = events(logs, "connect_failed")
    assert all("self-signed certificate" in failure["error"] for failure in failures), failures
    rejections = events(logs, "tls_certificate_rejected")
    assert len(rejections) >= 3, "the session does not connect through relaybot.irc.tls"
    assert rejections[0]["reason"] == (
        "certificate for 127.0.0.1 not trusted: self-signed certificate"
    )
    assert rejections[0]["fingerprint"] == pki.self_signed.sha256
