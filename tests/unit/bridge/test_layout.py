"""Answers laid out as IRC lines: cut at a sentence or clause boundary that fits, with the
`(more)` marker, and the rest kept without loss or repetition."""

from __future__ import annotations

import random

import pytest

from relaybot.bridge.layout import (
    CLAUSE,
    MORE_MARKER,
    SENTENCE,
    WORD,
    OutLine,
    Piece,
    lay_out,
    pieces,
    wrap,
)


def parts(text: str) -> list[Piece]:
    return pieces(text, speaker="bot", actions=True, log_context={})


def recorded(lines: tuple[OutLine, ...] | list[OutLine]) -> str:
    """The lines as the answer's turn records them."""
    return lines[0].text + "".join(line.joiner + line.text for line in lines[1:])


def rest_text(rest: tuple[Piece, ...]) -> str:
    return "".join((piece.joiner if i else "") + piece.text for i, piece in enumerate(rest))


def test_an_answer_that_fits_goes_out_whole_without_a_marker():
    layout = lay_out(parts("Hello there.\nHow are you?"), budget=100, max_lines=3)
    assert [line.sent for line in layout.lines] == ["Hello there.", "How are you?"]
    assert layout.rest == () and not layout.more


def test_over_the_line_cap_it_ends_at_the_last_sentence_that_fits():
    text = "First sentence here. Second one is here. Third goes on and on and on and on."
    layout = lay_out(parts(text), budget=30, max_lines=2)
    assert [line.sent for line in layout.lines] == [
        "First sentence here. Second",
        "one is here." + MORE_MARKER,
    ]
    assert layout.strength == SENTENCE and layout.more
    assert rest_text(layout.rest) == "Third goes on and on and on and on."
    assert layout.rest[0].joiner == " "  # it continues the line that was cut


def test_a_model_cut_off_mid_sentence_ends_at_its_last_full_sentence():
    text = "Chess is a board game. It is played on a checkered board with"
    layout = lay_out(parts(text), budget=400, max_lines=3, cut_off=True)
    assert [line.sent for line in layout.lines] == ["Chess is a board game." + MORE_MARKER]
    assert rest_text(layout.rest) == "It is played on a checkered board with"


def test_a_model_cut_off_right_after_a_full_stop_sends_everything_and_offers_more():
    layout = lay_out(parts("One. Two."), budget=400, max_lines=3, cut_off=True)
    assert [line.sent for line in layout.lines] == ["One. Two." + MORE_MARKER]
    assert layout.rest == () and layout.more


def test_without_a_late_sentence_end_it_ends_at_a_clause():
    text = "Yes. " + "the great river of the north runs, " + "far and wide " * 3
    layout = lay_out(parts(text), budget=60, max_lines=1)
    assert layout.strength == CLAUSE
    assert layout.lines[-1].text.endswith(",")


def test_without_any_boundary_but_words_it_ends_at_a_word():
    text = "word " * 40
    layout = lay_out(parts(text), budget=50, max_lines=2)
    assert layout.strength == WORD
    assert all(len(line.sent.encode()) <= 50 for line in layout.lines)
    assert layout.lines[-1].sent.endswith("word" + MORE_MARKER)


def test_one_giant_word_is_cut_where_the_lines_end():
    text = "x" * 500
    layout = lay_out(parts(text), budget=100, max_lines=2)
    assert layout.strength == 0 and layout.more
    sent = "".join(line.text for line in layout.lines)
    assert sent + rest_text(layout.rest) == text
    assert layout.rest[0].joiner == ""


def test_wrapped_lines_join_with_a_space_and_new_lines_with_a_newline():
    lines = wrap(parts("aaa bbb ccc\nddd"), budget=8)
    assert [(line.text, line.joiner) for line in lines] == [
        ("aaa bbb", "\n"),
        ("ccc", " "),
        ("ddd", "\n"),
    ]
    assert recorded(lines) == "aaa bbb ccc\nddd"


def test_actions_and_command_lines_become_pieces_as_before():
    assert parts("hi\n/me waves\n/join #evil\n<bot> /me\n") == [
        Piece("hi", False),
        Piece("waves", True),
        Piece("<bot> /me", False),
    ]


VOCABULARY = ["cat", "a", "very", "long-word", "sat,", "on", "it.", "Then!", "why?", "(so)", "é"]


@pytest.mark.parametrize("seed", range(200))
def test_what_is_sent_and_what_is_kept_are_the_answer_without_loss_or_repetition(seed: int):
    rng = random.Random(seed)
    lines = [
        " ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(1, 40)))
        for _ in range(rng.randint(1, 4))
    ]
    text = "\n".join(lines)
    budget, max_lines, cut_off = rng.randint(20, 120), rng.randint(1, 4), rng.random() < 0.5
    remaining = tuple(parts(text))
    said: list[OutLine] = []
    for _ in range(200):
        layout = lay_out(remaining, budget=budget, max_lines=max_lines, cut_off=cut_off)
        assert len(layout.lines) <= max_lines
        assert all(len(line.sent.encode()) <= budget for line in layout.lines)
        assert all(not line.marker for line in layout.lines[:-1])
        assert bool(layout.lines and layout.lines[-1].marker) == layout.more
        if said and layout.lines:
            # The first line of a later part continues the answer as the rest said.
            assert layout.lines[0].joiner == remaining[0].joiner
        said += layout.lines
        remaining = layout.rest
        if not remaining:
            break
    assert not remaining
    assert recorded(said).split() == text.split()


def test_nothing_to_send_is_no_crash():
    assert lay_out([], budget=100, max_lines=2, cut_off=True) == lay_out(
        [], budget=100, max_lines=2
    )
    assert lay_out([], budget=100, max_lines=2).lines == ()


def test_a_hard_cut_never_takes_more_lines_than_the_cap():
    text = "x" * 795 + "\nsome text after it"
    layout = lay_out(parts(text), budget=400, max_lines=2)
    assert len(layout.lines) <= 2
    assert all(len(line.sent.encode()) <= 400 for line in layout.lines)
    assert (recorded(layout.lines) + rest_text(layout.rest)).replace("\n", "") == text.replace(
        "\n", ""
    )
