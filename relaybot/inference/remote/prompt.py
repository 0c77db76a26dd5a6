"""Prompts for servers that take one string: flattening with people's text neutralised, and
token counting without the model (the local tokenizer if there is one, else an estimate).

A remote server tokenises the whole prompt with special-token parsing on, so a person typing
`<|im_end|>` would close a turn there. Text segments therefore get an invisible WORD JOINER
inside every string that is (or may be) a special token; markup segments pass unchanged.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from relaybot.config.schema import ModelConfig
from relaybot.conversation.formats import Prompt
from relaybot.inference.local.loading import default_cache_dir, gguf_cache_path
from relaybot.inference.selection import EMBEDDED_GGUF, ModelUnavailable, embedded_model_dir
from relaybot.log import get_logger, route_library_logs

log = get_logger(component="engine")

WORD_JOINER = "\u2060"  # invisible, and no tokenizer's special token contains it

# Every ChatML, Llama-3, Phi… special token starts with `<|` (DeepSeek's with `<` and a
# full-width vertical line, U+FF5C):
# breaking the opener breaks them all, known or not.
TOKEN_OPENERS = ("<|", "<\uff5c")
# Special tokens without a `<|` opener in common vocabularies (Llama/Mistral BOS and EOS,
# Gemma's turns, Mistral's control tokens), and the Llama-2 instruction markers.
KNOWN_TOKENS = (
    "<s>", "</s>", "<unk>", "<pad>", "<bos>", "<eos>", "<mask>",
    "<start_of_turn>", "<end_of_turn>",
    "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]",
)  # fmt: skip
INSTRUCTION_MARKERS = ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>")
# Formats whose own markup is plain text inside text segments (instruct.Llama2Format and
# MistralFormat): those markers must reach the model intact. People's text in these formats
# was already passed through instruct.neutralize, which rewrites the same markers.
PLAIN_TEXT_MARKUP: dict[str, tuple[str, ...]] = {
    "llama2": INSTRUCTION_MARKERS,
    "mistral": ("[INST]", "[/INST]"),
}


class Neutralizer:
    """Breaks special-token strings in people's text with an invisible character."""

    def __init__(self, extra_tokens: Iterable[str] = (), keep: Iterable[str] = ()) -> None:
        kept = set(keep)
        tokens = {
            token
            for token in (*KNOWN_TOKENS, *INSTRUCTION_MARKERS, *extra_tokens)
            if len(token) >= 2 and not token.isspace() and token not in kept
        }
        tokens = {token for token in tokens if not token.startswith(TOKEN_OPENERS)}
        alternatives = [*TOKEN_OPENERS, *sorted(tokens, key=len, reverse=True)]
        self.pattern = re.compile("|".join(re.escape(text) for text in alternatives))

    def __call__(self, text: str) -> str:
        # Repeat until nothing matches: a match consumes its characters, so a token that
        # overlaps a broken one is only seen on the next pass.
        while self.pattern.search(text):
            text = self.pattern.sub(lambda m: m.group()[0] + WORD_JOINER + m.group()[1:], text)
        return text


def flatten(prompt: Prompt, neutralize: Neutralizer) -> str:
    """The prompt as one string: markup segments as they are, each run of consecutive text
    segments neutralised as a whole (so no token can be split across two of them)."""
    parts: list[str] = []
    run: list[str] = []
    for segment in prompt.segments:
        if segment.special:
            if run:
                parts.append(neutralize("".join(run)))
                run = []
            parts.append(segment.text)
        else:
            run.append(segment.text)
    if run:
        parts.append(neutralize("".join(run)))
    return "".join(parts)


def estimate_tokens(text: str) -> int:
    """A conservative count when no tokenizer is at hand: BPE vocabularies average well over
    three bytes a token for chat text, so this over-counts and the context stays in budget."""
    return -(-len(text.encode("utf-8")) // 3)


class TokenCounter:
    """Counts tokens as TransformersEngine does (people's text never becomes a special token),
    with a local tokenizer when one is available."""

    def __init__(self, tokenizer: Any | None, source: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.source = source
        # Rust tokenizers raise "Already borrowed" under concurrent use; the reactor thread
        # counts while request threads may too.
        self._lock = threading.Lock()

    @property
    def exact(self) -> bool:
        return self.tokenizer is not None

    def count(self, text: str) -> int:
        if self.tokenizer is None:
            return estimate_tokens(text)
        with self._lock:
            ids = self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)
        return len(ids["input_ids"])

    @property
    def eos_token_id(self) -> int | None:
        eos = getattr(self.tokenizer, "eos_token_id", None)
        return eos if isinstance(eos, int) else None

    def special_tokens(self) -> tuple[str, ...]:
        """The tokenizer's special and added markup tokens (none without a tokenizer)."""
        if self.tokenizer is None:
            return ()
        found = set(getattr(self.tokenizer, "all_special_tokens", ()) or ())
        decoder = getattr(self.tokenizer, "added_tokens_decoder", None) or {}
        for added in decoder.values():
            content = str(getattr(added, "content", ""))
            # Added tokens match anywhere in the text, special or not; ordinary words that a
            # vocabulary happens to add are left alone unless they look like markup.
            if getattr(added, "special", False) or re.fullmatch(r"[<\[].+[>\]]", content):
                found.add(content)
        return tuple(sorted(token for token in found if isinstance(token, str)))

    @classmethod
    def for_model(cls, config: ModelConfig) -> TokenCounter:
        """The local tokenizer when `model.name` names one on this machine (`embedded`, a
        directory, a model already in the Hugging Face cache); never downloads, never loads
        weights."""
        located = _local_tokenizer_source(config)
        if located is None:
            return cls(None)
        source, kwargs = located
        try:
            from transformers import AutoTokenizer

            route_library_logs()
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, **kwargs)
        except Exception as exc:  # any failure only costs precision: fall back to estimating
            log.info("remote_tokenizer_unavailable", source=source, error=str(exc)[:300])
            return cls(None)
        log.info("remote_tokenizer_loaded", source=source)
        return cls(tokenizer, source)


def _local_tokenizer_source(config: ModelConfig) -> tuple[str, dict[str, str]] | None:
    if config.name == "auto":
        return None  # the server chooses the model: nothing local to match
    if config.name == "embedded":
        try:
            directory = embedded_model_dir()
        except ModelUnavailable:
            return None
        cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
        converted = gguf_cache_path(cache, directory / EMBEDDED_GGUF)
        if (converted / "tokenizer_config.json").is_file():
            return str(converted), {}
        return str(directory), {"gguf_file": EMBEDDED_GGUF}
    gguf = {"gguf_file": config.gguf_file} if config.gguf_file else {}
    path = Path(config.name).expanduser()
    if path.is_dir():
        return str(path), gguf
    if path.is_absolute() or config.name.startswith("."):
        return None  # a path that does not exist is no model id either
    return config.name, gguf
