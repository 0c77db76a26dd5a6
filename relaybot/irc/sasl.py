"""SASL mechanisms as small step-by-step exchanges, and the AUTHENTICATE framing around them:
a server challenge joined from its 400-character chunks and decoded, each response encoded and
split into them. Mechanisms: PLAIN, EXTERNAL, SCRAM-SHA-256 (RFC 5802 and 7677, without
channel binding) and ECDSA-NIST256P-CHALLENGE (as Atheme verifies it). Pure: server parameters
in, lines out; no sockets."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from scramp import ScramClient, ScramException

# AUTHENTICATE carries at most this many base64 characters a line (the SASL 3.1 spec).
SASL_CHUNK = 400
# A server challenge longer than this (base64 characters, all chunks together) is refused:
# no mechanism here has one anywhere near it, and it would otherwise grow without bound.
MAX_CHALLENGE = 8 * SASL_CHUNK

SCRAM_SHA_256 = "SCRAM-SHA-256"
ECDSA_CHALLENGE = "ECDSA-NIST256P-CHALLENGE"
MECHANISMS = ("PLAIN", "EXTERNAL", SCRAM_SHA_256, ECDSA_CHALLENGE)
# What ECDSA-NIST256P-CHALLENGE's server sends to be signed (Atheme: 32 random bytes).
CHALLENGE_BYTES = 32


@dataclass(frozen=True, slots=True)
class SaslLogin:
    """What SASL logs in with. EXTERNAL needs no password: the TLS client certificate is the
    credential."""

    mechanism: str  # one of MECHANISMS
    username: str = ""
    password: str = field(default="", repr=False)  # never in a repr, so never in a log
    key_pem: str = field(default="", repr=False)  # ECDSA-NIST256P-CHALLENGE's private key


class SaslAbort(Exception):
    """A server challenge this side cannot or must not answer: the exchange ends with
    `AUTHENTICATE *`. The message says why, and never holds a secret."""


Step = Callable[[bytes], bytes]


class Steps:
    """A mechanism as the responses to its challenges, in order. A challenge after the last
    step is a server out of line, and aborts."""

    def __init__(self, *steps: Step) -> None:
        self._steps = steps
        self._taken = 0

    @property
    def finished(self) -> bool:
        """Every step answered: for SCRAM, the server has proved it knows the password too."""
        return self._taken == len(self._steps)

    def respond(self, challenge: bytes) -> bytes:
        if self.finished:
            raise SaslAbort("the server sent a challenge after the exchange was complete")
        response = self._steps[self._taken](challenge)
        self._taken += 1  # only once answered: an aborted step leaves the exchange unfinished
        return response


def _expect_empty(challenge: bytes) -> None:
    # Every mechanism here speaks first: the server's opening challenge is `AUTHENTICATE +`.
    if challenge:
        raise SaslAbort("the server's first challenge was not empty")


def plain_message(username: str, password: str) -> bytes:
    """PLAIN's one message (RFC 4616): authzid and authcid both the account."""
    return f"{username}\0{username}\0{password}".encode()


def _plain(login: SaslLogin, nonce: str | None) -> Steps:
    def credentials(challenge: bytes) -> bytes:
        _expect_empty(challenge)
        return plain_message(login.username, login.password)

    return Steps(credentials)


def _external(login: SaslLogin, nonce: str | None) -> Steps:
    def authzid(challenge: bytes) -> bytes:
        _expect_empty(challenge)
        return b""  # empty: the account the TLS client certificate names

    return Steps(authzid)


class _Scram:
    """SCRAM-SHA-256 with the GS2 header `n,,` (no channel binding): client-first, then the
    client-final that proves the password, then checking the server's signature (a server
    that does not know the password cannot make it), answered with an empty response."""

    def __init__(self, login: SaslLogin, nonce: str | None) -> None:
        self.login = login
        self.nonce = nonce  # None: scramp makes a random one (tests give the RFC's)
        self.client: ScramClient | None = None

    def steps(self) -> Steps:
        return Steps(self.client_first, self.client_final, self.server_final)

    def client_first(self, challenge: bytes) -> bytes:
        _expect_empty(challenge)
        try:
            # SASLprep of the name and password happens here: a refused one aborts.
            self.client = ScramClient(
                [SCRAM_SHA_256], self.login.username, self.login.password, c_nonce=self.nonce
            )
            return str(self.client.get_client_first()).encode()
        except ScramException as exc:
            raise SaslAbort(f"SCRAM: {exc}") from None

    def client_final(self, challenge: bytes) -> bytes:
        assert self.client is not None
        try:
            self.client.set_server_first(_text(challenge))
            return str(self.client.get_client_final()).encode()
        except (ScramException, ValueError, KeyError) as exc:
            raise SaslAbort(f"SCRAM: bad server-first message: {exc}") from None

    def server_final(self, challenge: bytes) -> bytes:
        assert self.client is not None
        try:
            self.client.set_server_final(_text(challenge))
        except (ScramException, ValueError, KeyError) as exc:
            raise SaslAbort(f"SCRAM: the server did not prove itself: {exc}") from None
        return b""


