"""relaybot.irc.sts and the STS side of relaybot.irc.capabilities: the `sts` value read as
the spec says, the stored policies (expiry, removal, surviving a restart, a bad file), and
which kind of link heeds which part."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from relaybot.config.loader import loads_config
from relaybot.irc.capabilities import Capabilities
from relaybot.irc.session import IrcSession
from relaybot.irc.sts import StsPolicies, StsPolicy, StsValue, parse
from tests.support.sasl_wire import feed

# --- the value -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("port=6697,duration=2592000", StsValue(6697, 2592000)),
        ("duration=300,port=6697,preload", StsValue(6697, 300)),
        ("port=6697", StsValue(6697, None)),
        ("duration=0", StsValue(None, 0)),
        ("port=0,duration=-5", StsValue(None, None)),
        ("port=70000,duration=x", StsValue(None, None)),
        ("", StsValue(None, None)),
        ("unknown=1,port=7000", StsValue(7000, None)),
    ],
)
def test_parse(value: str, expected: StsValue) -> None:
    assert parse(value) == expected


# --- the policies --------------------------------------------------------------------------------


def test_a_policy_lasts_its_duration(tmp_path: Path) -> None:
    policies = StsPolicies(tmp_path / "sts.json")
    policies.learn("IRC.example.net", 6697, 300, now=1000.0)
    assert policies.get("irc.example.net", 1299.0) == StsPolicy(6697, 300, 1300.0)
    assert policies.get("other.example.net", 1000.0) is None
    assert policies.get("irc.example.net", 1300.0) is None  # expired, and dropped
    assert policies.get("irc.example.net", 0.0) is None
    assert json.loads((tmp_path / "sts.json").read_text()) == {"policies": {}}


def test_policies_survive_a_restart(tmp_path: Path) -> None:
    StsPolicies(tmp_path / "state" / "sts.json").learn("irc.example.net", 6697, 300, 1000.0)
    again = StsPolicies(tmp_path / "state" / "sts.json")
    assert again.get("irc.example.net", 1100.0) == StsPolicy(6697, 300, 1300.0)


def test_duration_zero_removes_the_policy(tmp_path: Path, logs: list[dict[str, object]]) -> None:
    policies = StsPolicies(tmp_path / "sts.json")
    policies.learn("irc.example.net", 6697, 300, 1000.0)
    policies.learn("irc.example.net", 6697, 0, 1001.0)
    assert policies.get("irc.example.net", 1002.0) is None
    assert StsPolicies(tmp_path / "sts.json").get("irc.example.net", 1002.0) is None
    assert [entry["event"] for entry in logs] == ["sts_policy_stored", "sts_policy_removed"]


def test_reschedule_counts_from_the_disconnect(tmp_path: Path) -> None:
    policies = StsPolicies(tmp_path / "sts.json")
    policies.learn("irc.example.net", 6697, 300, 1000.0)
    policies.reschedule("irc.example.net", 1200.0)
    assert policies.get("irc.example.net", 1450.0) == StsPolicy(6697, 300, 1500.0)
    policies.reschedule("nowhere", 1200.0)  # no policy: nothing happens
    assert policies.get("nowhere", 1200.0) is None


def test_a_connection_longer_than_the_duration_keeps_its_policy(tmp_path: Path) -> None:
    # Connected at 1000 with duration 300, still connected at 5000: the policy counts from the
    # last moment connected, so the disconnect (or the hourly renewal) at 5000 keeps it.
    policies = StsPolicies(tmp_path / "sts.json")
    policies.learn("irc.example.net", 6697, 300, 1000.0)
    policies.reschedule("irc.example.net", 5000.0)
    assert policies.get("irc.example.net", 5200.0) == StsPolicy(6697, 300, 5300.0)
    assert StsPolicies(tmp_path / "sts.json").get("irc.example.net", 5200.0) is not None


def test_an_unreadable_file_is_logged_and_starts_empty(
    tmp_path: Path, logs: list[dict[str, object]]
) -> None:
    (tmp_path / "sts.json").write_text('{"policies": {"h": {"port": "x"}}}')
    policies = StsPolicies(tmp_path / "sts.json")
    assert policies.get("h", 0.0) is None
    assert logs[0]["event"] == "sts_policies_unreadable"
    policies.learn("h", 6697, 60, 0.0)  # and a new policy writes a good file
    assert StsPolicies(tmp_path / "sts.json").get("h", 1.0) == StsPolicy(6697, 60, 60.0)


def test_without_a_file_policies_live_in_memory() -> None:
    policies = StsPolicies(None)
    policies.learn("h", 6697, 60, 0.0)
    assert policies.get("h", 1.0) is not None


# --- in CAP negotiation --------------------------------------------------------------------------


def test_plaintext_with_an_upgrade_policy_stops_negotiation(
    logs: list[dict[str, object]],
) -> None:
    caps = Capabilities(None)
    caps.reset(secure=False)
    # The first of two LS lines already says: nothing is requested, CAP END never goes.
    assert feed(caps, ":irc.test CAP * LS * :multi-prefix sts=port=6697,duration=300") == []
    assert caps.sts_upgrade == 6697 and caps.sts_policy is None  # no persistence from plain
    assert feed(caps, ":irc.test CAP * LS :server-time") == []
    assert not caps.ended
    assert [entry["event"] for entry in logs] == ["sts_upgrade"]


def test_plaintext_with_only_a_duration_goes_on() -> None:
    caps = Capabilities(None)
    assert feed(caps, ":irc.test CAP * LS :multi-prefix sts=duration=300") == [
        "CAP REQ :multi-prefix"
    ]
    assert caps.sts_upgrade is None and caps.sts_policy is None


def test_tls_keeps_the_persistence_policy_and_negotiates_on() -> None:
    caps = Capabilities(None)
    caps.reset(secure=True)
    assert feed(caps, ":irc.test CAP * LS :multi-prefix sts=port=6697,duration=300") == [
        "CAP REQ :multi-prefix"
    ]
    assert caps.sts_upgrade is None  # the port means nothing on a TLS link
    assert caps.sts_policy == StsValue(6697, 300)


def test_tls_without_a_duration_is_no_policy() -> None:
    caps = Capabilities(None)
    caps.reset(secure=True)
    feed(caps, ":irc.test CAP * LS :sts=port=6697")
    assert caps.sts_policy is None


def test_cap_new_with_sts_counts_too() -> None:
    caps = Capabilities(None)
    caps.reset(secure=False)
    feed(caps, ":irc.test CAP * LS :multi-prefix cap-notify")
    caps.registered()
    assert feed(caps, ":irc.test CAP relaybot NEW :sts=port=6697 away-notify") == []
    assert caps.sts_upgrade == 6697


def test_reset_forgets_the_upgrade() -> None:
    caps = Capabilities(None)
    feed(caps, ":irc.test CAP * LS :sts=port=6697")
    caps.reset(secure=True)
    assert caps.sts_upgrade is None and caps.secure


# --- the session: which link may set a policy ----------------------------------------------------


@pytest.mark.parametrize(("verify", "kept"), [("true", True), ("false", False)])
def test_only_a_verified_tls_link_sets_a_policy(verify: str, kept: bool, tmp_path: Path) -> None:
    config = loads_config(f'[irc]\nhost = "h"\nnick = "n"\ntls = true\ntls_verify = {verify}\n')
    session = IrcSession(
        config.networks[0].irc,
        on_event=lambda _: None,
        on_forget=lambda _: None,
        sts_file=tmp_path / "s",
    )
    session.link = ("h", 6697, True)
    session.caps.reset(secure=True)
    session.caps.feed("CAP", ["*", "LS", "sts=port=1,duration=300"])
    session.sts_negotiated()
    assert (session.sts.get("h", time.time()) is not None) is kept
    assert (tmp_path / "s").exists() is kept
    policy = session.sts.get("h", time.time())
    if kept:  # the port of the TLS link itself: the port key means nothing on TLS
        assert policy is not None and (policy.port, policy.duration) == (6697, 300)
