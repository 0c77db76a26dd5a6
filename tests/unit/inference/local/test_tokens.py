"""The local engine's tokenising on a fake tokenizer (no model needed): BOS and stop tokens,
segment-by-segment encoding with its memo, fitting into the context window, stop strings."""

from __future__ import annotations

from typing import Any

import pytest

from relaybot.conversation.formats import Prompt, Segment
from relaybot.inference.local.tokens import PromptTokens, bos_prefix, stop_token_ids
from relaybot.inference.selection import ModelUnavailable

SPECIAL = {"<s>": 1, "</s>": 2, "<|im_start|>": 3, "<|im_end|>": 4}


class FakeTokenizer:
    """One token per character (its code point + 100); markup strings are single tokens
    unless split. Records every batch it was asked to encode."""

    unk_token_id = 0

    def __init__(
        self, *, bos: str | None = "<s>", eos: int | None = 2, markers: bool = True
    ) -> None:
        self.bos_token = bos
        self.bos_token_id = SPECIAL.get(bos or "")
        self.eos_token_id = eos
        self.pad_token_id: int | None = None
        self.markers = markers
        self.calls: list[tuple[list[str], bool]] = []

    def convert_tokens_to_ids(self, token: str) -> int:
        return SPECIAL[token] if self.markers and token in SPECIAL else self.unk_token_id

    def convert_ids_to_tokens(self, token_id: int) -> str:
        return next(text for text, known in SPECIAL.items() if known == token_id)

    def _ids(self, text: str, split: bool) -> list[int]:
        if not split and text in SPECIAL:
            return [SPECIAL[text]]
        return [ord(char) + 100 for char in text]

    def __call__(
        self, text: Any, *, add_special_tokens: bool, split_special_tokens: bool
    ) -> dict[str, Any]:
        assert add_special_tokens is False
        if isinstance(text, str):
            return {"input_ids": self._ids(text, split_special_tokens)}
        self.calls.append((list(text), split_special_tokens))
        return {"input_ids": [self._ids(one, split_special_tokens) for one in text]}

    def decode(self, tokens: list[int], *, skip_special_tokens: bool) -> str:
        return "".join(chr(token - 100) for token in tokens if token >= 100)


def prompt(*segments: Segment, stop: tuple[str, ...] = ()) -> Prompt:
    return Prompt(tuple(segments), stop)


def test_bos_is_added_unless_it_is_a_chatml_marker() -> None:
    assert bos_prefix(FakeTokenizer()) == [1]
    assert bos_prefix(FakeTokenizer(bos="<|im_start|>")) == []
    assert bos_prefix(FakeTokenizer(bos=None)) == []


def test_stop_tokens_are_the_chatml_markers_then_eos() -> None:
    assert stop_token_ids(FakeTokenizer()) == [4, 3, 2]
    assert stop_token_ids(FakeTokenizer(eos=4)) == [4, 3]
    assert stop_token_ids(FakeTokenizer(markers=False)) == [2]
    with pytest.raises(ModelUnavailable):
        stop_token_ids(FakeTokenizer(markers=False, eos=None))


def test_pad_falls_back_to_the_first_stop_token() -> None:
    assert PromptTokens(FakeTokenizer()).pad_id == 4
    tokenizer = FakeTokenizer()
    tokenizer.pad_token_id = 0
    assert PromptTokens(tokenizer).pad_id == 0


def test_segments_are_encoded_once_per_kind_and_people_cannot_type_markup() -> None:
    tokenizer = FakeTokenizer()
    tokens = PromptTokens(tokenizer)
    first = prompt(Segment("<|im_start|>", special=True), Segment("<|im_end|>"), Segment("hi"))
    ids = tokens.encode(first)
    assert ids[:2] == [1, 3]  # BOS, then the markup segment as one token
    assert ids[2:] == [ord(char) + 100 for char in "<|im_end|>hi"]  # typed text is split
    assert sorted(tokenizer.calls, key=lambda call: call[1]) == [
        (["<|im_start|>"], False),
        (["<|im_end|>", "hi"], True),
    ]
    tokenizer.calls.clear()
    again = prompt(Segment("<|im_start|>", special=True), Segment("hi"), Segment("new"))
    assert tokens.encode(again)[-3:] == [ord(char) + 100 for char in "new"]
    assert tokenizer.calls == [(["new"], True)]  # only the segment not seen before


def test_fit_keeps_the_newest_tokens_and_room_for_the_reply() -> None:
    tokens = PromptTokens(FakeTokenizer(bos=None))
    ids = tokens.fit(prompt(Segment("abcdefgh")), 4, 10)
    assert ids == [ord(char) + 100 for char in "cdefgh"]
    assert tokens.fit(prompt(Segment("ab")), 100, 10) == [ord("b") + 100]


def test_reply_text_is_cut_at_stop_strings_and_stop_tokens_need_no_text_stop() -> None:
    tokens = PromptTokens(FakeTokenizer())
    reply = [ord(char) + 100 for char in " hello\nalice: more"]
    assert tokens.reply(prompt(stop=("\nalice:",)), reply) == "hello"
    assert tokens.decode(reply[:3]) == " he"
    stops = ("<|im_end|>", "\n### Instruction:", "")
    assert tokens.text_stops(prompt(stop=stops)) == ("\n### Instruction:",)
