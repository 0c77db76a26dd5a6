"""relaybot.irc.tracking: accounts and bot flags as JOIN (extended-join), ACCOUNT, WHO/WHOX,
WHOIS 335, NICK and QUIT report them, casefolded and bounded."""

from __future__ import annotations

import pytest

from relaybot.irc import tracking
from relaybot.irc.text import casefold
from relaybot.irc.tracking import WHOX_TOKEN, UserTracker, whox_fields


def users() -> UserTracker:
    return UserTracker(lambda name: casefold(name, "rfc1459"))


def test_extended_join_and_account_notify() -> None:
    tracker = users()
    tracker.account("Alice", "alice")  # :Alice!a@h JOIN #c alice :Real Name
    tracker.account("Bob", "*")  # :Bob!b@h JOIN #c * :Real Name
    assert tracker.account_of("alice", {}) == "alice"
    assert tracker.account_of("BOB", {}) is None
    tracker.account("Bob", "bobacct")  # :Bob!b@h ACCOUNT bobacct
    assert tracker.account_of("bob", {}) == "bobacct"
    tracker.account("Bob", "*")  # :Bob!b@h ACCOUNT *  (logged out)
    assert tracker.account_of("bob", {}) is None
    assert tracker.accounts == {"alice": "alice", "bob": None}


@pytest.mark.parametrize("nobody", [None, "", "*", "0"])
def test_every_way_of_saying_not_logged_in(nobody: str | None) -> None:
    tracker = users()
    tracker.account("carol", nobody)
    assert tracker.accounts == {"carol": None}


def test_the_account_tag_wins_over_what_was_said_before() -> None:
    tracker = users()
    tracker.account("dave", "old")
    assert tracker.account_of("dave", {"account": "new"}) == "new"
    assert tracker.account_of("dave", {"account": ""}) == "old"  # an empty tag says nothing
    assert tracker.account_of("erin", {}) is None


def test_nicks_fold_with_the_casemapping() -> None:
    tracker = users()
    tracker.account("Robot[1]", "robot")
    tracker.whois_bot("Robot[1]")
    assert tracker.account_of("robot{1}", {}) == "robot"
    assert tracker.is_bot("ROBOT{1}", {})


def test_nick_change_carries_account_and_bot_flag() -> None:
    tracker = users()
    tracker.account("alice", "acct")
    tracker.whois_bot("alice")
    tracker.renamed("Alice", "Alicia")
    assert tracker.account_of("alicia", {}) == "acct" and tracker.is_bot("alicia", {})
    assert tracker.account_of("alice", {}) is None and not tracker.is_bot("alice", {})


def test_rename_of_someone_unknown_adds_nothing() -> None:
    tracker = users()
    tracker.renamed("ghost", "spirit")
    assert tracker.accounts == {} and tracker.bots == set()


def test_quit_forgets_everything_about_the_nick() -> None:
    tracker = users()
    tracker.account("alice", "acct")
    tracker.whois_bot("alice")
    tracker.account("bob", "bob")
    tracker.quit("ALICE")
    assert tracker.accounts == {"bob": "bob"} and tracker.bots == set()


@pytest.mark.parametrize("tag", ["bot", "draft/bot", "inspircd.org/bot"])
def test_bot_tags(tag: str) -> None:
    tracker = users()
    assert tracker.is_bot("helper", {tag: ""})
    assert not tracker.is_bot("helper", {"account": "helper"})


def test_who_flags_set_and_clear_the_bot_flag() -> None:
    tracker = users()
    # :srv 352 me #c user host srv helper H*B :0 real   (ISUPPORT BOT=B)
    tracker.who_reply("helper", "H*B", None, "B")
    assert tracker.is_bot("helper", {})
    assert tracker.accounts == {}  # a plain WHO carries no account
    tracker.who_reply("helper", "H", None, "B")
    assert not tracker.is_bot("helper", {})
    tracker.who_reply("other", "HB", None, None)  # no BOT in ISUPPORT: no flag to read
    assert tracker.bots == set()


def test_whox_reply_gives_flags_and_account() -> None:
    tracker = users()
    # :srv 354 me 171 user host helper H*B helperacct
    fields = whox_fields([WHOX_TOKEN, "user", "host", "helper", "H*B", "helperacct"])
    assert fields == ("helper", "H*B", "helperacct")
    tracker.who_reply(*fields, "B")
    assert tracker.account_of("helper", {}) == "helperacct" and tracker.is_bot("helper", {})
    tracker.who_reply("nobody", "H", "0", "B")
    assert tracker.accounts["nobody"] is None


def test_whox_replies_to_other_queries_are_not_ours() -> None:
    assert whox_fields(["999", "user", "host", "helper", "H", "acct"]) is None
    assert whox_fields([WHOX_TOKEN, "user", "host", "helper", "H"]) is None


def test_the_who_query_asks_for_accounts_only_with_whox() -> None:
    tracker = users()
    assert tracker.who_query("#c") == "WHO #c"
    tracker.isupport(["CHANTYPES=#", "are supported by this server"])
    assert tracker.who_query("#c") == "WHO #c"
    tracker.isupport(["WHOX", "are supported by this server"])
    assert tracker.who_query("#c") == f"WHO #c %tuhnfa,{WHOX_TOKEN}"


def test_clear_is_a_new_connection() -> None:
    tracker = users()
    tracker.isupport(["WHOX"])
    tracker.account("alice", "acct")
    tracker.whois_bot("helper")
    tracker.clear()
    assert (tracker.accounts, tracker.bots, tracker.whox) == ({}, set(), False)


def test_accounts_stay_within_the_cap_dropping_the_oldest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracking, "MAX_TRACKED_USERS", 3)
    tracker = users()
    for n in range(5):
        tracker.account(f"user{n}", f"acct{n}")
    assert list(tracker.accounts) == ["user2", "user3", "user4"]


def test_bots_stay_within_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking, "MAX_TRACKED_USERS", 3)
    tracker = users()
    for n in range(5):
        tracker.who_reply(f"bot{n}", "HB", None, "B")
        tracker.whois_bot(f"other{n}")
    assert len(tracker.bots) <= 3 and "other4" in tracker.bots
