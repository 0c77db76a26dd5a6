"""Unit tests for relaybot.bridge.members: who is in which channel, with which status."""

from __future__ import annotations

from relaybot.bridge.members import Members
from relaybot.irc.text import casefold

CHAN = ("net", "#chan")
OTHER = ("net", "#other")


def test_names_joins_parts_and_status() -> None:
    members = Members(lambda name: casefold(name, "rfc1459"))
    members.start(CHAN, "relaybot")
    members.names(CHAN, ["@Alice", "+bob", "~&carol"])
    assert members.status_of(CHAN, "ALICE") == "@"
    assert members.status_of(CHAN, "carol") == "~&"
    members.status_changed(CHAN, "bob", "@", added=True)
    members.status_changed(CHAN, "bob", "+", added=False)
    assert members.status_of(CHAN, "bob") == "@"
    members.left(CHAN, "alice")
    assert members.of(CHAN) == {"relaybot", "bob", "carol"}


def test_nick_changes_and_quits_reach_every_channel() -> None:
    members = Members(str.lower)
    members.names(CHAN, ["@alice"])
    members.names(OTHER, ["alice", "bob"])
    assert members.gone_everywhere("Alice", "alicia") == [CHAN, OTHER]
    assert members.status_of(CHAN, "alicia") == "@"
    assert members.gone_everywhere("bob") == [OTHER]
    assert members.of(OTHER) == {"alicia"}
    members.forget(CHAN)
    assert CHAN not in members and OTHER in members
