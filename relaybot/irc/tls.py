"""TLS for the IRC connection: CA verification, SHA-256 pinning and client certificates.

Trust comes from exactly one place per connection:

- ``irc.tls_fingerprints`` set: the server certificate is accepted when the SHA-256 of its DER
  matches a pin, whoever signed it (pinning replaces CA trust and the hostname check). The
  handshake runs with CERT_NONE and the pin is checked right after it, before a byte of IRC is
  sent; no certificate or no match closes the connection.
- otherwise ``irc.tls_verify`` (the default): the system CAs, or ``irc.ca_file`` instead, plus
  the hostname check against the address being connected to.
- ``irc.tls_verify = false`` without pins: no verification at all, with a warning.

A refused certificate raises `TlsVerificationError` (an `ssl.SSLError`, so an `OSError`: the
session's reconnect logic treats it like any failed connect) and logs
``tls_certificate_rejected`` with the fingerprint the server presented, so an operator who
decides to trust it can pin it. Config problems with the certificate files raise
`TlsSetupError` (a `ValueError`) naming the config key, when the context is built.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from relaybot.config.schema import IrcConfig
from relaybot.log import get_logger

log = get_logger(component="tls")

Address = tuple[str, int]
Trust = Literal["pinned", "ca", "unverified"]

_PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
_PEM_PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")


class TlsSetupError(ValueError):
    """A TLS config problem, phrased like a ConfigError: `irc.key: what is wrong`."""


class TlsVerificationError(ssl.SSLError):
    """The server's certificate was refused (untrusted, wrong host, or no pin matched)."""

    def __init__(self, message: str, *, host: str, port: int, presented: str | None) -> None:
        super().__init__(message)
        self.host = host
        self.port = port
        self.fingerprint = presented  # what the server presented (None: unknown)

    def __str__(self) -> str:
        return str(self.args[0])


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate as lowercase hex without colons (the pin format)."""
    return hashlib.sha256(der).hexdigest()


def trust_mode(config: IrcConfig) -> Trust:
    if config.tls_fingerprints:
        return "pinned"
    return "ca" if config.tls_verify else "unverified"


def client_context(config: IrcConfig) -> ssl.SSLContext | None:
    """The client SSLContext for this config, or None when `irc.tls` is off.

    Build it once (at start and on reload): file problems surface here as TlsSetupError.
    """
    if not config.tls:
        return None
    try:
        context = ssl.create_default_context(cafile=config.ca_file)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise TlsSetupError(f"irc.ca_file: cannot load {config.ca_file}: {_why(exc)}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    mode = trust_mode(config)
    if mode != "ca":
        # Pinned: `connect` checks the pin right after the handshake, failing closed.
        # Unverified: nothing is checked (warned about below).
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if mode == "unverified":
        log.warning(
            "tls_verification_disabled",
            host=config.host,
            hint="irc.tls_verify = false accepts any certificate; pin it with "
            "irc.tls_fingerprints or give its CA in irc.ca_file instead",
        )
    if config.client_cert_file or config.client_key_file:
        _load_client_certificate(context, config)
    return context


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, ssl.SSLError):
        return exc.strerror
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    return str(exc)


def _read(key: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsSetupError(f"irc.{key}: cannot read {path}: {_why(exc)}") from None


def _load_client_certificate(context: ssl.SSLContext, config: IrcConfig) -> None:
    cert_file, key_file = config.client_cert_file, config.client_key_file
    if not cert_file:
        raise TlsSetupError("irc.client_key_file: set without irc.client_cert_file")
    cert_pem = _read("client_cert_file", cert_file)
    key_key, key_path = (
        ("client_key_file", key_file) if key_file else ("client_cert_file", cert_file)
    )
    key_pem = _read(key_key, key_path) if key_file else cert_pem
    if _PEM_CERTIFICATE not in cert_pem:
        raise TlsSetupError(f"irc.client_cert_file: {cert_file} holds no PEM certificate")
    if not _PEM_PRIVATE_KEY.search(key_pem):
        hint = "" if key_file else "; put the key in it or set irc.client_key_file"
        raise TlsSetupError(f"irc.{key_key}: {key_path} holds no PEM private key{hint}")

    def no_password() -> str:  # never let OpenSSL prompt on a terminal a daemon does not have
        raise TlsSetupError(
            f"irc.{key_key}: the private key in {key_path} is encrypted; give an unencrypted "
            "key and protect the file with permissions (or a systemd credential) instead"
        )

    try:
        context.load_cert_chain(cert_file, key_file, password=no_password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsSetupError(
                f"irc.{key_key}: the private key in {key_path} does not match the certificate "
                f"in irc.client_cert_file ({cert_file})"
            ) from None
        # Which file is broken: the certificate if it does not parse on its own.
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=cert_file)
        except ssl.SSLError:
            raise TlsSetupError(
                f"irc.client_cert_file: {cert_file} is not a valid PEM certificate"
            ) from None
        raise TlsSetupError(
            f"irc.{key_key}: {key_path} holds no usable private key ({_why(exc)})"
        ) from None


def connect(address: Address, config: IrcConfig, context: ssl.SSLContext | None) -> socket.socket:
    """Connect to `address`, do the TLS handshake (SNI and hostname check against address[0])
    and the pin check; return a blocking socket ready for IRC.

    Raises TlsVerificationError for a refused certificate, other OSErrors (ssl.SSLError,
    TimeoutError, ConnectionRefusedError) for everything else.
    """
    sock = socket.create_connection(address, timeout=config.connect_timeout)
    if context is None:
        sock.settimeout(None)
        return sock
    host, port = address
    try:
        tls = context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        reason = exc.verify_message or exc.reason or str(exc)
        # The handshake was aborted before we saw the certificate: fetch it once more, with no
        # client certificate, only so the log can say what the server presents.
        presented = _presented_fingerprint(address, config.connect_timeout)
        raise _rejected(
            f"certificate for {host} not trusted: {reason}", address, presented
        ) from exc
    except BaseException:
        sock.close()
        raise
    try:
        if trust_mode(config) == "pinned":
            _check_pin(tls, address, config.tls_fingerprints)
        tls.settimeout(None)
        der = tls.getpeercert(binary_form=True)
        log.info(
            "tls_established",
            host=host,
            port=port,
            version=tls.version(),
            cipher=(tls.cipher() or ("?",))[0],
            trust=trust_mode(config),
            fingerprint=fingerprint(der) if der else None,
            client_certificate=bool(config.client_cert_file),
        )
    except BaseException:
        tls.close()
        raise
    return tls


def make_connector(config: IrcConfig) -> Callable[[Address], socket.socket]:
    """`connect` bound to this config, with the context built once (TlsSetupError here)."""
    context = client_context(config)

    def connector(address: Address) -> socket.socket:
        return connect(address, config, context)

    return connector


def _check_pin(tls: ssl.SSLSocket, address: Address, pins: tuple[str, ...]) -> None:
    der = tls.getpeercert(binary_form=True)
    if not der:
        raise _rejected(f"{address[0]} presented no certificate", address, None)
    presented = fingerprint(der)
    wanted = [pin.replace(":", "").lower().encode() for pin in pins]
    if not any(hmac.compare_digest(presented.encode(), pin) for pin in wanted):
        raise _rejected(
            f"certificate fingerprint sha256:{presented} matches none of irc.tls_fingerprints",
            address,
            presented,
        )


def _rejected(reason: str, address: Address, presented: str | None) -> TlsVerificationError:
    host, port = address
    log.error(
        "tls_certificate_rejected", host=host, port=port, reason=reason, fingerprint=presented
    )
    return TlsVerificationError(reason, host=host, port=port, presented=presented)


def _presented_fingerprint(address: Address, timeout: float) -> str | None:
    """Best effort: the fingerprint of the certificate the server presents, or None."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection(address, timeout=min(timeout, 5.0)) as sock,
            probe.wrap_socket(sock, server_hostname=address[0]) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError):
        return None
    return fingerprint(der) if der else None
