"""relaybot.irc.capabilities fed server lines, as a server sends them: the lines it answers
with, what it agreed, how SASL ended (the mechanisms' own exchanges: test_sasl.py)."""

from __future__ import annotations

import base64
from functools import partial

import pytest

from relaybot.irc.capabilities import WANTED_CAPS, Capabilities
from relaybot.irc.sasl import Exchange, SaslLogin, authenticate_lines, plain_message
from tests.support.sasl_wire import b64, decode, feed

PLAIN = SaslLogin("PLAIN", "relaybot", "hunter2")


def events(logs: list[dict[str, object]]) -> list[object]:
    return [entry["event"] for entry in logs]


# --- CAP ----------------------------------------------------------------------------------------


def test_multiline_ls_302_then_sasl_plain_then_903(logs: list[dict[str, object]]) -> None:
    caps = Capabilities(PLAIN)
    # (An unknown capability with a value: `sts` on this plaintext link would end it instead.)
    offer = ":irc.test CAP * LS * :multi-prefix sasl=PLAIN,EXTERNAL draft/other=port=6697"
    assert feed(caps, offer) == []
    assert caps.offered["sasl"] == "PLAIN,EXTERNAL" and caps.offered["draft/other"] == "port=6697"
    # The last line of the listing: request what we use, sasl first, the rest in our order.
    assert feed(caps, ":irc.test CAP * LS :extended-join account-tag draft/unknown") == [
        "CAP REQ :sasl account-tag extended-join multi-prefix"
    ]
    ack = ":irc.test CAP relaybot ACK :sasl account-tag extended-join multi-prefix"
    assert feed(caps, ack) == ["AUTHENTICATE PLAIN"]
    assert caps.enabled == {"sasl", "account-tag", "extended-join", "multi-prefix"}
    assert not caps.ended  # registration waits for SASL
    lines = feed(caps, "AUTHENTICATE +")
    assert lines == authenticate_lines(plain_message("relaybot", "hunter2"))
    assert decode(lines) == b"relaybot\0relaybot\0hunter2"
    assert feed(caps, ":irc.test 900 relaybot relaybot!r@h acct :You are now logged in") == []
    assert caps.account == "acct"
    assert feed(caps, ":irc.test 903 relaybot :SASL authentication successful") == ["CAP END"]
    assert caps.ended and caps.sasl_outcome == "success"
    assert feed(caps, ":irc.test 903 relaybot :again") == []  # CAP END goes once
    assert events(logs) == ["caps_enabled", "logged_in", "sasl_success", "sasl_success"]
    assert "hunter2" not in repr(logs) and "hunter2" not in repr(caps.sasl)


def test_nothing_wanted_on_offer_ends_at_once() -> None:
    caps = Capabilities(None)
    assert feed(caps, ":irc.test CAP * LS :draft/unknown draft/other=port=6697") == ["CAP END"]
    assert caps.ended and caps.enabled == set()


def test_empty_ls_ends_at_once() -> None:
    caps = Capabilities(PLAIN)
    assert feed(caps, ":irc.test CAP * LS :") == ["CAP END"]
    assert caps.sasl_outcome == "unavailable"


def test_without_a_login_sasl_is_not_requested() -> None:
    caps = Capabilities(None)
    assert feed(caps, ":irc.test CAP * LS :sasl=PLAIN multi-prefix") == ["CAP REQ :multi-prefix"]
    assert feed(caps, ":irc.test CAP * ACK :multi-prefix") == ["CAP END"]


def test_ack_without_sasl_ends_without_authenticate() -> None:
    caps = Capabilities(PLAIN)
    feed(caps, ":irc.test CAP * LS :sasl multi-prefix")
    assert feed(caps, ":irc.test CAP * ACK :multi-prefix") == ["CAP END"]


