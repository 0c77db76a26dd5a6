"""relaybot.irc.nickserv: the IDENTIFY line, and when there is none."""

from __future__ import annotations

from relaybot.config.schema import NickservConfig, Secret
from relaybot.irc.nickserv import identify_line

NICKSERV = NickservConfig(Secret("hunter2"), "relayacct")


def test_the_line_names_the_service_and_the_account() -> None:
    assert identify_line(NICKSERV, logged_in=False) == (
        "PRIVMSG NickServ :IDENTIFY relayacct hunter2"
    )
    other = NickservConfig(Secret("pw"), "acct", service="AuthServ")
    assert identify_line(other, logged_in=False) == "PRIVMSG AuthServ :IDENTIFY acct pw"


def test_none_when_sasl_logged_in_or_none_configured() -> None:
    assert identify_line(NICKSERV, logged_in=True) is None
    assert identify_line(None, logged_in=False) is None


def test_the_config_repr_hides_the_password() -> None:
    assert "hunter2" not in repr(NICKSERV)