def _text(challenge: bytes) -> str:
    try:
        return challenge.decode()
    except UnicodeDecodeError:
        raise SaslAbort("the server's challenge is not UTF-8") from None


def _scram(login: SaslLogin, nonce: str | None) -> Steps:
    return _Scram(login, nonce).steps()


def load_p256_key(pem: str) -> ec.EllipticCurvePrivateKey:
    """An unencrypted PEM private key on NIST P-256; ValueError says what is wrong with it."""
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except TypeError:
        raise ValueError(
            "the key is encrypted; give it unencrypted (a file only the bot reads)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("not an EC key; ECDSA-NIST256P-CHALLENGE needs a NIST P-256 one")
    if not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"the key is on {key.curve.name}; ECDSA-NIST256P-CHALLENGE needs P-256")
    return key


def _ecdsa(login: SaslLogin, nonce: str | None) -> Steps:
    """The account name, then the server's challenge signed. Atheme verifies with
    ECDSA_verify over the 32 challenge bytes as they are, the way a SHA-256 digest would be
    (later versions also take a signature over their hash): so they are signed as a prehashed
    digest, not hashed again."""

    def account(challenge: bytes) -> bytes:
        _expect_empty(challenge)
        return login.username.encode()

    def signature(challenge: bytes) -> bytes:
        if len(challenge) != CHALLENGE_BYTES:
            raise SaslAbort(f"the challenge is {len(challenge)} bytes, not {CHALLENGE_BYTES}")
        try:
            key = load_p256_key(login.key_pem)
        except ValueError as exc:  # the config checked it: only a key changed since then
            raise SaslAbort(f"ECDSA: {exc}") from None
        return key.sign(challenge, ec.ECDSA(Prehashed(hashes.SHA256())))

    return Steps(account, signature)


_STARTS: dict[str, Callable[[SaslLogin, str | None], Steps]] = {
    "PLAIN": _plain,
    "EXTERNAL": _external,
    SCRAM_SHA_256: _scram,
    ECDSA_CHALLENGE: _ecdsa,
}


def authenticate_lines(response: bytes) -> list[str]:
    """A response as AUTHENTICATE lines: base64 in chunks of 400, `+` for an empty one, and a
    final `+` after a chunk of exactly 400 so the server knows the response ended."""
    payload = base64.b64encode(response).decode()
    chunks = [payload[i : i + SASL_CHUNK] for i in range(0, len(payload), SASL_CHUNK)]
    if not chunks or len(chunks[-1]) == SASL_CHUNK:
        chunks.append("+")
    return [f"AUTHENTICATE {chunk}" for chunk in chunks]


class Exchange:
    """One AUTHENTICATE conversation: fed the parameter of each server AUTHENTICATE line, it
    answers with the lines to send. `aborted` says why it sent `AUTHENTICATE *`, once it has."""

    def __init__(self, login: SaslLogin, *, nonce: str | None = None) -> None:
        self.mechanism = login.mechanism
        self._steps = _STARTS[login.mechanism](login, nonce)
        self._chunks: list[str] = []
        self._length = 0
        self.aborted: str | None = None

    @property
    def finished(self) -> bool:
        """The mechanism answered every challenge it has (SCRAM: the server proved itself)."""
        return self._steps.finished

    def problem(self) -> str | None:
        """Why a 903 must not be believed: the exchange was aborted, or the server ended a
        mechanism that authenticates it too (SCRAM) before it proved itself."""
        if self.aborted is not None:
            return self.aborted
        if self.mechanism == SCRAM_SHA_256 and not self.finished:
            return "the server ended SCRAM before proving it knows the password"
        return None

    def first_line(self) -> str:
        return f"AUTHENTICATE {self.mechanism}"

    def feed(self, chunk: str) -> list[str]:
        if self.aborted is not None:
            return []
        try:
            challenge = self._join(chunk)
            if challenge is None:
                return []  # a full 400-character chunk: more of the challenge follows
            return authenticate_lines(self._steps.respond(challenge))
        except SaslAbort as exc:
            self.aborted = str(exc)
            return ["AUTHENTICATE *"]

    def _join(self, chunk: str) -> bytes | None:
        self._length += len(chunk)
        if self._length > MAX_CHALLENGE:
            raise SaslAbort("the server's challenge is too long")
        self._chunks.append("" if chunk == "+" else chunk)
        if len(chunk) == SASL_CHUNK:
            return None
        data = "".join(self._chunks)
        self._chunks.clear()
        self._length = 0
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise SaslAbort("the server's challenge is not base64") from None
