"""relaybot.irc.channels: JOIN lines, refused JOINs, and whose INVITE the bot follows."""

from __future__ import annotations

from relaybot.config.schema import IrcConfig
from relaybot.irc.channels import JOIN_REFUSED, Channel, invite_allowed, join_line
from relaybot.irc.text import casefold


def test_join_line_with_and_without_a_key() -> None:
    assert join_line("#c", None) == "JOIN #c"
    assert join_line("#c", "") == "JOIN #c"
    assert join_line("#c", "sekrit") == "JOIN #c sekrit"
    assert Channel("#c", "k") == Channel("#c", "k", joined=False)


def test_refused_joins_name_their_reason() -> None:
    assert JOIN_REFUSED == {
        "471": "full",
        "473": "invite only",
        "474": "banned",
        "475": "bad key",
    }


# --- invite_allowed -----------------------------------------------------------------------------


def fold(name: str) -> str:
    return casefold(name, "rfc1459")


def irc(**kwargs: tuple[str, ...]) -> IrcConfig:
    return IrcConfig(host="irc.example.net", nick="relaybot", **kwargs)


def test_invite_nobody_allowed_by_default():
    assert not invite_allowed("alice!a@host", "alice", irc(), fold)


def test_invite_by_account():
    config = irc(invite_accounts=("Alice",))
    assert invite_allowed("whoever!x@anywhere", "alice", config, fold)
    assert invite_allowed("whoever!x@anywhere", "ALICE", config, fold)
    assert not invite_allowed("whoever!x@anywhere", "mallory", config, fold)
    assert not invite_allowed("alice!a@anywhere", None, config, fold)
    assert not invite_allowed("alice!a@anywhere", "", config, fold)


def test_invite_by_hostmask_glob():
    config = irc(invite_from=("*!*@trusted.example", "op!*@*"))
    assert invite_allowed("bob!b@trusted.example", None, config, fold)
    assert invite_allowed("bob!b@TRUSTED.example", None, config, fold)
    assert invite_allowed("OP!x@elsewhere", None, config, fold)
    assert not invite_allowed("bob!b@evil.example", None, config, fold)
    assert not invite_allowed("bob!b@trusted.example.evil", None, config, fold)
    assert not invite_allowed("opx!x@elsewhere", None, config, fold)


def test_invite_glob_with_rfc1459_brackets():
    config = irc(invite_from=("Robot[1]!*@*",))
    assert invite_allowed("robot{1}!u@h", None, config, fold)
    assert invite_allowed("robot[1]!u@h", None, config, fold)
    assert not invite_allowed("robot1!u@h", None, config, fold)
