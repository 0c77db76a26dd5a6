"""Unit tests for relaybot.policy.permissions: IRC globs, masks, ignore matching and operator
rights.

The security property: a nick alone never grants anything."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaybot.config.schema import OperatorConfig
from relaybot.irc.events import Origin
from relaybot.irc.text import casefold
from relaybot.policy.permissions import (
    Permissions,
    Rights,
    any_mask_matches,
    glob_match,
    mask_matches,
    normalise_mask,
)


def rfc(text: str) -> str:
    return casefold(text, "rfc1459")


def ascii_fold(text: str) -> str:
    return casefold(text, "ascii")


ALICE = Origin("alice", "~al", "home.example", "alice_acct")
ALICE_NO_ACCOUNT = Origin("alice", "~al", "home.example")
NICK_ONLY = Origin("alice")  # what a server-less source (or a bare nick) looks like

# --- glob_match -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("glob", "text"),
    [
        ("alice", "alice"),
        ("ALICE", "alice"),
        ("a*", "alice"),
        ("*", ""),
        ("*", "anything at all"),
        ("a?ice", "alice"),
        ("*!*@*.example", "alice!~al@home.example"),
        ("[x]", "[x]"),  # brackets are nick characters, not a character class
        ("[x]", "{X}"),  # ... and fold like letters under rfc1459
        ("a\\b", "A|B"),
        ("x^y", "X~Y"),
        ("a.b", "a.b"),  # regex metacharacters are literal
        ("(a+)", "(a+)"),
        ("line*", "line\nbreak"),
    ],
)
def test_glob_matches(glob: str, text: str):
    assert glob_match(glob, text, rfc)


@pytest.mark.parametrize(
    ("glob", "text"),
    [
        ("alice", "alicex"),
        ("alice", "xalice"),
        ("a?ice", "aice"),
        ("a?ice", "allice"),
        ("[x]", "x"),  # not a character class
        ("[ab]", "a"),
        ("a.b", "axb"),
        ("a+", "aa"),
        ("*.example", "home.example.evil"),
        ("?", ""),
    ],
)
def test_glob_does_not_match(glob: str, text: str):
    assert not glob_match(glob, text, rfc)


def test_glob_ascii_casemapping_keeps_brackets_distinct():
    assert not glob_match("[x]", "{x}", ascii_fold)
    assert glob_match("[X]", "[x]", ascii_fold)


NICKISH = st.text(alphabet="abcXYZ[]{}\\|^~-_`.+()$", max_size=12)


@given(NICKISH)
def test_glob_literal_text_matches_itself(text: str):
    assert glob_match(text, text, rfc)


@given(NICKISH, NICKISH)
def test_glob_without_wildcards_is_folded_equality(a: str, b: str):
    assert glob_match(a, b, rfc) == (rfc(a) == rfc(b))


@given(NICKISH)
def test_star_matches_everything(text: str):
    assert glob_match("*", text, rfc)


# --- normalise_mask ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        ("alice", "alice"),
        ("  alice  ", "alice"),
        ("al*", "al*"),
        ("alice!al", "alice!al@*"),
        ("alice!al@host", "alice!al@host"),
        ("*@host", "*!*@host"),
        ("al@host", "*!al@host"),
        ("alice!@host", "alice!*@host"),
        ("!al@", "*!al@*"),
        ("$a:acct", "$a:acct"),
        ("$a:acct!x@y", "$a:acct!x@y"),  # an account mask is left alone
    ],
)
def test_normalise_mask(mask: str, expected: str):
    assert normalise_mask(mask) == expected


@pytest.mark.parametrize("mask", ["alice", "alice!al", "*@host", "a!b@c", "$a:x"])
def test_normalise_mask_is_idempotent(mask: str):
    once = normalise_mask(mask)
    assert normalise_mask(once) == once


# --- mask_matches -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mask", "origin", "matches"),
    [
        ("alice", ALICE, True),
        ("ALICE", ALICE, True),
        ("al*", ALICE, True),
        ("bob", ALICE, False),
        ("alice", NICK_ONLY, True),  # a nick glob needs nothing but the nick
        ("alice!~al@home.example", ALICE, True),
        ("*!*@home.example", ALICE, True),
        ("*@home.example", ALICE, True),
        ("*@*.example", ALICE, True),
        ("*!*@other.example", ALICE, False),
        ("alice!~al", ALICE, True),
        ("alice!root", ALICE, False),
        ("$a:alice_acct", ALICE, True),
        ("$a:ALICE_ACCT", ALICE, True),
        ("$a:alice_*", ALICE, True),
        ("$a:bob", ALICE, False),
        ("$a:*", ALICE_NO_ACCOUNT, False),  # no account: no account mask matches
        ("$a:alice", ALICE_NO_ACCOUNT, False),
    ],
)
def test_mask_matches(mask: str, origin: Origin, matches: bool):
    assert mask_matches(mask, origin, rfc) is matches


@pytest.mark.parametrize("mask", ["*!*@*", "alice!*@*", "*@*", "alice!*", "*!*"])
def test_hostmask_never_matches_origin_without_user_and_host(mask: str):
    assert not mask_matches(mask, NICK_ONLY, rfc)
    assert not mask_matches(mask, Origin("alice", "~al", ""), rfc)
    assert not mask_matches(mask, Origin("alice", "", "home.example"), rfc)


def test_mask_matching_uses_casemapping():
    origin = Origin("dan[1]", "~d", "h.example")
    assert mask_matches("DAN{1}", origin, rfc)
    assert mask_matches("dan{1}!*@*", origin, rfc)
    assert not mask_matches("dan{1}", origin, ascii_fold)


def test_any_mask_matches():
    assert any_mask_matches(["bob", "*@home.example"], ALICE, rfc)
    assert not any_mask_matches(["bob", "$a:bob"], ALICE, rfc)
    assert not any_mask_matches([], ALICE, rfc)


# --- Permissions ------------------------------------------------------------------------------

OPERATORS = OperatorConfig(
    accounts=("root_acct", "staff_*"),
    hostmasks=("admin!~adm@trusted.example", "*!*@*.ops.example"),
)


def rights(
    origin: Origin, status: str = "", config: OperatorConfig = OPERATORS, fold=rfc
) -> Rights:
    return Permissions(config).rights(origin, status, fold)


@pytest.mark.parametrize(
    "origin",
    [
        Origin("anyone", "x", "y", "root_acct"),
        Origin("anyone", "x", "y", "ROOT_ACCT"),
        Origin("anyone", "", "", "staff_bob"),  # an account needs no user@host
        Origin("admin", "~adm", "trusted.example"),
        Origin("ADMIN", "~adm", "TRUSTED.example"),
        Origin("whoever", "u", "box.ops.example"),
    ],
)
def test_operators(origin: Origin):
    permissions = Permissions(OPERATORS)
    assert permissions.is_operator(origin, rfc)
    assert rights(origin) is Rights.OPERATOR
    assert not permissions.impersonates(origin, rfc)


@pytest.mark.parametrize(
    "origin",
    [
        Origin("admin"),  # the right nick, nothing else known
        Origin("admin", "~adm", "evil.example"),  # right nick and user, wrong host
        Origin("admin", "evil", "trusted.example"),  # right nick and host, wrong user
        Origin("admin", "~adm", "evil.example", "someone_else"),
        Origin("root_acct", "x", "y"),  # the account's name worn as a nick
        Origin("root_acct", "x", "y", "not_root"),
        Origin("staff_bob", "x", "y", None),
        Origin("whoever", "u", "ops.example.evil"),
        Origin("whoever", "u", "ops.example"),  # *.ops.example needs a subdomain
        Origin("whoever", "", "", None),
    ],
)
def test_a_nick_alone_grants_nothing(origin: Origin):
    assert not Permissions(OPERATORS).is_operator(origin, rfc)
    assert rights(origin) is Rights.NONE
    # even a channel status grants nothing while channel_ops is off
    assert rights(origin, "@") is Rights.NONE


def test_no_config_means_no_operators():
    permissions = Permissions(OperatorConfig())
    for origin in (ALICE, NICK_ONLY, Origin("x", "y", "z", "acct")):
        assert not permissions.is_operator(origin, rfc)
        assert permissions.rights(origin, "~&@", rfc) is Rights.NONE


def test_empty_account_is_not_an_account():
    permissions = Permissions(OperatorConfig(accounts=("*",)))
    assert not permissions.is_operator(Origin("x", "u", "h", ""), rfc)
    assert not permissions.is_operator(Origin("x", "u", "h", None), rfc)
    assert permissions.is_operator(Origin("x", "u", "h", "any"), rfc)


def test_hostmask_operator_casemapping():
    config = OperatorConfig(hostmasks=("dan[1]!~d@h.example",))
    origin = Origin("DAN{1}", "~d", "h.example")
    assert Permissions(config).is_operator(origin, rfc)
    assert not Permissions(config).is_operator(origin, ascii_fold)


def test_hostmask_operator_without_user_host_never_matches():
    config = OperatorConfig(hostmasks=("*!*@*",))
    assert not Permissions(config).is_operator(Origin("alice"), rfc)
    assert Permissions(config).is_operator(ALICE_NO_ACCOUNT, rfc)


# --- channel operators ------------------------------------------------------------------------

CHANNEL_OPS = OperatorConfig(channel_ops=True)


@pytest.mark.parametrize("status", ["@", "&", "~", "@+", "+@", "~@%+"])
def test_channel_ops_get_channel_rights(status: str):
    assert rights(ALICE_NO_ACCOUNT, status, CHANNEL_OPS) is Rights.CHANNEL_OPERATOR


@pytest.mark.parametrize("status", ["", "+", "%", "%+", "!", "*"])
def test_halfops_voice_and_others_get_nothing(status: str):
    assert rights(ALICE_NO_ACCOUNT, status, CHANNEL_OPS) is Rights.NONE


def test_channel_ops_off_by_default():
    assert rights(ALICE_NO_ACCOUNT, "@", OperatorConfig()) is Rights.NONE


def test_operator_outranks_channel_status():
    config = OperatorConfig(accounts=("alice_acct",), channel_ops=True)
    assert rights(ALICE, "", config) is Rights.OPERATOR
    assert rights(ALICE, "@", config) is Rights.OPERATOR


def test_rights_are_ordered():
    assert Rights.NONE < Rights.CHANNEL_OPERATOR < Rights.OPERATOR


# --- impersonation ----------------------------------------------------------------------------


def test_impersonating_a_hostmask_operator_nick():
    permissions = Permissions(OPERATORS)
    assert permissions.impersonates(Origin("admin", "x", "evil.example"), rfc)
    assert permissions.impersonates(Origin("ADMIN"), rfc)


def test_impersonating_an_account_name():
    permissions = Permissions(OPERATORS)
    assert permissions.impersonates(Origin("root_acct", "x", "y"), rfc)
    assert permissions.impersonates(Origin("Root_Acct", "x", "y", "other"), rfc)


def test_impersonation_with_rfc1459_folding():
    permissions = Permissions(OperatorConfig(hostmasks=("op[1]!~o@h.example",)))
    assert permissions.impersonates(Origin("OP{1}", "x", "evil"), rfc)


def test_wildcard_entries_name_no_nick():
    permissions = Permissions(OPERATORS)
    # "staff_*" and "*!*@*.ops.example" name nobody in particular
    assert not permissions.impersonates(Origin("staff_bob", "x", "y"), rfc)
    assert not permissions.impersonates(Origin("*", "x", "y"), rfc)


def test_the_real_operator_is_not_an_impersonator():
    permissions = Permissions(OPERATORS)
    assert not permissions.impersonates(Origin("admin", "~adm", "trusted.example"), rfc)
    assert not permissions.impersonates(Origin("root_acct", "x", "y", "root_acct"), rfc)


def test_unrelated_nick_is_not_an_impersonator():
    assert not Permissions(OPERATORS).impersonates(Origin("carol", "c", "h"), rfc)