def test_nak_ends_negotiation(logs: list[dict[str, object]]) -> None:
    caps = Capabilities(PLAIN)
    assert feed(caps, ":irc.test CAP * LS :sasl multi-prefix") == ["CAP REQ :sasl multi-prefix"]
    assert feed(caps, ":irc.test CAP * NAK :sasl multi-prefix") == ["CAP END"]
    assert caps.enabled == set() and caps.ended
    assert events(logs) == ["caps_refused"]


def test_ack_with_a_minus_disables() -> None:
    caps = Capabilities(None)
    caps.registered()
    feed(caps, ":irc.test CAP relaybot ACK :multi-prefix echo-message")
    assert feed(caps, ":irc.test CAP relaybot ACK :-echo-message") == []
    assert caps.enabled == {"multi-prefix"}


def test_cap_new_and_del_after_registration(logs: list[dict[str, object]]) -> None:
    caps = Capabilities(PLAIN)
    feed(caps, ":irc.test CAP * LS :multi-prefix cap-notify")
    assert feed(caps, ":irc.test CAP * ACK :multi-prefix cap-notify") == ["CAP END"]
    caps.registered()
    # Not sasl: registration is over, and a later login would need a new connection.
    assert feed(caps, ":irc.test CAP relaybot NEW :account-tag sasl=PLAIN draft/x") == [
        "CAP REQ :account-tag"
    ]
    assert feed(caps, ":irc.test CAP relaybot ACK :account-tag") == []  # no second CAP END
    assert "account-tag" in caps.enabled
    assert feed(caps, ":irc.test CAP relaybot DEL :account-tag multi-prefix") == []
    assert caps.enabled == {"cap-notify"}
    assert "account-tag" not in caps.offered and "sasl" in caps.offered
    assert events(logs)[-1] == "caps_removed"


def test_a_later_ack_does_not_start_sasl_again() -> None:
    caps = Capabilities(PLAIN)
    feed(caps, ":irc.test CAP * LS :sasl cap-notify")
    feed(caps, ":irc.test CAP * ACK :sasl cap-notify")
    feed(caps, ":irc.test 903 relaybot :SASL authentication successful")
    caps.registered()
    assert feed(caps, ":irc.test CAP relaybot NEW :away-notify") == ["CAP REQ :away-notify"]
    assert feed(caps, ":irc.test CAP relaybot ACK :away-notify") == []
    assert caps.enabled == {"sasl", "cap-notify", "away-notify"}


def test_cap_new_with_nothing_wanted_sends_nothing() -> None:
    caps = Capabilities(None)
    caps.registered()
    assert feed(caps, ":irc.test CAP relaybot NEW :draft/x") == []


def test_reset_opens_negotiation_again() -> None:
    caps = Capabilities(PLAIN)
    feed(caps, ":irc.test CAP * LS :sasl multi-prefix")
    feed(caps, ":irc.test CAP * ACK :sasl multi-prefix")
    feed(caps, ":irc.test 904 relaybot :failed")
    caps.reset()
    assert (caps.offered, caps.enabled, caps.ended, caps.sasl_outcome) == ({}, set(), False, None)
    assert feed(caps, ":irc.test CAP * LS :sasl") == ["CAP REQ :sasl"]


def test_lines_it_does_not_own_are_ignored() -> None:
    caps = Capabilities(PLAIN)
    assert feed(caps, ":irc.test 001 relaybot :Welcome") == []
    assert feed(caps, ":irc.test CAP relaybot") == []
    assert "001" not in caps.commands
    assert {"CAP", "AUTHENTICATE", "900", "901", "902", "903", "904"} <= caps.commands
    assert {"905", "906", "907", "908"} <= caps.commands


def test_the_wanted_list_is_what_the_architecture_names() -> None:
    assert WANTED_CAPS[0] == "sasl"
    assert {"server-time", "message-tags", "account-tag", "extended-join"} <= set(WANTED_CAPS)
    assert {"account-notify", "cap-notify", "echo-message", "invite-notify"} <= set(WANTED_CAPS)


# --- SASL outcomes ------------------------------------------------------------------------------


