"""The local engine's fast path: prefill what each prompt does not share with its
conversation's cached prefix, decode the rows together (local_decode), and keep each finished
row's KV state (prompt and reply) for the conversation's next prompt. Also the split of a plain
causal LM into decoder and output matrix that makes each CPU step cheaper.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from relaybot.conversation.identity import ContextKey
from relaybot.inference.engine import BatchFeed, EngineError, GenerationRequest, SamplingParams
from relaybot.inference.local.decode import Decoder, Row, StepModel, StepwiseSupport
from relaybot.inference.local.kv import KVState
from relaybot.inference.local.prefix_cache import PrefixStore
from relaybot.log import get_logger

log = get_logger(component="engine")

# Causal LMs whose logits are exactly `lm_head(decoder(...))`, with no bias, scaling or capping.
_PLAIN_HEAD_MODELS = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"}
_MAX_HEAD_COPY_BYTES = 512 * 1024**2

# Makes the row for a request: (index, request, the conversation whose cache entry it owns).
NewRow = Callable[[int, GenerationRequest, ContextKey | None], Row]


def split_head(model: Any) -> tuple[Any, Any]:
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


def _log_batch(run: _Run, joined: int, prefill_seconds: float, seconds: float) -> None:
    rows = run.rows
    log.debug(
        "batch_generated",
        rows=len(rows),
        joined=joined,
        networks=sorted(run.networks),
        prompt_tokens=sum(len(row.ids) for row in rows),
        reused_tokens=sum(row.reused for row in rows),
        generated_tokens=sum(len(row.output) for row in rows),
        prefill_seconds=round(prefill_seconds, 3),
        seconds=round(seconds, 3),
    )


class _Run:
    """One call's rows: which conversations have a row in it (one row per conversation may
    own its cache entry), and every row prefilled so far (released if the call fails)."""

    def __init__(
        self,
        store: PrefixStore[KVState],
        new_row: NewRow,
        prefill: Callable[[Row], None],
        report: Callable[[Row], None],
    ) -> None:
        self.store = store
        self.new_row = new_row
        self.prefill = prefill
        self.report = report
        self.claimed: set[ContextKey] = set()
        self.rows: list[Row] = []
        # The networks whose conversations had a row in this call (one engine serves them all).
        self.networks: set[str] = set()

    def prefilled(self, requests: Iterable[tuple[int, GenerationRequest]]) -> list[Row]:
        """Rows for (index, request) pairs, each prefilled."""
        pairs = list(requests)
        self.networks.update(r.cache_key[0] for _, r in pairs if r.cache_key is not None)
        new = [self.new_row(index, request, self._key_for(request)) for index, request in pairs]
        for row in new:
            self.rows.append(row)
            self.prefill(row)
        return new

    def _key_for(self, request: GenerationRequest) -> ContextKey | None:
        key = request.cache_key
        if key is None or key in self.claimed or not self.store.enabled:
            return None  # one row per conversation may own its cache entry
        self.claimed.add(key)
        return key

    def finish(self, row: Row, state: KVState | None) -> None:
        """A row left the batch: keep its state for the conversation (or give the entry back
        when it was dropped), and report its text."""
        if row.key is not None:
            self.claimed.discard(row.key)
            if state is not None:
                self.store.put(row.key, [*row.ids, *row.output], state)
            else:
                self.store.release(row.key)
            row.key = None
        if state is not None:
            self.report(row)

    def release(self) -> None:
        """Give back the cache entries of rows still holding one (the call failed)."""
        for row in self.rows:
            if row.key is not None:
                self.store.release(row.key)
                row.key = None


class StepwisePath:
    """Generation through the stepwise decoder, for a model `stepwise_support` accepted."""

    def __init__(
        self,
        model: Any,
        support: StepwiseSupport,
        prefix_cache: PrefixStore[KVState],
        *,
        stop_ids: Sequence[int],
        interrupted: threading.Event,
        decode_tail: Callable[[Sequence[int]], str],
    ) -> None:
        self.model = model
        self.prefix_cache = prefix_cache
        self._cache_argument = support.cache_argument
        self._decoder, self._head = split_head(model)
        self.step_model = StepModel(
            forward=self._next_logits,
            layer_count=support.layer_count,
            cache_argument=support.cache_argument,
            stop_ids=tuple(stop_ids),
            device=model.device,
            interrupted=interrupted,
            decode_tail=decode_tail,
        )

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        indices: Sequence[int],
        params: SamplingParams,
        *,
        new_row: NewRow,
        report: Callable[[Row], None],
        feed: BatchFeed | None,
        counter: Iterator[int],
        max_rows: int,
    ) -> None:
        """Prefill the rows of `indices`, then decode them together; requests from `feed`
        join between steps (numbered from `counter`). Finished rows leave the batch, their KV
        state is kept for the conversation's next prompt and `report` gets them."""
        import torch

        run = _Run(self.prefix_cache, new_row, self._prefill, report)

        def admit(free: int) -> list[Row]:
            assert feed is not None
            arrivals = feed.admit(free, params)
            return run.prefilled((next(counter), request) for request in arrivals)

        def dropped(row: Row) -> bool:
            return feed is not None and feed.dropped(row.index)

        started = time.monotonic()
        decoder = Decoder(
            self.step_model,
            params,
            run.finish,
            admit=admit if feed is not None else None,
            dropped=dropped if feed is not None else None,
            max_rows=max_rows,
        )
        try:
            with torch.inference_mode():
                first = run.prefilled((i, requests[i]) for i in indices)
                prefill_seconds = time.monotonic() - started
                decoder.run(first)
        except torch.cuda.OutOfMemoryError as exc:
            run.release()
            self.prefix_cache.clear()  # cached prefixes are the memory we can give back
            torch.cuda.empty_cache()
            raise EngineError(f"CUDA out of memory for a batch of {len(run.rows)}") from exc
        except RuntimeError as exc:
            run.release()
            raise EngineError(f"generation failed: {exc}") from exc
        _log_batch(run, decoder.joined, prefill_seconds, time.monotonic() - started)

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
                self._cache_argument: row.cache,
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
