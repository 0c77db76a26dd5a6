"""The `[irc.sasl]` keys beyond PLAIN and EXTERNAL (test_schema.py has those): each mechanism's
credentials, and a bad value naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from relaybot.config.loader import loads_config, redacted
from relaybot.config.schema import Config, ConfigError

MINIMAL = '[irc]\nhost = "irc.example.net"\nnick = "relaybot"\n'


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAYBOT_TEST_PW", "s3cret")


def load(sasl: str, base_dir: object = None) -> Config:
    return loads_config(MINIMAL + "[irc.sasl]\n" + sasl, base_dir=base_dir)  # type: ignore[arg-type]


def error(sasl: str, base_dir: object = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(sasl, base_dir)
    return str(info.value)


def test_scram_takes_a_username_and_password() -> None:
    config = load(
        'mechanism = "SCRAM-SHA-256"\nusername = "acct"\npassword_env = "RELAYBOT_TEST_PW"\n'
    )
    assert config.networks[0].irc.sasl is not None
    assert config.networks[0].irc.sasl.mechanism == "SCRAM-SHA-256"
    assert config.networks[0].irc.sasl.username == "acct"
    assert (
        config.networks[0].irc.sasl.password is not None
        and config.networks[0].irc.sasl.password.value == "s3cret"
    )
    assert "s3cret" not in repr(config)


def test_scram_without_a_password_names_the_key() -> None:
    message = error('mechanism = "SCRAM-SHA-256"\nusername = "acct"\n')
    assert message == "irc.sasl.password_file: missing (give password_file or password_env)"


def test_scram_without_a_username_names_the_key() -> None:
    message = error('mechanism = "SCRAM-SHA-256"\npassword_env = "RELAYBOT_TEST_PW"\n')
    assert message == "irc.sasl.username: missing (required)"


def test_an_unknown_mechanism_lists_the_known_ones() -> None:
    message = error(
        'mechanism = "SCRAM-SHA-1"\nusername = "a"\npassword_env = "RELAYBOT_TEST_PW"\n'
    )
    assert message == (
        "irc.sasl.mechanism: must be one of PLAIN, EXTERNAL, SCRAM-SHA-256,"
        " ECDSA-NIST256P-CHALLENGE, got 'SCRAM-SHA-1'"
    )


# --- ECDSA-NIST256P-CHALLENGE --------------------------------------------------------------------

ECDSA = 'mechanism = "ECDSA-NIST256P-CHALLENGE"\nusername = "acct"\n'


def write_key(path: Path, curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(curve)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    return key


def test_ecdsa_reads_the_key_file_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    key = write_key(tmp_path / "keys" / "sasl.pem", ec.SECP256R1())
    config = load(ECDSA + 'key_file = "keys/sasl.pem"\n', tmp_path)
    sasl = config.networks[0].irc.sasl
    assert sasl is not None and sasl.mechanism == "ECDSA-NIST256P-CHALLENGE"
    assert sasl.username == "acct" and sasl.password is None and sasl.key is not None
    loaded = serialization.load_pem_private_key(sasl.key.value.encode(), None)
    assert isinstance(loaded, ec.EllipticCurvePrivateKey)
    assert loaded.private_numbers() == key.private_numbers()
    assert "PRIVATE KEY" not in repr(config) and "PRIVATE KEY" not in str(redacted(config))


def test_ecdsa_without_a_key_names_the_key() -> None:
    assert error(ECDSA) == "irc.sasl.key_file: missing (give key_file or key_env)"


def test_ecdsa_missing_key_file_names_the_key(tmp_path: Path) -> None:
    message = error(ECDSA + 'key_file = "nowhere.pem"\n', tmp_path)
    assert message.startswith(f"irc.sasl.key_file: cannot read {tmp_path / 'nowhere.pem'}")


def test_ecdsa_key_on_another_curve_names_the_key(tmp_path: Path) -> None:
    write_key(tmp_path / "p384.pem", ec.SECP384R1())
    message = error(ECDSA + 'key_file = "p384.pem"\n', tmp_path)
    assert message == (
        "irc.sasl.key_file: the key is on secp384r1; ECDSA-NIST256P-CHALLENGE needs P-256"
    )


def test_ecdsa_key_that_is_no_key_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n")
    message = error(ECDSA + 'key_file = "junk.pem"\n', tmp_path)
    assert message == "irc.sasl.key_file: not a PEM private key"


def test_ecdsa_key_from_the_environment_is_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAYBOT_TEST_KEY", "garbage")
    message = error(ECDSA + 'key_env = "RELAYBOT_TEST_KEY"\n')
    assert message == "irc.sasl.key_env: not a PEM private key"


def test_ecdsa_inline_key_refused() -> None:
    message = error(ECDSA + 'key = "-----BEGIN PRIVATE KEY-----"\n')
    assert message.startswith("irc.sasl.key: secrets are not accepted inline")


def test_ecdsa_without_a_username_names_the_key(tmp_path: Path) -> None:
    write_key(tmp_path / "k.pem", ec.SECP256R1())
    message = error('mechanism = "ECDSA-NIST256P-CHALLENGE"\nkey_file = "k.pem"\n', tmp_path)
    assert message == "irc.sasl.username: missing (required)"


# --- required ------------------------------------------------------------------------------------

PLAIN = 'username = "acct"\npassword_env = "RELAYBOT_TEST_PW"\n'


def test_required_defaults_to_false_and_reads_true() -> None:
    sasl = load(PLAIN).networks[0].irc.sasl
    assert sasl is not None and sasl.required is False
    sasl = load(PLAIN + "required = true\n").networks[0].irc.sasl
    assert sasl is not None and sasl.required is True


def test_required_must_be_a_boolean() -> None:
    assert error(PLAIN + 'required = "yes"\n') == (
        "irc.sasl.required: expected a boolean, got string"
    )
