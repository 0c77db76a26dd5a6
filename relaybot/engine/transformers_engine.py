"""The local engine: a transformers causal LM on CUDA (bf16, or bitsandbytes 8/4-bit) or CPU.

Prompts are tokenised segment by segment so that text typed by people can never become a
structure token. Each conversation's KV cache (prompt and reply) is kept, LRU-bounded, so the
next prompt only prefills what changed; rows decode together and leave the batch when they stop.
A GGUF model is converted once into a safetensors copy in the cache, because dequantising GGUF
on every start costs tens of seconds.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relaybot.config import ModelConfig
from relaybot.engine import EngineError, GenerationRequest, SamplingParams
from relaybot.engine.prefix_cache import PrefixStore
from relaybot.engine.selection import GiB, ModelChoice, ModelUnavailable, choose_model
from relaybot.formats import Prompt
from relaybot.log import get_logger

log = get_logger(component="engine")

# Tokens that open or close ChatML turns; never useful as a BOS in front of a prompt.
_CHATML_MARKERS = {"<|im_start|>", "<|im_end|>"}


def default_cache_dir() -> Path:
    explicit = os.environ.get("RELAYBOT_CACHE_DIR") or os.environ.get("CACHE_DIRECTORY")
    if explicit:
        return Path(explicit.split(":")[0])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "relaybot"


def cuda_free_bytes() -> int | None:
    import torch

    if not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info()
    return int(free)


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
            f"on {choice.device} ({choice.dtype}, quantization {choice.quantization})"
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
        self.prefix_cache: PrefixStore[_KVState] = PrefixStore(
            prefix_cache_entries, prefix_cache_bytes
        )
        self._layer_count = _stepwise_layer_count(model)
        self._stepwise = self._layer_count > 0
        split: tuple[Any, Any] = _split_head(model) if self._stepwise else (None, None)
        self._decoder, self._head = split
        if not self._stepwise:
            log.info("prefix_reuse_unavailable", reason="model needs generate() (cache layout)")
        self.last_stats: list[RowStats] = []

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
        model, tokenizer = _load_model(choice, cache, allow_download=config.allow_download)
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
        self.last_stats = [RowStats(0, 0, 0)] * len(requests)
        groups: dict[SamplingParams, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(request.params, []).append(index)
        for params, indices in groups.items():
            if self._stepwise:
                self._generate_stepwise(requests, indices, params, done)
            else:
                self._generate_batch(requests, indices, params, done)

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

    def _finish(self, row: _Row, done: Callable[[int, str], None]) -> None:
        self.last_stats[row.index] = RowStats(len(row.ids), row.reused, len(row.output))
        done(row.index, self._text(row.prompt, row.output))

    def _generate_stepwise(
        self,
        requests: Sequence[GenerationRequest],
        indices: Sequence[int],
        params: SamplingParams,
        done: Callable[[int, str], None],
    ) -> None:
        """Prefill what each prompt does not share with its conversation's cached prefix, then
        decode all rows together; finished rows leave the batch, their KV state (prompt and
        reply) is kept for the conversation's next prompt and their text is reported."""
        import torch

        store = self.prefix_cache
        rows: list[_Row] = []
        seen: set[tuple[str, str]] = set()
        for index in indices:
            request = requests[index]
            key = request.cache_key
            if key is not None and (key in seen or not store.enabled):
                key = None  # one row per conversation may own its cache entry
            if key is not None:
                seen.add(key)
            rows.append(_Row(index, request.prompt, self._encoded(request.prompt, params), key))
        started = time.monotonic()
        try:
            with torch.inference_mode():
                for row in rows:
                    self._prefill(row)
                prefilled = time.monotonic()
                _Decoder(self, rows, params, done).run()
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
            prompt_tokens=sum(len(row.ids) for row in rows),
            reused_tokens=sum(row.reused for row in rows),
            generated_tokens=sum(len(row.output) for row in rows),
            prefill_seconds=round(prefilled - started, 3),
            seconds=round(time.monotonic() - started, 3),
        )

    def _release(self, rows: Sequence[_Row]) -> None:
        for row in rows:
            if row.key is not None:
                self.prefix_cache.release(row.key)

    def _prefill(self, row: _Row) -> None:
        """Fill `row.cache` with every prompt token but the last (the decoder feeds that one)."""
        import torch
        from transformers import DynamicCache

        state: _KVState | None = None
        if row.key is not None:
            state, row.reused = self.prefix_cache.take(row.key, row.ids)
        row.cache = state.cache if state is not None else DynamicCache()
        end = len(row.ids) - 1
        if end > row.reused:
            device = self.model.device
            inputs = {
                "input_ids": torch.tensor([row.ids[row.reused : end]], device=device),
                "position_ids": torch.arange(row.reused, end, device=device).unsqueeze(0),
                "past_key_values": row.cache,
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

    def _keep(self, row: _Row, state: _KVState) -> None:
        if row.key is not None:
            self.prefix_cache.put(row.key, [*row.ids, *row.output], state)

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
            finished = _Row(index, prompts[row], encoded[row], None, output=new_tokens[:cut])
            self._finish(finished, done)


def _stepwise_layer_count(model: Any) -> int:
    """The number of KV layers, or 0 when the stepwise decoder cannot drive this model: it
    needs plain full-attention layers and a forward that takes explicit positions; anything
    else (sliding windows, recurrent state) goes through generate."""
    import inspect

    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        parameters = inspect.signature(model.forward).parameters
        if not {"position_ids", "past_key_values", "logits_to_keep"} <= set(parameters):
            return 0
        if getattr(model.config, "is_encoder_decoder", False):
            return 0
        layers = DynamicCache(config=model.config).layers
    except (AttributeError, TypeError, ValueError, KeyError):
        return 0
    if not layers or not all(type(layer) is DynamicLayer for layer in layers):
        return 0
    return len(layers)


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


class _KVState:
    """A batch-of-one KV cache as prefix-store state."""

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    @property
    def length(self) -> int:
        return int(self.cache.get_seq_length())

    @property
    def nbytes(self) -> int:
        total = 0
        for layer in self.cache.layers:
            for tensor in (layer.keys, layer.values):
                if tensor is not None:
                    total += tensor.numel() * tensor.element_size()
        return total

    def crop(self, length: int) -> None:
        excess = self.length - length
        if excess > 0:
            # A negative crop removes that many tokens (transformers 4.x and 5.x agree on this).
            self.cache.crop(-excess)


@dataclass(slots=True)
class _Row:
    index: int  # in the request list
    prompt: Prompt
    ids: list[int]
    key: tuple[str, str] | None
    reused: int = 0
    cache: Any = None
    output: list[int] = field(default_factory=list)


class _Decoder:
    """One batched decode: rows join left-padded in a preallocated KV buffer, sample with the
    reference client's processors, and leave the batch as soon as they stop."""

    def __init__(
        self,
        engine: TransformersEngine,
        rows: Sequence[_Row],
        params: SamplingParams,
        done: Callable[[int, str], None],
    ) -> None:
        import torch

        self.engine = engine
        self.params = params
        self.done = done
        self.rows = list(rows)
        self.device = engine.model.device
        self.sample = _Sampler(params)
        self.stops = torch.tensor(engine._stop_ids, device=self.device)
        if params.seed is not None:
            torch.manual_seed(params.seed)

    def run(self) -> None:
        import torch

        engine, params, device = self.engine, self.params, self.device
        live = [row for row in self.rows if row.ids]
        for row in self.rows:
            if not row.ids:
                engine._finish(row, self.done)
        if not live:
            return
        lengths = [len(row.ids) for row in live]
        width = max(lengths)
        capacity = width + params.max_new_tokens
        batch = len(live)
        # Left padding: row r's tokens end at column width - 1, its pad is width - len; its
        # cache (all its tokens but the last) ends one column earlier.
        buffer_layer = _make_buffer_layer_class()
        layers = [
            buffer_layer([_layer_states(row.cache, index) for row in live], width - 1, capacity)
            for index in range(engine._layer_count)
        ]
        for row in live:
            row.cache = None
        cache = _buffer_cache(layers)
        pads = torch.tensor([width - n for n in lengths], device=device)
        columns = torch.arange(capacity, device=device)
        # History for the repetition penalty: pads repeat the row's own last token, which is
        # penalised anyway, so padding never changes the scores.
        history = torch.empty((batch, capacity), dtype=torch.long, device=device)
        for r, row in enumerate(live):
            history[r, : width - lengths[r]] = row.ids[-1]
            history[r, width - lengths[r] : width] = torch.tensor(row.ids, device=device)
        positions = torch.tensor([n - 1 for n in lengths], device=device)
        tokens = torch.tensor([row.ids[-1] for row in live], device=device)
        filled = width  # columns of `history` in use; the cache holds filled - 1 of them
        for step in range(params.max_new_tokens):
            mask = (columns[:filled].unsqueeze(0) >= pads.unsqueeze(1)).long()
            logits = engine._next_logits(
                input_ids=tokens.unsqueeze(1),
                attention_mask=mask,
                position_ids=positions.unsqueeze(1),
                past_key_values=cache,
                use_cache=True,
            )
            chosen = self.sample(history[:, :filled], logits)
            history[:, filled] = chosen
            filled += 1
            stopped = torch.isin(chosen, self.stops)
            last_step = step == params.max_new_tokens - 1 or engine._interrupted.is_set()
            chosen_list = chosen.tolist()
            stopped_list = stopped.tolist()
            keep: list[int] = []
            for r, row in enumerate(live):
                if not stopped_list[r]:
                    row.output.append(chosen_list[r])
                if stopped_list[r] or last_step:
                    # The cache covers the prompt and every output token but the newest.
                    covered = lengths[r] + len(row.output) - (0 if stopped_list[r] else 1)
                    start = width - lengths[r]
                    engine._keep(row, _KVState(_row_cache(layers, r, start, start + covered)))
                    engine._finish(row, self.done)
                else:
                    keep.append(r)
            if last_step or not keep:
                break
            if len(keep) < len(live):
                index = torch.tensor(keep, device=device)
                live = [live[r] for r in keep]
                lengths = [lengths[r] for r in keep]
                pads, history = pads[index], history[index]
                tokens, positions = chosen[index], positions[index]
                # Columns every remaining row pads can go: less attention work per step.
                trim = int(pads.min())
                for layer in layers:
                    layer.select(index, trim)
                pads = pads - trim
                history = history[:, trim:]
                width -= trim
                filled -= trim
                columns = columns[: capacity - trim]
                capacity -= trim
            else:
                tokens = chosen
            positions = positions + 1


class _Sampler:
    """The reference client's sampling, in `generate`'s order: repetition penalty, then
    temperature, top-k, top-p, min-p. Top-p and min-p run on the top-k candidates only, which
    gives the same distribution without sorting the whole vocabulary on every step."""

    def __init__(self, params: SamplingParams) -> None:
        from transformers import (
            LogitsProcessorList,
            MinPLogitsWarper,
            RepetitionPenaltyLogitsProcessor,
            TopPLogitsWarper,
        )

        self.penalty = (
            RepetitionPenaltyLogitsProcessor(params.repetition_penalty)
            if params.repetition_penalty != 1.0
            else None
        )
        self.temperature = params.temperature
        self.top_k = params.top_k
        self.warpers = LogitsProcessorList()
        if params.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(params.top_p))
        if params.min_p:
            self.warpers.append(MinPLogitsWarper(params.min_p))

    def candidates(self, history: Any, logits: Any) -> tuple[Any, Any | None]:
        """(scores, token ids) of the tokens sampling may pick, scores -inf where filtered
        out; token ids None when the scores cover the whole vocabulary."""
        scores = logits.float()
        if self.penalty is not None:
            scores = self.penalty(history, scores)
        if self.temperature != 1.0:
            scores = scores / self.temperature
        candidates = None
        if 0 < self.top_k < scores.shape[-1]:
            scores, candidates = scores.topk(self.top_k, dim=-1)
        scores = self.warpers(history, scores)  # the warpers read the scores only
        return scores, candidates

    def __call__(self, history: Any, logits: Any) -> Any:
        import torch

        if self.temperature <= 0:
            scores = logits.float()
            if self.penalty is not None:
                scores = self.penalty(history, scores)
            return scores.argmax(dim=-1)
        scores, candidates = self.candidates(history, logits)
        picked = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1)
        if candidates is not None:
            picked = candidates.gather(-1, picked)
        return picked[:, 0]


