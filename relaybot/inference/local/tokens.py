"""Tokenising for the local engine: prompts encoded segment by segment, so that text typed by
people can never become a structure token, with a memo of the segments seen before; the BOS and
stop tokens the model's tokenizer has; and token ids back to text.

The fast tokenizer is shared by the reactor thread (token counting) and the inference thread;
Rust tokenizers raise "Already borrowed" under concurrent use, so every use holds one lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from relaybot.conversation.formats import Prompt, cut_at_stops
from relaybot.inference.selection import ModelUnavailable

# Tokens that open or close ChatML turns; never useful as a BOS in front of a prompt.
_CHATML_MARKERS = {"<|im_start|>", "<|im_end|>"}
# Tokenised segments kept for reuse: a channel's turns are re-rendered on every reply, so
# nearly every segment of a prompt has been tokenised before.
_SEGMENT_MEMO_ENTRIES = 32_768


def bos_prefix(tokenizer: Any) -> list[int]:
    """Segments are encoded without special tokens, so BOS (Relay's `<s>`) is ours to add;
    tokenizers whose BOS is a ChatML marker (SmolLM2) get none."""
    bos = tokenizer.bos_token
    if not bos or bos in _CHATML_MARKERS:
        return []
    return [int(tokenizer.bos_token_id)]


def stop_token_ids(tokenizer: Any) -> list[int]:
    """The ChatML turn markers the tokenizer knows, then EOS; ModelUnavailable when it has
    none of them."""
    ids: list[int] = []
    for token in ("<|im_end|>", "<|im_start|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.append(token_id)
    eos = tokenizer.eos_token_id
    if isinstance(eos, int) and eos not in ids:
        ids.append(eos)
    if not ids:
        raise ModelUnavailable("the tokenizer has neither ChatML markers nor an EOS token")
    return ids


class PromptTokens:
    """A tokenizer as the local engine uses it; any thread."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self._lock = threading.Lock()
        self.bos_ids = bos_prefix(tokenizer)
        self.stop_ids = stop_token_ids(tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.stop_ids[0])
        self._stop_texts = {str(tokenizer.convert_ids_to_tokens(i)) for i in self.stop_ids}
        self._segments: OrderedDict[tuple[str, bool], tuple[int, ...]] = OrderedDict()

    def count(self, text: str) -> int:
        with self._lock:
            ids = self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)
        return len(ids["input_ids"])

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids for a prompt, segment by segment; segments seen before come from a memo,
        the rest are tokenised in one call per kind."""
        keys = [(segment.text, segment.special) for segment in prompt.segments]
        with self._lock:
            memo = self._segments
            missing: dict[bool, list[str]] = {False: [], True: []}
            for text, special in keys:
                if (text, special) not in memo:
                    missing[special].append(text)
            for special, texts in missing.items():
                unique = list(dict.fromkeys(texts))
                if not unique:
                    continue
                encoded = self.tokenizer(
                    unique, add_special_tokens=False, split_special_tokens=not special
                )["input_ids"]
                for text, token_ids in zip(unique, encoded, strict=True):
                    memo[(text, special)] = tuple(int(token) for token in token_ids)
            ids = list(self.bos_ids)
            for key in keys:
                ids.extend(memo[key])
                memo.move_to_end(key)
            while len(memo) > _SEGMENT_MEMO_ENTRIES:
                memo.popitem(last=False)
        return ids

    def fit(self, prompt: Prompt, new_tokens: int, context_window: int) -> list[int]:
        """`encode`, leaving room for `new_tokens` in the context window."""
        ids = self.encode(prompt)
        limit = max(1, context_window - new_tokens)
        # Keep the newest tokens if a prompt is over budget (the transcript normally prevents it).
        return ids[-limit:] if len(ids) > limit else ids

    def decode(self, tokens: Sequence[int]) -> str:
        with self._lock:
            return str(self.tokenizer.decode(list(tokens), skip_special_tokens=True))

    def reply(self, prompt: Prompt, tokens: Sequence[int]) -> str:
        """The text of a reply to `prompt`: cut at its stop strings, stripped."""
        return self.reply_and_stop(prompt, tokens)[0]

    def reply_and_stop(self, prompt: Prompt, tokens: Sequence[int]) -> tuple[str, bool]:
        """`reply`, and whether a stop string ended it."""
        with self._lock:
            text = self.tokenizer.decode(list(tokens), skip_special_tokens=True)
        kept = cut_at_stops(text, prompt.stop)
        return kept.strip(), len(kept) < len(text)

    def text_stops(self, prompt: Prompt) -> tuple[str, ...]:
        """The prompt's stop strings that stop-token ids do not already catch."""
        return tuple(stop for stop in prompt.stop if stop and stop not in self._stop_texts)
