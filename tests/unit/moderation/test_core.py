"""Tests for relaybot.moderation.core: Verdict and the fail-closed chain (errors, timeouts)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from relaybot.moderation import Decision, ModerationChain, Verdict, WordsModerator
from relaybot.moderation.core import MAX_STUCK_CALLS
from tests.support.moderators import CHANNEL, Exploding, Hanging, Recorder, ShoutModerator, Sloppy

# --- Verdict ----------------------------------------------------------------------------------


def test_verdict_constructors() -> None:
    assert Verdict.allow().allowed
    blocked = Verdict.block("spam")
    assert (blocked.decision, blocked.reason, blocked.blocked) == (Decision.BLOCK, "spam", True)
    replaced = Verdict.replace("clean", "masked")
    assert (replaced.decision, replaced.text, replaced.reason) == ("replace", "clean", "masked")
    assert Verdict("block").decision is Decision.BLOCK  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Verdict("maybe")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Verdict(Decision.REPLACE, text=None)  # type: ignore[arg-type]


# --- the chain --------------------------------------------------------------------------------


def test_chain_without_hooks_allows_without_threads() -> None:
    before = threading.active_count()
    chain = ModerationChain([], timeout=1.0)
    assert chain.check_input("anything", CHANNEL) == Verdict.allow()
    assert chain.check_output("anything", CHANNEL) == Verdict.allow()
    assert threading.active_count() == before


def test_chain_passes_replaced_text_on() -> None:
    shout = ShoutModerator(suffix="!")
    after = Recorder(name="after")
    chain = ModerationChain([shout, after, ShoutModerator(suffix="?", name="again")], timeout=1)
    verdict = chain.check_output("hello", CHANNEL)
    assert after.seen == ["HELLO!"]
    assert verdict.decision is Decision.REPLACE
    assert verdict.text == "HELLO!?"
    assert verdict.hook == "shout,again"
    chain.close()


def test_chain_first_block_stops_the_chain() -> None:
    first = Recorder(Verdict.block("nope"), name="first")
    second = Recorder(name="second")
    chain = ModerationChain([ShoutModerator(), first, second], timeout=1)
    verdict = chain.check_input("hello", CHANNEL)
    assert (verdict.decision, verdict.reason, verdict.hook) == (Decision.BLOCK, "nope", "first")
    assert first.seen == ["HELLO"]
    assert second.seen == []
    chain.close()


def test_chain_allows_when_every_hook_allows() -> None:
    chain = ModerationChain([Recorder(), WordsModerator(words=["x"])], timeout=1)
    assert chain.check_output("fine", CHANNEL) == Verdict.allow()
    chain.close()


def test_chain_names_repeated_hooks_by_position() -> None:
    chain = ModerationChain([Recorder(), Recorder(Verdict.block("no"))], timeout=1)
    assert chain.names == ("recorder#1", "recorder#2")
    assert chain.check_input("x", CHANNEL).hook == "recorder#2"
    chain.close()


def test_hook_that_raises_fails_closed_and_is_logged() -> None:
    after = Recorder()
    chain = ModerationChain([Exploding(), after], timeout=1)
    with capture_logs() as logs:
        verdict = chain.check_input("hello", CHANNEL)
    assert verdict.blocked and verdict.hook == "exploding"
    assert "exploding" in verdict.reason and "backend unreachable" in verdict.reason
    assert after.seen == []
    failed = [entry for entry in logs if entry["event"] == "moderation_hook_failed"]
    assert failed and failed[0]["hook"] == "exploding"
    assert "RuntimeError: backend unreachable" in failed[0]["error"]
    assert failed[0]["log_level"] == "error"
    chain.close()


def test_hook_returning_a_non_verdict_fails_closed() -> None:
    chain = ModerationChain([Sloppy()], timeout=1)
    with capture_logs() as logs:
        verdict = chain.check_output("hello", CHANNEL)
    assert verdict.blocked and "sloppy" in verdict.reason and "not a Verdict" in verdict.reason
    assert any(e["event"] == "moderation_hook_failed" and e["hook"] == "sloppy" for e in logs)
    chain.close()


@pytest.fixture
def hanging() -> Iterator[Hanging]:
    hook = Hanging()
    yield hook
    hook.release.set()


def test_hook_past_the_timeout_fails_closed_promptly(hanging: Hanging) -> None:
    chain = ModerationChain([hanging], timeout=0.2)
    started = time.monotonic()
    with capture_logs() as logs:
        verdict = chain.check_input("please hang", CHANNEL)
    elapsed = time.monotonic() - started
    assert verdict.blocked and "hanging" in verdict.reason and "timed out" in verdict.reason
    assert 0.15 <= elapsed < 1.0
    assert any(e["event"] == "moderation_hook_timeout" and e["hook"] == "hanging" for e in logs)
    assert hanging.threads and hanging.threads[0].daemon

    # The stuck call keeps its thread; the next call gets a fresh one and answers at once.
    started = time.monotonic()
    assert chain.check_input("all good", CHANNEL).allowed
    assert time.monotonic() - started < 0.15
    chain.close()


def test_hook_with_too_many_stuck_calls_fails_at_once(hanging: Hanging) -> None:
    chain = ModerationChain([hanging], timeout=0.05)
    for _ in range(MAX_STUCK_CALLS):
        assert "timed out" in chain.check_output("hang", CHANNEL).reason
    started = time.monotonic()
    verdict = chain.check_output("fine now", CHANNEL)
    assert verdict.blocked and "still running" in verdict.reason
    assert time.monotonic() - started < 0.04
    hanging.release.set()
    deadline = time.monotonic() + 5
    while not chain.check_output("fine now", CHANNEL).allowed:
        assert time.monotonic() < deadline, "the hook never recovered after its calls returned"
        time.sleep(0.01)
    chain.close()


def test_blocks_and_replaces_are_logged_with_a_short_excerpt() -> None:
    chain = ModerationChain(
        [WordsModerator(words=["darn"], action="replace"), WordsModerator(words=["badword"])],
        timeout=1,
    )
    line = "darn " + "x" * 300 + " badword"
    with capture_logs() as logs:
        verdict = chain.check_input(line, CHANNEL)
    assert verdict.blocked and verdict.hook == "words#2"
    replaced = next(e for e in logs if e["event"] == "moderation_replaced")
    assert replaced["hook"] == "words#1" and replaced["reason"] == "masked a listed word"
    blocked = next(e for e in logs if e["event"] == "moderation_blocked")
    assert blocked["hook"] == "words#2" and blocked["reason"] == "matched a listed word"
    assert blocked["direction"] == "input" and blocked["target"] == "#chan"
    assert len(blocked["excerpt"]) <= 80
    assert all("badword" not in str(value) for entry in logs for value in entry.values())