def authenticating(login: SaslLogin = PLAIN) -> Capabilities:
    caps = Capabilities(login)
    feed(caps, ":irc.test CAP * LS :sasl")
    assert feed(caps, ":irc.test CAP * ACK :sasl") == [f"AUTHENTICATE {login.mechanism}"]
    return caps


def test_904_fails_and_ends_cap(logs: list[dict[str, object]]) -> None:
    caps = authenticating()
    feed(caps, "AUTHENTICATE +")
    assert feed(caps, ":irc.test 904 relaybot :SASL authentication failed") == ["CAP END"]
    assert caps.ended and caps.sasl_outcome == "failed" and caps.account is None
    failed = [entry for entry in logs if entry["event"] == "sasl_failed"]
    assert failed == [
        {
            "component": "session",
            "event": "sasl_failed",
            "log_level": "error",
            "numeric": "904",
            "message": "SASL authentication failed",
        }
    ]


def test_a_903_after_a_904_is_no_login(logs: list[dict[str, object]]) -> None:
    caps = authenticating()
    feed(caps, "AUTHENTICATE +")
    feed(caps, ":irc.test 904 relaybot :SASL authentication failed")
    assert feed(caps, ":irc.test 903 relaybot :SASL authentication successful") == []
    assert caps.sasl_outcome == "failed"
    assert any(entry["event"] == "sasl_success_after_failure_ignored" for entry in logs)


@pytest.mark.parametrize("numeric", ["902", "904", "905", "906"])
def test_every_failure_numeric_ends_cap_once(numeric: str) -> None:
    caps = authenticating()
    assert feed(caps, f":irc.test {numeric} relaybot :no") == ["CAP END"]
    assert feed(caps, f":irc.test {numeric} relaybot :no") == []
    assert caps.sasl_outcome == "failed"


def test_907_already_authenticated_ends_cap(logs: list[dict[str, object]]) -> None:
    caps = authenticating()
    assert feed(caps, ":irc.test 907 relaybot :You have already authenticated") == ["CAP END"]
    assert caps.sasl_outcome == "already"
    assert "sasl_already_authenticated" in events(logs)


def test_908_lists_the_mechanisms_and_waits_for_904(logs: list[dict[str, object]]) -> None:
    caps = authenticating()
    assert feed(caps, ":irc.test 908 relaybot EXTERNAL,SCRAM-SHA-256 :are available") == []
    assert caps.mechanisms == ("EXTERNAL", "SCRAM-SHA-256")
    assert not caps.ended
    offered = [entry for entry in logs if entry["event"] == "sasl_mechanisms_offered"]
    assert offered[0]["mechanisms"] == "EXTERNAL,SCRAM-SHA-256"
    assert feed(caps, ":irc.test 904 relaybot :SASL authentication failed") == ["CAP END"]


def test_901_logged_out_forgets_the_account(logs: list[dict[str, object]]) -> None:
    caps = authenticating()
    feed(caps, ":irc.test 900 relaybot relaybot!r@h acct :You are now logged in")
    assert feed(caps, ":irc.test 901 relaybot relaybot!r@h :You are now logged out") == []
    assert caps.account is None
    assert events(logs)[-1] == "logged_out"


def test_external_answers_with_an_empty_authzid() -> None:
    caps = authenticating(SaslLogin("EXTERNAL"))
    assert feed(caps, "AUTHENTICATE +") == ["AUTHENTICATE +"]


def test_a_challenge_outside_an_exchange_is_ignored() -> None:
    caps = authenticating()
    assert feed(caps, "AUTHENTICATE") == []  # no parameter: nothing to answer
    assert Capabilities(None).feed("AUTHENTICATE", ["+"]) == []  # no login
    assert Capabilities(PLAIN).feed("AUTHENTICATE", ["+"]) == []  # sasl not acknowledged


