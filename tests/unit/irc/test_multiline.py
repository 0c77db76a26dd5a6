"""draft/multiline batches as the spec writes them, and the server's limits."""

from __future__ import annotations

import pytest

from relaybot.irc.message import parse
from relaybot.irc.multiline import MultilineLimits, Part, batch_lines, fits, limits
from relaybot.irc.writer import message_parts


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("max-bytes=4096,max-lines=24", MultilineLimits(4096, 24)),
        ("max-bytes=4096", MultilineLimits(4096, None)),
        ("max-lines=24", None),  # max-bytes is required
        ("max-bytes=lots", None),
        ("max-bytes=0", None),
        ("", None),
    ],
)
def test_limits(value: str, expected: MultilineLimits | None):
    assert limits(value) == expected


def test_the_batch_opens_with_the_client_tags_and_concatenates_wrapped_lines():
    parts = [Part("first line", False), Part(" goes on", True), Part("second", False)]
    lines = batch_lines("ml1", "#chan", parts, tags="+draft/reply=abc")
    assert lines == [
        "@+draft/reply=abc BATCH +ml1 draft/multiline #chan",
        "@batch=ml1 PRIVMSG #chan :first line",
        "@batch=ml1;draft/multiline-concat PRIVMSG #chan : goes on",
        "@batch=ml1 PRIVMSG #chan :second",
        "BATCH -ml1",
    ]
    # Each is one well-formed IRC line the project's parser reads back.
    inner = parse(lines[2])
    assert inner is not None
    assert inner.tags == {"batch": "ml1", "draft/multiline-concat": ""}
    assert inner.params == ("#chan", " goes on")


def test_the_first_line_never_concatenates():
    assert batch_lines("r", "#c", [Part("a", True)])[1] == "@batch=r PRIVMSG #c :a"


def test_fits_counts_bytes_line_breaks_and_lines():
    parts = [Part("ab", False), Part("cd", True), Part("é", False)]  # 2 + 2 + 1 + 2 bytes
    assert fits(parts, MultilineLimits(7, None))
    assert not fits(parts, MultilineLimits(6, None))
    assert not fits(parts, MultilineLimits(100, 2))


def test_lines_inside_a_batch_are_not_matched_against_echoes():
    # The batch's end is confirmed instead (a PING after it), see Writer.queue_multiline.
    assert message_parts("@batch=ml1 PRIVMSG #chan :hello") is None
    assert message_parts("@+draft/reply=x PRIVMSG #chan :hello") == ("PRIVMSG", "#chan", "hello")
