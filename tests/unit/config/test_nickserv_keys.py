"""The `[irc.nickserv]` table: the IDENTIFY fallback's password, account and service, and bad
values naming their key."""

from __future__ import annotations

import pytest

from relaybot.config.loader import loads_config, redacted
from relaybot.config.schema import Config, ConfigError

MINIMAL = '[irc]\nhost = "irc.example.net"\nnick = "relaybot"\n'


@pytest.fixture(autouse=True)
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAYBOT_TEST_PW", "s3cret")


def load(table: str) -> Config:
    return loads_config(MINIMAL + "[irc.nickserv]\n" + table)


def error(table: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(table)
    return str(info.value)


def test_left_out_there_is_no_fallback() -> None:
    assert loads_config(MINIMAL).networks[0].irc.nickserv is None


def test_account_defaults_to_the_nick_and_service_to_nickserv() -> None:
    nickserv = load('password_env = "RELAYBOT_TEST_PW"\n').networks[0].irc.nickserv
    assert nickserv is not None
    assert (nickserv.account, nickserv.service) == ("relaybot", "NickServ")
    assert nickserv.password.value == "s3cret"


def test_account_and_service_as_given() -> None:
    config = load('password_env = "RELAYBOT_TEST_PW"\naccount = "acct"\nservice = "AuthServ"\n')
    nickserv = config.networks[0].irc.nickserv
    assert nickserv is not None and (nickserv.account, nickserv.service) == ("acct", "AuthServ")
    assert "s3cret" not in repr(config) and "s3cret" not in str(redacted(config))


def test_the_service_may_name_its_server() -> None:
    # Only the real services get the password, even while a services split frees the nick.
    text = 'password_env = "RELAYBOT_TEST_PW"\nservice = "NickServ@services.libera.chat"\n'
    nickserv = load(text).networks[0].irc.nickserv
    assert nickserv is not None and nickserv.service == "NickServ@services.libera.chat"


def test_an_empty_account_is_the_nick() -> None:
    nickserv = load('password_env = "RELAYBOT_TEST_PW"\naccount = ""\n').networks[0].irc.nickserv
    assert nickserv is not None and nickserv.account == "relaybot"


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("", "irc.nickserv.password_file: missing (give password_file or password_env)"),
        ('password = "x"\n', "irc.nickserv.password: secrets are not accepted inline"),
        (
            'password_env = "RELAYBOT_TEST_PW"\naccount = "two words"\n',
            "irc.nickserv.account: 'two words' must be one word",
        ),
        (
            'password_env = "RELAYBOT_TEST_PW"\nservice = "Nick Serv"\n',
            "irc.nickserv.service: 'Nick Serv' is not a valid nick",
        ),
        (
            'password_env = "RELAYBOT_TEST_PW"\nservice = "NickServ@"\n',
            "irc.nickserv.service: 'NickServ@' must be a nick or nick@server",
        ),
        (
            'password_env = "RELAYBOT_TEST_PW"\naccount = 3\n',
            "irc.nickserv.account: expected a string, got integer",
        ),
        ('password_env = "RELAYBOT_TEST_PW"\nnick = "x"\n', "irc.nickserv.nick: unknown key"),
    ],
)
def test_bad_values_name_the_key(table: str, expected: str) -> None:
    assert error(table).startswith(expected)