def test_a_non_empty_first_challenge_aborts(logs: list[dict[str, object]]) -> None:
    # PLAIN speaks first: a server that opens with data is out of line, and gets `*` instead
    # of the password. Its 906 then ends negotiation.
    caps = authenticating()
    assert feed(caps, "AUTHENTICATE abcd") == ["AUTHENTICATE *"]
    assert caps.sasl_outcome == "failed" and not caps.ended
    assert feed(caps, "AUTHENTICATE +") == []  # nothing more once aborted
    assert feed(caps, ":irc.test 906 relaybot :SASL authentication aborted") == ["CAP END"]
    failed = [entry for entry in logs if entry["event"] == "sasl_failed"]
    assert failed[0]["problem"] == "the server's first challenge was not empty"


def test_no_sasl_at_all_is_an_error_and_negotiation_goes_on(
    logs: list[dict[str, object]],
) -> None:
    caps = Capabilities(PLAIN)
    assert feed(caps, ":irc.test CAP * LS :multi-prefix") == ["CAP REQ :multi-prefix"]
    assert caps.sasl_outcome == "unavailable"
    assert feed(caps, ":irc.test CAP * ACK :multi-prefix") == ["CAP END"]
    unavailable = [entry for entry in logs if entry["event"] == "sasl_unavailable"]
    assert [entry["problem"] for entry in unavailable] == [
        "the server offers no SASL; continuing unauthenticated"
    ]


def test_a_mechanism_not_listed_is_tried_anyway(logs: list[dict[str, object]]) -> None:
    # As Limnoria and Sopel do: the list may be incomplete; a refusal is one 904 away.
    caps = Capabilities(PLAIN)
    offer = ":irc.test CAP * LS :multi-prefix sasl=EXTERNAL,SCRAM-SHA-256"
    assert feed(caps, offer) == ["CAP REQ :sasl multi-prefix"]
    assert caps.sasl_outcome is None
    assert feed(caps, ":irc.test CAP * ACK :sasl multi-prefix") == ["AUTHENTICATE PLAIN"]
    not_listed = [entry for entry in logs if entry["event"] == "sasl_mechanism_not_listed"]
    assert not_listed[0]["mechanism"] == "PLAIN"
    assert not_listed[0]["offered"] == "EXTERNAL,SCRAM-SHA-256"
    assert "sasl_unavailable" not in events(logs)
    # The server refuses it as it said it would: 908, then 904, and CAP ends cleanly.
    assert feed(caps, ":irc.test 908 relaybot EXTERNAL,SCRAM-SHA-256 :are available") == []
    assert feed(caps, ":irc.test 904 relaybot :SASL authentication failed") == ["CAP END"]
    assert caps.ended and caps.sasl_outcome == "failed"


def test_a_mechanism_not_listed_that_the_server_takes_logs_in() -> None:
    caps = Capabilities(PLAIN)
    feed(caps, ":irc.test CAP * LS :sasl=EXTERNAL")
    feed(caps, ":irc.test CAP * ACK :sasl")
    assert decode(feed(caps, "AUTHENTICATE +")) == b"relaybot\0relaybot\0hunter2"
    assert feed(caps, ":irc.test 903 relaybot :SASL authentication successful") == ["CAP END"]
    assert caps.sasl_outcome == "success"


def test_required_and_a_mechanism_not_listed_gives_up_on_904(
    logs: list[dict[str, object]],
) -> None:
    caps = Capabilities(PLAIN, sasl_required=True)
    feed(caps, ":irc.test CAP * LS :sasl=EXTERNAL")
    assert feed(caps, ":irc.test CAP * ACK :sasl") == ["AUTHENTICATE PLAIN"]
    feed(caps, ":irc.test 908 relaybot EXTERNAL :are available")
    assert feed(caps, ":irc.test 904 relaybot :SASL authentication failed") == []
    assert caps.give_up == "904 SASL authentication failed" and not caps.ended


def test_mechanisms_are_compared_without_case() -> None:
    caps = Capabilities(PLAIN)
    assert feed(caps, ":irc.test CAP * LS :sasl=external,plain") == ["CAP REQ :sasl"]


