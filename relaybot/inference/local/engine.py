"""The local engine: a transformers causal LM on CUDA (bf16, or bitsandbytes 8/4-bit) or CPU.

The engine owns the model and its caches and sorts requests by sampling parameters; the work
is elsewhere. Prompts are tokenised segment by segment so that text typed by people can never
become a structure token (local_tokens). Each conversation's KV cache (prompt and reply) is
kept, LRU-bounded, so the next prompt only prefills what changed; rows decode together and
leave the batch when they stop (local_stepwise, local_decode). Models the decode loop cannot
drive go through transformers' `generate` (local_plain). A GGUF model is converted once into a
safetensors copy in the cache (local_loading), because dequantising GGUF on every start costs
tens of seconds.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relaybot.config.schema import ModelConfig
from relaybot.conversation.formats import Prompt, Segment
from relaybot.conversation.identity import ContextKey
from relaybot.inference.engine import BatchFeed, Done, GenerationRequest, SamplingParams
from relaybot.inference.local.decode import Row, stepwise_support
from relaybot.inference.local.kv import KVState
from relaybot.inference.local.loading import cuda_free_bytes, default_cache_dir, load_model
from relaybot.inference.local.plain import generate_plain
from relaybot.inference.local.prefix_cache import PrefixStore
from relaybot.inference.local.stepwise import StepwisePath
from relaybot.inference.local.tokens import PromptTokens
from relaybot.inference.selection import GiB, ModelChoice, choose_model
from relaybot.log import get_logger

log = get_logger(component="engine")

# Per-conversation KV prefixes kept between replies. At these bounds the embedded model
# (46 KiB of KV per token) keeps about 20k tokens: 32 channels of 700; Relay 12B (160 KiB a
# token in bf16) keeps about 6.5k tokens, enough for three full 2k-token contexts.
DEFAULT_PREFIX_CACHE_ENTRIES = 32
DEFAULT_PREFIX_CACHE_BYTES = 1 * GiB


@dataclass(frozen=True, slots=True)
class RowStats:
    """What one request cost: prompt tokens, how many of them came from the prefix cache
    (not computed again), and tokens generated (the stop token not counted)."""

    prompt_tokens: int
    reused_tokens: int
    generated_tokens: int
    first_token_at: float | None = None  # time.monotonic when its first token was chosen


class TransformersEngine:
    """Owns one model and tokenizer. `generate` runs on the inference thread only; `forget`
    and `count_tokens` may be called from any thread."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        choice: ModelChoice,
        context_window: int,
        *,
        prefix_cache_entries: int = DEFAULT_PREFIX_CACHE_ENTRIES,
        prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.choice = choice
        self.context_window = context_window
        self.description = (
            f"{choice.source}{'/' + choice.gguf_file if choice.gguf_file else ''} "
            f"on {choice.device} ({choice.dtype}, quantization {choice.quantization}, "
            f"attention {getattr(model.config, '_attn_implementation', None) or 'default'})"
        )
        self._interrupted = threading.Event()
        self._tokens = PromptTokens(tokenizer)
        self.prefix_cache: PrefixStore[KVState] = PrefixStore(
            prefix_cache_entries, prefix_cache_bytes
        )
        self.stepwise = stepwise_support(model)
        self._stepwise = self.stepwise.available
        self._fast: StepwisePath | None = None
        if self._stepwise:
            self._fast = StepwisePath(
                model,
                self.stepwise,
                self.prefix_cache,
                stop_ids=self._tokens.stop_ids,
                interrupted=self._interrupted,
                decode_tail=self._tokens.decode,
            )
        else:
            # Loud on purpose: without the decode loop there is no prefix reuse and no
            # continuous batching, and replies to busy channels get several times slower.
            log.warning(
                "fast_path_unavailable",
                reason=self.stepwise.reason,
                effect="no prefix reuse, no continuous batching: plain generate() per batch",
            )
        self.last_stats: dict[int, RowStats] = {}

    # --- construction ------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        config: ModelConfig,
        *,
        prefix_cache_entries: int = DEFAULT_PREFIX_CACHE_ENTRIES,
        prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES,
    ) -> TransformersEngine:
        choice = choose_model(config, cuda_free_bytes() if config.device != "cpu" else None)
        started = time.monotonic()
        log.info(
            "model_loading",
            source=choice.source,
            gguf_file=choice.gguf_file,
            device=choice.device,
            dtype=choice.dtype,
            quantization=choice.quantization,
            reason=choice.reason,
        )
        cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
        model, tokenizer = load_model(
            choice, cache, allow_download=config.allow_download, attention=config.attention
        )
        window = int(getattr(model.config, "max_position_embeddings", 0) or 0) or 4096
        engine = cls(
            model,
            tokenizer,
            choice,
            min(window, config.context_tokens),
            prefix_cache_entries=prefix_cache_entries,
            prefix_cache_bytes=prefix_cache_bytes,
        )
        log.info(
            "model_loaded",
            description=engine.description,
            seconds=round(time.monotonic() - started, 2),
            context_window=engine.context_window,
            prefix_cache_entries=engine.prefix_cache.max_entries if engine._stepwise else 0,
        )
        return engine

    @property
    def degraded(self) -> str:
        if self._stepwise:
            return ""
        return f"decode fast path off ({self.stepwise.reason}): no prefix reuse or batching"

    @property
    def reuses_prefixes(self) -> bool:
        """Whether this model runs the stepwise decoder (and so keeps KV prefixes)."""
        return self._stepwise

    @property
    def bos_token_ids(self) -> tuple[int, ...]:
        """What `encode` puts in front of every prompt."""
        return tuple(self._tokens.bos_ids)

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """Tokens that end a reply (ChatML turn markers and EOS)."""
        return tuple(self._tokens.stop_ids)

    # --- tokenising --------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return self._tokens.count(text)

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids for a prompt, segment by segment (see local_tokens)."""
        return self._tokens.encode(prompt)

    # --- prefix cache ------------------------------------------------------------------

    def forget(self, key: ContextKey) -> None:
        """Drop the cached prefix of a conversation (reset, part); any thread."""
        self.prefix_cache.forget(key)

    # --- generation --------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        results: list[str] = [""] * len(requests)

        def done(index: int, text: str, cut: bool = False) -> None:
            results[index] = text

        self.generate_each(requests, done)
        return results

    def generate_each(self, requests: Sequence[GenerationRequest], done: Done) -> None:
        """Like `generate`, but each completion is reported (request index, text) as soon as
        its row stops, so a short reply does not wait for the longest one in its batch."""
        self.generate_continuous(requests, done, None)

    def generate_continuous(
        self,
        requests: Sequence[GenerationRequest],
        done: Done,
        feed: BatchFeed | None,
        *,
        max_rows: int = 8,
    ) -> None:
        """`generate_each`, and between decode steps requests from `feed` join the running
        batch (up to `max_rows` rows); they are numbered on from `len(requests)` in the order
        they were admitted. Rows whose request `feed` reports dropped leave without text."""
        self.last_stats = {}
        groups: dict[SamplingParams, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(request.params, []).append(index)
        counter = itertools.count(len(requests))
        for params, indices in groups.items():
            if self._fast is not None:
                self._fast.generate(
                    requests,
                    indices,
                    params,
                    new_row=self._row,
                    report=functools.partial(self._report, done=done, limit=params.max_new_tokens),
                    feed=feed,
                    counter=counter,
                    max_rows=max(max_rows, len(indices)),
                )
            else:
                self._generate_plain(requests, indices, params, done)

    def warm_up(self, rows: int = 1, *, prompt_tokens: int = 64, new_tokens: int = 4) -> float:
        """Decode one small batch of `rows` prompts of different lengths, keeping nothing, so
        that lazy initialisation (CUDA context and kernels, allocator pools, oneDNN primitives)
        is paid for before the bot joins channels. Returns the seconds it took."""
        started = time.monotonic()
        params = SamplingParams(max_new_tokens=new_tokens)
        requests = [
            GenerationRequest(
                Prompt((Segment(" ".join(["warm up"] * max(1, prompt_tokens // 2 - 3 * i))),), ()),
                params,
            )
            for i in range(max(1, rows))
        ]
        self.generate(requests)
        seconds = time.monotonic() - started
        log.info("engine_warmed", rows=len(requests), seconds=round(seconds, 3))
        return seconds

    def interrupt(self) -> None:
        """Make a running generate() return at its next step (used at shutdown)."""
        self._interrupted.set()

    def resume(self) -> None:
        """Undo `interrupt`: a new worker starting on this engine generates in full again."""
        self._interrupted.clear()

    def _report(self, row: Row, *, done: Done, limit: int) -> None:
        self.last_stats[row.index] = RowStats(
            len(row.ids), row.reused, len(row.output), row.first_token_at
        )
        text, stopped = self._tokens.reply_and_stop(row.prompt, row.output)
        # A row that stopped on a stop token never appends it, so a full budget means the
        # model was still writing (unless a text stop ended it on the very last token).
        done(row.index, text, cut=len(row.output) >= limit and not stopped)

    def _row(self, index: int, request: GenerationRequest, key: ContextKey | None) -> Row:
        prompt = request.prompt
        ids = self._tokens.fit(prompt, request.params.max_new_tokens, self.context_window)
        return Row(index, prompt, ids, key, text_stops=self._tokens.text_stops(prompt))

    def _generate_plain(
        self,
        requests: Sequence[GenerationRequest],
        indices: Sequence[int],
        params: SamplingParams,
        done: Done,
    ) -> None:
        """Through transformers' `generate` (local_plain): no prefix reuse, no joining."""
        prompts = [requests[index].prompt for index in indices]
        encoded = [
            self._tokens.fit(prompt, params.max_new_tokens, self.context_window)
            for prompt in prompts
        ]
        outputs = generate_plain(
            self.model,
            encoded,
            params,
            pad_id=self._tokens.pad_id,
            stop_ids=self._tokens.stop_ids,
            interrupted=self._interrupted,
        )
        for row, index in enumerate(indices):
            self._report(
                Row(index, prompts[row], encoded[row], None, output=outputs[row]),
                done=done,
                limit=params.max_new_tokens,
            )