def _buffer_cache(layers: list[Any]) -> Any:
    from transformers.cache_utils import Cache

    return Cache(layers=layers)


def _layer_states(cache: Any, index: int) -> tuple[Any, Any] | None:
    layers = cache.layers
    if index >= len(layers) or layers[index].keys is None or not layers[index].is_initialized:
        return None
    return layers[index].keys, layers[index].values


def _row_cache(layers: Sequence[Any], row: int, start: int, end: int) -> Any:
    """A batch-of-one DynamicCache with copies of one row's states in [start, end)."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=[layer.row(row, start, end) for layer in layers])


@functools.cache
def _make_buffer_layer_class() -> type[Any]:
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(DynamicLayer):
        """A full-attention KV layer for one decode batch: rows left-padded in a buffer
        allocated once and written in place, instead of a torch.cat of the whole cache on
        every step."""

        def __init__(self, prefixes: list[tuple[Any, Any] | None], length: int, capacity: int):
            super().__init__()
            self._prefixes: list[tuple[Any, Any] | None] | None = prefixes
            self._length = length  # columns in use; row r's prefix ends at column `length`
            self._capacity = capacity
            self._key_buffer: Any = None
            self._value_buffer: Any = None

        def _allocate(self, like: Any) -> None:
            batch, heads, _, dim = like.shape
            shape = (batch, heads, self._capacity, dim)
            self._key_buffer = like.new_zeros(shape)
            self._value_buffer = like.new_zeros(shape)
            for row, prefix in enumerate(self._prefixes or []):
                if prefix is None:
                    continue
                keys, values = prefix
                count = keys.shape[-2]
                if count:
                    self._key_buffer[row, :, self._length - count : self._length] = keys[0]
                    self._value_buffer[row, :, self._length - count : self._length] = values[0]
            self._prefixes = None  # the rows' own caches can be freed now
            self.dtype, self.device = like.dtype, like.device
            self.is_initialized = True

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
            if self._key_buffer is None:
                self._allocate(key_states)
            end = self._length + key_states.shape[-2]
            if end > self._key_buffer.shape[-2]:
                raise RuntimeError("decode buffer overflow")
            self._key_buffer[:, :, self._length : end] = key_states
            self._value_buffer[:, :, self._length : end] = value_states
            self._length = end
            self.keys = self._key_buffer[:, :, :end]
            self.values = self._value_buffer[:, :, :end]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self._length

        def select(self, index: Any, trim: int) -> None:
            """Keep the rows in `index`, dropping the first `trim` (all-padding) columns."""
            self._key_buffer = self._key_buffer[index, :, trim:]
            self._value_buffer = self._value_buffer[index, :, trim:]
            self._length -= trim
            self._capacity -= trim
            self.keys = self._key_buffer[:, :, : self._length]
            self.values = self._value_buffer[:, :, : self._length]

        def row(self, row: int, start: int, end: int) -> tuple[Any, Any]:
            return (
                self._key_buffer[row : row + 1, :, start:end],
                self._value_buffer[row : row + 1, :, start:end],
            )

    return BufferLayer


def _torch_dtype(name: str) -> Any:
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def _gguf_cache_path(cache: Path, gguf_path: Path) -> Path:
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return cache / "models" / f"{gguf_path.stem}-{key.hexdigest()[:12]}"


def _load_model(choice: ModelChoice, cache: Path, *, allow_download: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    # Progress bars would land in the journal as garbage lines.
    transformers_logging.disable_progress_bar()

    dtype = _torch_dtype(choice.dtype)
    local_only = not allow_download
    if choice.gguf_file:
        gguf_path = Path(choice.source) / choice.gguf_file
        converted = _gguf_cache_path(cache, gguf_path) if gguf_path.is_file() else None
        if converted is not None and (converted / "config.json").is_file():
            source, kwargs = str(converted), {}
        else:
            source, kwargs = choice.source, {"gguf_file": choice.gguf_file}
    else:
        source, kwargs, converted = choice.source, {}, None
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only, **kwargs)
        load_kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": local_only, **kwargs}
        if choice.quantization != "none":
            load_kwargs["quantization_config"] = _bitsandbytes_config(choice, source, local_only)
        if choice.device == "cuda":
            load_kwargs["device_map"] = "cuda"
        model = AutoModelForCausalLM.from_pretrained(source, **load_kwargs)
    except (OSError, ValueError, ImportError) as exc:
        hint = "" if allow_download else " (downloads are off: set model.allow_download = true)"
        raise ModelUnavailable(f"cannot load model {source!r}: {exc}{hint}") from exc
    model.eval()
    if converted is not None and "gguf_file" in kwargs:
        _save_converted(model, tokenizer, converted)
    return model, tokenizer


def _bitsandbytes_config(choice: ModelChoice, source: str, local_only: bool) -> Any:
    from transformers import AutoConfig, BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ModelUnavailable(
            f"quantization '{choice.quantization}' needs bitsandbytes: pip install 'relaybot[cuda]'"
        ) from exc
    existing = getattr(
        AutoConfig.from_pretrained(source, local_files_only=local_only), "quantization_config", None
    )
    if existing is not None:
        return existing  # a pre-quantised checkpoint (the Relay 8-bit and 4-bit repos)
    if choice.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=_torch_dtype(choice.dtype),
        bnb_4bit_use_double_quant=True,
    )


def _save_converted(model: Any, tokenizer: Any, target: Path) -> None:
    """Copy GGUF-loaded weights into a plain model and save it as safetensors, once."""
    from transformers import AutoModelForCausalLM

    try:
        config = model.config.__class__.from_dict(model.config.to_dict())
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.architectures = [type(model).__name__]
        plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
        plain.load_state_dict(model.state_dict())
        partial = target.with_name(target.name + ".partial")
        plain.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        partial.replace(target)
        log.info("model_cache_written", path=str(target))
    except (OSError, RuntimeError, ValueError) as exc:
        # The cache only saves start-up time; the bot runs the same without it.
        log.warning("model_cache_failed", path=str(target), error=str(exc))


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """The text up to the first stop sequence (formats whose stops are plain text, such as
    `USER:` or a new transcript line, cannot stop on token ids alone)."""
    cut = len(text)
    for stop in stops:
        if stop:
            found = text.find(stop)
            if found >= 0:
                cut = min(cut, found)
    return text[:cut]