def test_a_sasl_line_later_in_the_listing_counts() -> None:
    # The first LS line lacks sasl, the second has it: the error would be wrong.
    caps = Capabilities(PLAIN)
    feed(caps, ":irc.test CAP * LS * :multi-prefix")
    assert feed(caps, ":irc.test CAP * LS :sasl=PLAIN") == ["CAP REQ :sasl multi-prefix"]
    assert caps.sasl_outcome is None


# --- through to the mechanism ------------------------------------------------------------------


# RFC 7677 section 3: the SCRAM-SHA-256 exchange for user "user", password "pencil".
RFC_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = (
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_SERVER_FINAL = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def scram_caps() -> Capabilities:
    caps = Capabilities(
        SaslLogin("SCRAM-SHA-256", "user", "pencil"), exchange=partial(Exchange, nonce=RFC_NONCE)
    )
    feed(caps, ":irc.test CAP * LS :sasl=SCRAM-SHA-256")
    assert feed(caps, ":irc.test CAP * ACK :sasl") == ["AUTHENTICATE SCRAM-SHA-256"]
    return caps


def test_scram_through_cap_negotiation_to_903(logs: list[dict[str, object]]) -> None:
    caps = scram_caps()
    assert decode(feed(caps, "AUTHENTICATE +")) == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    assert decode(feed(caps, f"AUTHENTICATE {b64(RFC_SERVER_FIRST)}")).decode() == (
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert feed(caps, f"AUTHENTICATE {b64(RFC_SERVER_FINAL)}") == ["AUTHENTICATE +"]
    feed(caps, ":irc.test 900 user user!u@h user :You are now logged in as user")
    assert feed(caps, ":irc.test 903 user :SASL authentication successful") == ["CAP END"]
    assert caps.sasl_outcome == "success"
    assert "pencil" not in repr(logs) and "pencil" not in repr(caps.sasl)


def test_scram_wrong_server_signature_aborts_and_903_is_not_believed(
    logs: list[dict[str, object]],
) -> None:
    caps = scram_caps()
    feed(caps, "AUTHENTICATE +")
    feed(caps, f"AUTHENTICATE {b64(RFC_SERVER_FIRST)}")
    forged = "v=" + base64.b64encode(b"\0" * 32).decode()
    assert feed(caps, f"AUTHENTICATE {b64(forged)}") == ["AUTHENTICATE *"]
    assert caps.sasl_outcome == "failed" and not caps.ended
    failed = [entry for entry in logs if entry["event"] == "sasl_failed"]
    assert failed[0]["mechanism"] == "SCRAM-SHA-256"
    assert "did not prove itself" in str(failed[0]["problem"])
    # A server that says 903 all the same is not taken at its word.
    assert feed(caps, ":irc.test 903 user :SASL authentication successful") == ["CAP END"]
    assert caps.sasl_outcome == "failed"
    assert "sasl_success" not in events(logs)


def test_scram_903_before_the_server_proved_itself_is_a_failure(
    logs: list[dict[str, object]],
) -> None:
    caps = scram_caps()
    feed(caps, "AUTHENTICATE +")
    feed(caps, f"AUTHENTICATE {b64(RFC_SERVER_FIRST)}")
    assert feed(caps, ":irc.test 903 user :SASL authentication successful") == ["CAP END"]
    assert caps.sasl_outcome == "failed"
    assert "sasl_not_trusted" in events(logs) and "sasl_success" not in events(logs)


# --- irc.sasl.required ----------------------------------------------------------------------------


def required() -> Capabilities:
    return Capabilities(PLAIN, sasl_required=True)


def gave_up(caps: Capabilities, logs: list[dict[str, object]], problem: str) -> None:
    assert caps.give_up == problem and not caps.ended
    assert [entry["problem"] for entry in logs if entry["event"] == "sasl_required_failed"] == [
        problem
    ]
    # Nothing more is answered: the session is dropping the connection.
    assert feed(caps, ":irc.test CAP * LS :sasl") == []
    assert feed(caps, ":irc.test 903 relaybot :SASL authentication successful") == []


@pytest.mark.parametrize("numeric", ["902", "904", "905", "906"])
def test_required_sasl_failing_never_ends_cap(numeric: str, logs: list[dict[str, object]]) -> None:
    caps = required()
    feed(caps, ":irc.test CAP * LS :sasl")
    feed(caps, ":irc.test CAP * ACK :sasl")
    feed(caps, "AUTHENTICATE +")
    assert feed(caps, f":irc.test {numeric} relaybot :no") == []
    assert caps.sasl_outcome == "failed"
    gave_up(caps, logs, f"{numeric} no")


def test_required_sasl_on_a_server_without_it_never_requests_or_ends(
    logs: list[dict[str, object]],
) -> None:
    caps = required()
    assert feed(caps, ":irc.test CAP * LS :multi-prefix") == []
    assert caps.sasl_outcome == "unavailable"
    unavailable = [entry for entry in logs if entry["event"] == "sasl_unavailable"]
    assert unavailable[0]["problem"] == "the server offers no SASL"  # not "continuing"
    gave_up(caps, logs, "the server offers no SASL")


def test_required_sasl_not_acknowledged(logs: list[dict[str, object]]) -> None:
    caps = required()
    feed(caps, ":irc.test CAP * LS :sasl multi-prefix")
    assert feed(caps, ":irc.test CAP * ACK :multi-prefix") == []
    gave_up(caps, logs, "the server did not enable sasl")


def test_required_sasl_refused(logs: list[dict[str, object]]) -> None:
    caps = required()
    feed(caps, ":irc.test CAP * LS :sasl multi-prefix")
    assert feed(caps, ":irc.test CAP * NAK :sasl multi-prefix") == []
    gave_up(caps, logs, "the server refused the capabilities asked for, sasl with them")


def test_required_sasl_aborted_by_us_gives_up_after_the_star(
    logs: list[dict[str, object]],
) -> None:
    caps = required()
    feed(caps, ":irc.test CAP * LS :sasl")
    feed(caps, ":irc.test CAP * ACK :sasl")
    assert feed(caps, "AUTHENTICATE abcd") == ["AUTHENTICATE *"]
    gave_up(caps, logs, "PLAIN aborted: the server's first challenge was not empty")


def test_required_sasl_and_a_server_that_registers_without_cap(
    logs: list[dict[str, object]],
) -> None:
    caps = required()
    caps.registered()  # 001 with no CAP at all: a server from before IRCv3
    assert caps.give_up == "the server registered the connection without SASL"


def test_required_sasl_that_succeeds_registers() -> None:
    caps = required()
    feed(caps, ":irc.test CAP * LS :sasl")
    feed(caps, ":irc.test CAP * ACK :sasl")
    feed(caps, "AUTHENTICATE +")
    assert feed(caps, ":irc.test 903 relaybot :SASL authentication successful") == ["CAP END"]
    caps.registered()
    assert caps.give_up is None and caps.sasl_outcome == "success"


def test_required_sasl_already_authenticated_registers() -> None:
    caps = required()
    feed(caps, ":irc.test CAP * LS :sasl")
    feed(caps, ":irc.test CAP * ACK :sasl")
    assert feed(caps, ":irc.test 907 relaybot :You have already authenticated") == ["CAP END"]
    caps.registered()
    assert caps.give_up is None


def test_reset_forgets_giving_up() -> None:
    caps = required()
    feed(caps, ":irc.test CAP * LS :multi-prefix")
    assert caps.give_up is not None
    caps.reset()
    assert caps.give_up is None
    assert feed(caps, ":irc.test CAP * LS :sasl") == ["CAP REQ :sasl"]


def test_required_without_a_login_is_no_requirement() -> None:
    caps = Capabilities(None, sasl_required=True)
    assert feed(caps, ":irc.test CAP * LS :multi-prefix") == ["CAP REQ :multi-prefix"]
    caps.registered()
    assert caps.give_up is None
