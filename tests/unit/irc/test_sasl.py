"""relaybot.irc.sasl: the AUTHENTICATE framing (responses in chunks of 400, server challenges
joined from them) and each mechanism's exchange, checked byte for byte: PLAIN's payload,
SCRAM-SHA-256 against the RFC 7677 test vector, and ECDSA-NIST256P-CHALLENGE's signature
checked the way Atheme's ECDSA_verify checks it."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from relaybot.irc.sasl import (
    MAX_CHALLENGE,
    SASL_CHUNK,
    Exchange,
    SaslLogin,
    authenticate_lines,
    load_p256_key,
    plain_message,
)
from tests.support.sasl_wire import b64, decode


def chunked(data: str) -> list[str]:
    """A server's challenge as it sends it: 400-character chunks, `+` after a full last one."""
    payload = b64(data)
    chunks = [payload[i : i + SASL_CHUNK] for i in range(0, len(payload), SASL_CHUNK)]
    if len(chunks[-1]) == SASL_CHUNK:
        chunks.append("+")
    return chunks


# --- responses out -------------------------------------------------------------------------------


def plain_lines(username: str, password: str) -> list[str]:
    return authenticate_lines(plain_message(username, password))


def test_an_empty_response_is_a_plus() -> None:
    assert authenticate_lines(b"") == ["AUTHENTICATE +"]


def test_sasl_plain_short() -> None:
    lines = plain_lines("user", "pass")
    assert lines == ["AUTHENTICATE " + b64(b"user\0user\0pass")]
    assert decode(lines) == b"user\0user\0pass"


def test_sasl_plain_utf8() -> None:
    assert decode(plain_lines("jürgen", "pässwörd😀")) == "jürgen\0jürgen\0pässwörd😀".encode()


