"""The local engine: a transformers causal LM on CUDA (bf16, or bitsandbytes 8/4-bit) or CPU.

Prompts are tokenised segment by segment so that text typed by people can never become a
structure token. Each conversation's KV cache (prompt and reply) is kept, LRU-bounded, so the
next prompt only prefills what changed; rows decode together and leave the batch when they stop.
A GGUF model is converted once into a safetensors copy in the cache, because dequantising GGUF
on every start costs tens of seconds.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relaybot.config.schema import ModelConfig
from relaybot.conversation.formats import Prompt, Segment, cut_at_stops
from relaybot.inference.engine import BatchFeed, EngineError, GenerationRequest, SamplingParams
from relaybot.inference.local.decode import Decoder, KVState, Row, StepModel, stepwise_support
from relaybot.inference.local.loading import cuda_free_bytes, default_cache_dir, load_model
from relaybot.inference.local.prefix_cache import PrefixStore
from relaybot.inference.selection import GiB, ModelChoice, ModelUnavailable, choose_model
from relaybot.log import get_logger

log = get_logger(component="engine")

# Tokens that open or close ChatML turns; never useful as a BOS in front of a prompt.
_CHATML_MARKERS = {"<|im_start|>", "<|im_end|>"}

# Per-conversation KV prefixes kept between replies. At these bounds the embedded model
# (46 KiB of KV per token) keeps about 20k tokens: 32 channels of 700; Relay 12B (160 KiB a
# token in bf16) keeps about 6.5k tokens, enough for three full 2k-token contexts.
DEFAULT_PREFIX_CACHE_ENTRIES = 32
DEFAULT_PREFIX_CACHE_BYTES = 1 * GiB
# Tokenised segments kept for reuse: a channel's turns are re-rendered on every reply, so
# nearly every segment of a prompt has been tokenised before.
_SEGMENT_MEMO_ENTRIES = 32_768


@dataclass(frozen=True, slots=True)
class RowStats:
    """What one request cost: prompt tokens, how many of them came from the prefix cache
    (not computed again), and tokens generated (the stop token not counted)."""

    prompt_tokens: int
    reused_tokens: int
    generated_tokens: int


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
        # The fast tokenizer is shared by the reactor thread (token counting) and the
        # inference thread; Rust tokenizers raise "Already borrowed" under concurrent use.
        self._tokenizer_lock = threading.Lock()
        self._interrupted = threading.Event()
        self._bos_ids = self._bos_prefix()
        self._stop_ids = self._stop_token_ids()
        pad = tokenizer.pad_token_id
        self._pad_id = int(pad if pad is not None else self._stop_ids[0])
        self._segments: OrderedDict[tuple[str, bool], tuple[int, ...]] = OrderedDict()
        self.prefix_cache: PrefixStore[KVState] = PrefixStore(
            prefix_cache_entries, prefix_cache_bytes
        )
        self.stepwise = stepwise_support(model)
        self._stepwise = self.stepwise.available
        split: tuple[Any, Any] = _split_head(model) if self._stepwise else (None, None)
        self._decoder, self._head = split
        if not self._stepwise:
            # Loud on purpose: without the decode loop there is no prefix reuse and no
            # continuous batching, and replies to busy channels get several times slower.
            log.warning(
                "fast_path_unavailable",
                reason=self.stepwise.reason,
                effect="no prefix reuse, no continuous batching: plain generate() per batch",
            )
        self.last_stats: dict[int, RowStats] = {}
        self._stop_texts = {str(tokenizer.convert_ids_to_tokens(i)) for i in self._stop_ids}
        self._step_model = StepModel(
            forward=self._next_logits,
            layer_count=self.stepwise.layer_count,
            cache_argument=self.stepwise.cache_argument,
            stop_ids=tuple(self._stop_ids),
            device=model.device,
            interrupted=self._interrupted,
            decode_tail=self._decode_tail,
        )

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

    def _bos_prefix(self) -> list[int]:
        """Segments are encoded without special tokens, so BOS (Relay's `<s>`) is ours to add;
        tokenizers whose BOS is a ChatML marker (SmolLM2) get none."""
        bos = self.tokenizer.bos_token
        if not bos or bos in _CHATML_MARKERS:
            return []
        return [int(self.tokenizer.bos_token_id)]

    def _stop_token_ids(self) -> list[int]:
        ids: list[int] = []
        for token in ("<|im_end|>", "<|im_start|>"):
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id:
                ids.append(token_id)
        eos = self.tokenizer.eos_token_id
        if isinstance(eos, int) and eos not in ids:
            ids.append(eos)
        if not ids:
            raise ModelUnavailable("the tokenizer has neither ChatML markers nor an EOS token")
        return ids

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
        return tuple(self._bos_ids)

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """Tokens that end a reply (ChatML turn markers and EOS)."""
        return tuple(self._stop_ids)

    # --- tokenising --------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        with self._tokenizer_lock:
            ids = self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)
        return len(ids["input_ids"])

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids for a prompt, segment by segment; segments seen before come from a memo,
        the rest are tokenised in one call per kind."""
        keys = [(segment.text, segment.special) for segment in prompt.segments]
        with self._tokenizer_lock:
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
            ids = list(self._bos_ids)
            for key in keys:
                ids.extend(memo[key])
                memo.move_to_end(key)
            while len(memo) > _SEGMENT_MEMO_ENTRIES:
                memo.popitem(last=False)
        return ids

    # --- prefix cache ------------------------------------------------------------------

    def forget(self, key: tuple[str, str]) -> None:
        """Drop the cached prefix of a conversation (reset, part); any thread."""
        self.prefix_cache.forget(key)

    # --- generation --------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        results: list[str] = [""] * len(requests)

        def done(index: int, text: str) -> None:
            results[index] = text

        self.generate_each(requests, done)
        return results

    def generate_each(
        self, requests: Sequence[GenerationRequest], done: Callable[[int, str], None]
    ) -> None:
        """Like `generate`, but each completion is reported (request index, text) as soon as
        its row stops, so a short reply does not wait for the longest one in its batch."""
        self.generate_continuous(requests, done, None)

    def generate_continuous(
        self,
        requests: Sequence[GenerationRequest],
        done: Callable[[int, str], None],
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
            if self._stepwise:
                self._generate_stepwise(
                    requests, indices, params, done, feed, counter, max(max_rows, len(indices))
                )
            else:
                self._generate_batch(requests, indices, params, done)

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

    def _encoded(self, prompt: Prompt, params: SamplingParams) -> list[int]:
        ids = self.encode(prompt)
        limit = max(1, self.context_window - params.max_new_tokens)
        # Keep the newest tokens if a prompt is over budget (the transcript normally prevents it).
        return ids[-limit:] if len(ids) > limit else ids

    def _text(self, prompt: Prompt, tokens: Sequence[int]) -> str:
        with self._tokenizer_lock:
            text = self.tokenizer.decode(list(tokens), skip_special_tokens=True)
        return cut_at_stops(text, prompt.stop).strip()

    def _decode_tail(self, tokens: Sequence[int]) -> str:
        with self._tokenizer_lock:
            return str(self.tokenizer.decode(list(tokens), skip_special_tokens=True))

    def _text_stops(self, prompt: Prompt) -> tuple[str, ...]:
        """The prompt's stop strings that stop-token ids do not already catch."""
        return tuple(stop for stop in prompt.stop if stop and stop not in self._stop_texts)

    def _report(self, row: Row, done: Callable[[int, str], None]) -> None:
        self.last_stats[row.index] = RowStats(len(row.ids), row.reused, len(row.output))
        done(row.index, self._text(row.prompt, row.output))

    def _row(self, index: int, request: GenerationRequest, key: tuple[str, str] | None) -> Row:
        ids = self._encoded(request.prompt, request.params)
        return Row(index, request.prompt, ids, key, text_stops=self._text_stops(request.prompt))

    def _generate_stepwise(
        self,
        requests: Sequence[GenerationRequest],
        indices: Sequence[int],
        params: SamplingParams,
        done: Callable[[int, str], None],
        feed: BatchFeed | None,
        counter: Iterator[int],
        max_rows: int,
    ) -> None:
        """Prefill what each prompt does not share with its conversation's cached prefix, then
        decode all rows together; finished rows leave the batch, their KV state (prompt and
        reply) is kept for the conversation's next prompt and their text is reported."""
        import torch

        store = self.prefix_cache
        claimed: set[tuple[str, str]] = set()  # conversations with a row in this batch
        rows: list[Row] = []  # every row that was prefilled, for the release on failure

        def key_for(request: GenerationRequest) -> tuple[str, str] | None:
            key = request.cache_key
            if key is None or key in claimed or not store.enabled:
                return None  # one row per conversation may own its cache entry
            claimed.add(key)
            return key

        def prefilled(new: Sequence[Row]) -> list[Row]:
            for row in new:
                rows.append(row)
                self._prefill(row)
            return list(new)

        def finish(row: Row, state: KVState | None) -> None:
            if row.key is not None:
                claimed.discard(row.key)
                if state is not None:
                    store.put(row.key, [*row.ids, *row.output], state)
                else:
                    store.release(row.key)
                row.key = None
            if state is not None:
                self._report(row, done)

        def admit(free: int) -> list[Row]:
            assert feed is not None
            arrivals = feed.admit(free, params)
            return prefilled(
                [self._row(next(counter), request, key_for(request)) for request in arrivals]
            )

        def dropped(row: Row) -> bool:
            return feed is not None and feed.dropped(row.index)

        started = time.monotonic()
        decoder = Decoder(
            self._step_model,
            params,
            finish,
            admit=admit if feed is not None else None,
            dropped=dropped if feed is not None else None,
            max_rows=max_rows,
        )
        try:
            with torch.inference_mode():
                first = prefilled(
                    [self._row(i, requests[i], key_for(requests[i])) for i in indices]
                )
                prefill_seconds = time.monotonic() - started
                decoder.run(first)
        except torch.cuda.OutOfMemoryError as exc:
            self._release(rows)
            store.clear()  # cached prefixes are the memory we can give back
            torch.cuda.empty_cache()
            raise EngineError(f"CUDA out of memory for a batch of {len(rows)}") from exc
        except RuntimeError as exc:
            self._release(rows)
            raise EngineError(f"generation failed: {exc}") from exc
        log.debug(
            "batch_generated",
            rows=len(rows),
            joined=decoder.joined,
            prompt_tokens=sum(len(row.ids) for row in rows),
            reused_tokens=sum(row.reused for row in rows),
            generated_tokens=sum(len(row.output) for row in rows),
            prefill_seconds=round(prefill_seconds, 3),
            seconds=round(time.monotonic() - started, 3),
        )

    def _release(self, rows: Sequence[Row]) -> None:
        for row in rows:
            if row.key is not None:
                self.prefix_cache.release(row.key)
                row.key = None

    def _prefill(self, row: Row) -> None:
        """Fill `row.cache` with every prompt token but the last (the decoder feeds that one)."""
        import torch
        from transformers import DynamicCache

        state: KVState | None = None
        if row.key is not None:
            state, row.reused = self.prefix_cache.take(row.key, row.ids)
        row.cache = state.cache if state is not None else DynamicCache()
        end = len(row.ids) - 1
        if end > row.reused:
            device = self.model.device
            inputs = {
                "input_ids": torch.tensor([row.ids[row.reused : end]], device=device),
                "position_ids": torch.arange(row.reused, end, device=device).unsqueeze(0),
                self.stepwise.cache_argument: row.cache,
                "use_cache": True,
            }
            # Only the cache is wanted here: no logits at all where the model can skip them.
            if self._decoder is not None:
                self._decoder(**inputs)
            else:
                self.model(**inputs, logits_to_keep=1)

    def _next_logits(self, **inputs: Any) -> Any:
        """Logits for the last position of each row."""
        if self._decoder is not None:
            hidden = self._decoder(**inputs).last_hidden_state[:, -1, :]
            return hidden @ self._head
        return self.model(**inputs).logits[:, -1, :]

    def _generate_batch(
        self,
        requests: Sequence[GenerationRequest],
        indices: Sequence[int],
        params: SamplingParams,
        done: Callable[[int, str], None],
    ) -> None:
        """Plain `generate` over a left-padded batch: for models whose cache layout the stepwise
        decoder does not handle (sliding-window or recurrent layers). No prefix reuse."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        interrupted = self._interrupted

        class Interrupted(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full(
                    (input_ids.shape[0],), interrupted.is_set(), dtype=torch.bool,
                    device=input_ids.device,
                )  # fmt: skip

        prompts = [requests[index].prompt for index in indices]
        encoded = [self._encoded(prompt, params) for prompt in prompts]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            # Left padding: every row's last token sits at the same position.
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids) :] = 1
        device = self.model.device
        sampling: dict[str, Any] = {"do_sample": False}
        if params.temperature > 0:
            sampling = {
                "do_sample": True,
                "temperature": params.temperature,
                "top_k": params.top_k or None,
                "top_p": params.top_p,
                "min_p": params.min_p or None,
            }
        if params.seed is not None:
            torch.manual_seed(params.seed)
        try:
            with torch.inference_mode():
                output = self.model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    max_new_tokens=params.max_new_tokens,
                    repetition_penalty=params.repetition_penalty,
                    eos_token_id=self._stop_ids,
                    pad_token_id=self._pad_id,
                    stopping_criteria=StoppingCriteriaList([Interrupted()]),
                    **sampling,
                )
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            raise EngineError(f"CUDA out of memory for a batch of {len(prompts)}") from exc
        except RuntimeError as exc:
            raise EngineError(f"generation failed: {exc}") from exc
        for row, index in enumerate(indices):
            new_tokens = output[row, width:].tolist()
            cut = next(
                (i for i, token in enumerate(new_tokens) if token in self._stop_ids),
                len(new_tokens),
            )
            finished = Row(index, prompts[row], encoded[row], None, output=new_tokens[:cut])
            self._report(finished, done)


# Causal LMs whose logits are exactly `lm_head(decoder(...))`, with no bias, scaling or capping.
_PLAIN_HEAD_MODELS = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"}
_MAX_HEAD_COPY_BYTES = 512 * 1024**2


def _split_head(model: Any) -> tuple[Any, Any]:
    """(decoder, transposed output-embedding matrix) for a plain causal LM on CPU, else
    (None, None). On CPU a [vocab, hidden] weight makes the logits matmul several times slower
    at batch 1 than a contiguous [hidden, vocab] copy (MKL's row-major GEMV path), and the
    vocabulary projection is a large share of each decode step of a small model."""
    try:
        if type(model).__name__ not in _PLAIN_HEAD_MODELS or model.device.type != "cpu":
            return None, None
        head = model.get_output_embeddings()
        decoder = model.get_decoder()
        weight = head.weight
        if getattr(head, "bias", None) is not None or weight.dim() != 2:
            return None, None
        if weight.numel() * weight.element_size() > _MAX_HEAD_COPY_BYTES:
            return None, None
        return decoder, weight.detach().t().contiguous()
    except (AttributeError, TypeError):
        return None, None
