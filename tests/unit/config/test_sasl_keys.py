"""The `[irc.sasl]` keys beyond PLAIN and EXTERNAL (test_schema.py has those): each mechanism's
credentials, and a bad value naming its key."""

from __future__ import annotations

import pytest

from relaybot.config.loader import loads_config
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
    assert config.irc.sasl is not None
    assert config.irc.sasl.mechanism == "SCRAM-SHA-256"
    assert config.irc.sasl.username == "acct"
    assert config.irc.sasl.password is not None and config.irc.sasl.password.value == "s3cret"
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
        "irc.sasl.mechanism: must be one of PLAIN, EXTERNAL, SCRAM-SHA-256, got 'SCRAM-SHA-1'"
    )