def test_sasl_plain_long_password_chunks_at_400() -> None:
    password = "p" * 1000
    lines = plain_lines("user", password)
    assert SASL_CHUNK == 400
    payload_len = len(base64.b64encode(f"user\0user\0{password}".encode()))
    assert payload_len > 800 and payload_len % 400
    assert len(lines) == -(-payload_len // 400)
    assert all(len(line) == len("AUTHENTICATE ") + 400 for line in lines[:-1])
    assert 0 < len(lines[-1]) - len("AUTHENTICATE ") < 400
    assert lines[-1] != "AUTHENTICATE +"
    assert decode(lines) == f"user\0user\0{password}".encode()


@pytest.mark.parametrize("chunks", [1, 2, 3])
def test_sasl_plain_exact_multiple_ends_with_plus(chunks: int) -> None:
    # "u\0u\0" is 4 bytes; 300 bytes encode to exactly 400 base64 characters
    password = "x" * (300 * chunks - 4)
    lines = plain_lines("u", password)
    assert len(lines) == chunks + 1
    assert lines[-1] == "AUTHENTICATE +"
    assert all(len(line) == len("AUTHENTICATE ") + 400 for line in lines[:-1])
    assert decode(lines) == f"u\0u\0{password}".encode()


def test_sasl_plain_just_under_a_chunk_has_no_plus() -> None:
    lines = plain_lines("u", "x" * 290)  # 294 bytes -> 392 base64 characters
    assert len(lines) == 1
    assert len(lines[0]) == len("AUTHENTICATE ") + 392
    assert decode(lines) == b"u\0u\0" + b"x" * 290


def test_sasl_plain_padded_to_exact_multiple_ends_with_plus() -> None:
    # 299 bytes also encode to 400 characters (with "=" padding): still needs the "+"
    lines = plain_lines("u", "x" * 295)
    assert lines[0].endswith("=")
    assert lines[1:] == ["AUTHENTICATE +"]


def test_sasl_lines_have_no_line_breaks() -> None:
    for line in plain_lines("user", "a\r\nQUIT :x"):
        assert "\r" not in line and "\n" not in line


def test_the_login_repr_hides_the_password() -> None:
    assert "hunter2" not in repr(SaslLogin("PLAIN", "relaybot", "hunter2"))


# --- PLAIN and EXTERNAL as exchanges -------------------------------------------------------------


def test_plain_answers_the_empty_challenge_once() -> None:
    exchange = Exchange(SaslLogin("PLAIN", "relaybot", "hunter2"))
    assert exchange.first_line() == "AUTHENTICATE PLAIN"
    assert decode(exchange.feed("+")) == b"relaybot\0relaybot\0hunter2"
    assert exchange.finished and exchange.problem() is None
    # A second challenge: the server is out of line, and gets `*`.
    assert exchange.feed("+") == ["AUTHENTICATE *"]
    assert exchange.aborted == "the server sent a challenge after the exchange was complete"


def test_external_sends_an_empty_authzid() -> None:
    exchange = Exchange(SaslLogin("EXTERNAL"))
    assert exchange.feed("+") == ["AUTHENTICATE +"]


@pytest.mark.parametrize(
    ("chunk", "problem"),
    [
        ("abcd", "the server's first challenge was not empty"),
        ("not*base64", "the server's challenge is not base64"),
    ],
)
def test_a_bad_first_challenge_aborts(chunk: str, problem: str) -> None:
    exchange = Exchange(SaslLogin("PLAIN", "relaybot", "hunter2"))
    assert exchange.feed(chunk) == ["AUTHENTICATE *"]
    assert exchange.aborted == problem and exchange.problem() == problem
    assert exchange.feed("+") == []  # nothing more once aborted


def test_a_challenge_without_end_is_refused_past_the_bound() -> None:
    exchange = Exchange(SaslLogin("SCRAM-SHA-256", "user", "pencil"))
    full = "A" * SASL_CHUNK
    for _ in range(MAX_CHALLENGE // SASL_CHUNK):
        assert exchange.feed(full) == []
    assert exchange.feed(full) == ["AUTHENTICATE *"]
    assert exchange.aborted == "the server's challenge is too long"


# --- SCRAM-SHA-256: RFC 7677 section 3 -----------------------------------------------------------

RFC_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = (
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def rfc_exchange() -> Exchange:
    return Exchange(SaslLogin("SCRAM-SHA-256", "user", "pencil"), nonce=RFC_NONCE)


def test_scram_sha_256_rfc_7677_test_vector() -> None:
    exchange = rfc_exchange()
    assert exchange.first_line() == "AUTHENTICATE SCRAM-SHA-256"
    assert exchange.feed("+") == [f"AUTHENTICATE {b64(RFC_CLIENT_FIRST)}"]
    assert exchange.feed(b64(RFC_SERVER_FIRST)) == [f"AUTHENTICATE {b64(RFC_CLIENT_FINAL)}"]
    assert not exchange.finished
    assert exchange.problem() == "the server ended SCRAM before proving it knows the password"
    # The server's signature checks out: the empty final response, and the exchange is done.
    assert exchange.feed(b64(RFC_SERVER_FINAL)) == ["AUTHENTICATE +"]
    assert exchange.finished and exchange.problem() is None and exchange.aborted is None


def test_scram_wrong_server_signature_aborts() -> None:
    exchange = rfc_exchange()
    exchange.feed("+")
    exchange.feed(b64(RFC_SERVER_FIRST))
    # The RFC's signature with its first byte changed.
    signature = bytearray(base64.b64decode(RFC_SERVER_FINAL[2:]))
    signature[0] ^= 1
    assert exchange.feed(b64("v=" + b64(bytes(signature)))) == ["AUTHENTICATE *"]
    assert exchange.aborted is not None and "did not prove itself" in exchange.aborted
    assert exchange.problem() == exchange.aborted and not exchange.finished
    assert "pencil" not in exchange.aborted


def test_scram_server_error_aborts() -> None:
    exchange = rfc_exchange()
    exchange.feed("+")
    exchange.feed(b64(RFC_SERVER_FIRST))
    assert exchange.feed(b64("e=invalid-proof")) == ["AUTHENTICATE *"]
    assert exchange.aborted is not None and "invalid-proof" in exchange.aborted


@pytest.mark.parametrize(
    "server_first",
    [
        "r=someoneelsesnonce,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",  # not our nonce
        "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",  # no server part
        "garbage",
    ],
)
def test_scram_bad_server_first_aborts(server_first: str) -> None:
    exchange = rfc_exchange()
    exchange.feed("+")
    assert exchange.feed(b64(server_first)) == ["AUTHENTICATE *"]
    assert exchange.aborted is not None and exchange.aborted.startswith("SCRAM: bad server-first")


def test_scram_server_first_arriving_in_chunks() -> None:
    # A server nonce long enough that the server-first message spans three lines.
    nonce = RFC_NONCE + "x" * 700
    server_first = f"r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    lines = chunked(server_first)
    assert len(lines) == 3 and len(lines[0]) == len(lines[1]) == SASL_CHUNK
    exchange = rfc_exchange()
    exchange.feed("+")
    assert exchange.feed(lines[0]) == [] and exchange.feed(lines[1]) == []
    final = decode(exchange.feed(lines[2]))
    assert final.startswith(f"c=biws,r={nonce},p=".encode())


def test_scram_challenge_of_exactly_400_ends_with_plus() -> None:
    # The server-first padded so its base64 is exactly 400 characters: a `+` line ends it.
    head = f"r={RFC_NONCE}"
    tail = ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    server_first = head + "y" * (300 - len(head) - len(tail)) + tail
    lines = chunked(server_first)
    assert lines[1:] == ["+"]
    exchange = rfc_exchange()
    exchange.feed("+")
    assert exchange.feed(lines[0]) == []
    assert decode(exchange.feed("+")).startswith(b"c=biws,r=")


# --- ECDSA-NIST256P-CHALLENGE --------------------------------------------------------------------


def pem(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey, password: bytes = b"") -> str:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode()


@pytest.fixture(scope="module")
def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def ecdsa_exchange(key: ec.EllipticCurvePrivateKey) -> Exchange:
    return Exchange(SaslLogin("ECDSA-NIST256P-CHALLENGE", "relaybot", key_pem=pem(key)))


def test_ecdsa_sends_the_account_then_signs_the_raw_challenge(
    p256: ec.EllipticCurvePrivateKey,
) -> None:
    exchange = ecdsa_exchange(p256)
    assert exchange.first_line() == "AUTHENTICATE ECDSA-NIST256P-CHALLENGE"
    assert exchange.feed("+") == [f"AUTHENTICATE {b64('relaybot')}"]
    challenge = os.urandom(32)
    signature = decode(exchange.feed(b64(challenge)))
    assert exchange.finished and exchange.problem() is None
    # What Atheme does: ECDSA_verify(0, challenge, 32, signature, key), the 32 bytes taken as
    # the digest itself. Prehashed is exactly that; a DER signature, or verify() would fail.
    public = p256.public_key()
    public.verify(signature, challenge, ec.ECDSA(Prehashed(hashes.SHA256())))
    # And it is not a signature over the challenge hashed once more.
    with pytest.raises(InvalidSignature):
        public.verify(signature, challenge, ec.ECDSA(hashes.SHA256()))
    assert "PRIVATE KEY" not in repr(SaslLogin("ECDSA-NIST256P-CHALLENGE", "r", key_pem=pem(p256)))


@pytest.mark.parametrize("size", [16, 31, 33, 64])
def test_ecdsa_a_challenge_not_32_bytes_aborts(p256: ec.EllipticCurvePrivateKey, size: int) -> None:
    exchange = ecdsa_exchange(p256)
    exchange.feed("+")
    assert exchange.feed(b64(os.urandom(size))) == ["AUTHENTICATE *"]
    assert exchange.aborted == f"the challenge is {size} bytes, not 32"


def test_load_p256_key_accepts_pkcs8_and_sec1(p256: ec.EllipticCurvePrivateKey) -> None:
    sec1 = p256.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    for text in (pem(p256), sec1):
        assert load_p256_key(text).private_numbers() == p256.private_numbers()


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda: "not a key", "not a PEM private key"),
        (lambda: pem(ec.generate_private_key(ec.SECP384R1())), "the key is on secp384r1"),
        (lambda: pem(ed25519.Ed25519PrivateKey.generate()), "not an EC key"),
        (
            lambda: pem(ec.generate_private_key(ec.SECP256R1()), b"pass"),
            "the key is encrypted",
        ),
    ],
)
def test_load_p256_key_says_what_is_wrong(make: object, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        load_p256_key(make())  # type: ignore[operator]
    assert str(info.value).startswith(problem)
