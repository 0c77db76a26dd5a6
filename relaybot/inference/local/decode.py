"""The batched decode loop of the local engine, with continuous batching, and whether a model
can run it.

Rows sit left-padded in one preallocated KV buffer per layer (local_kv). Every step decodes all
of them together, samples with the reference client's processors (local_sampling), and lets a
finished row leave at once. Between steps new rows may join the running batch: the buffer grows
to the left when the newcomer's prompt is longer than the batch's history, and to the right
when its reply needs more room, so a request that arrives mid-batch waits for one step, not for
the batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from relaybot.conversation.formats import Prompt
from relaybot.conversation.identity import ContextKey
from relaybot.inference.engine import SamplingParams
from relaybot.inference.local.kv import (
    KVState,
    buffer_cache,
    layer_states,
    make_buffer_layer_class,
    row_cache,
)
from relaybot.inference.local.sampling import Sampler

# How many of a row's newest output tokens are decoded to look for a text stop: enough for
# the longest stop string any format uses (`### Instruction:`) plus a token split or two.
_STOP_TAIL_TOKENS = 24


@dataclass(slots=True)
class Row:
    """One request in a decode batch."""

    index: int  # in the request list (admitted requests continue the numbering)
    prompt: Prompt
    ids: list[int]
    key: ContextKey | None
    reused: int = 0  # prompt tokens whose KV came from the prefix cache
    cache: Any = None  # the prefilled batch-of-one cache (every prompt token but the last)
    output: list[int] = field(default_factory=list)
    text_stops: tuple[str, ...] = ()  # stop strings that are not single stop tokens
    # When its first token was chosen (time.monotonic): the time to first token, for metrics.
    first_token_at: float | None = None


@dataclass(frozen=True, slots=True)
class StepModel:
    """What the decoder needs from the engine."""

    forward: Callable[..., Any]  # model inputs -> logits of each row's last position
    layer_count: int
    cache_argument: str  # the name the model's forward takes its KV cache under
    stop_ids: tuple[int, ...]
    device: Any
    interrupted: threading.Event
    decode_tail: Callable[[Sequence[int]], str]  # token ids -> text, for text stops


# Called when a row leaves the batch: the KV state covering its prompt and reply (to keep for
# the conversation's next prompt), or None when the row was dropped (cancelled).
Finish = Callable[[Row, KVState | None], None]
# Called between steps with the number of free rows: rows to join the batch, prefilled.
Admit = Callable[[int], Sequence[Row]]
# Called every step for each row: True when its request was cancelled.
Dropped = Callable[[Row], bool]


class Decoder:
    """One decode run over a batch that rows may join and leave at every step."""

    def __init__(
        self,
        model: StepModel,
        params: SamplingParams,
        finish: Finish,
        *,
        admit: Admit | None = None,
        dropped: Dropped | None = None,
        max_rows: int = 8,
    ) -> None:
        import torch

        self.model = model
        self.params = params
        self.finish = finish
        self.admit = admit
        self.dropped = dropped
        self.max_rows = max(1, max_rows)
        self.device = model.device
        self.sample = Sampler(params)
        self.stops = torch.tensor(model.stop_ids, device=self.device)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        self.live: list[Row] = []
        self.layers: list[Any] = []
        # Row r's tokens sit in columns [pads[r], filled) of `history`; the last of them is the
        # token fed next, so the KV buffers hold `filled - 1` columns.
        self.filled = 0
        self.capacity = 0
        self.pads: Any = None
        self.positions: Any = None
        self.tokens: Any = None
        self.history: Any = None
        self.cache: Any = None
        self.joined = 0  # rows admitted into the running batch

    def run(self, rows: Sequence[Row]) -> None:
        self.join(rows)
        while self.live:
            self.step()
            if self.model.interrupted.is_set():
                break
            if self.admit is not None and len(self.live) < self.max_rows:
                newcomers = self.admit(self.max_rows - len(self.live))
                self.joined += len(newcomers)
                self.join(newcomers)

    # --- joining -----------------------------------------------------------------------

    def join(self, rows: Sequence[Row]) -> None:
        """Add prefilled rows to the batch (an empty prompt finishes at once, with no text)."""
        from transformers import DynamicCache

        arriving = [row for row in rows if row.ids]
        for row in rows:
            if not row.ids:  # nothing to continue from: an empty reply
                self.finish(row, KVState(row.cache if row.cache is not None else DynamicCache()))
        if not arriving:
            return
        lengths = [len(row.ids) for row in arriving]
        old = len(self.live)
        width = max([self.filled, *lengths]) if old else max(lengths)
        grow = width - self.filled if old else 0  # columns added on the left of the old rows
        capacity = max(self.capacity + grow if old else 0, width + self.params.max_new_tokens)
        pads, positions, tokens, history = self._joined_history(
            arriving, old, width, grow, capacity
        )
        self._join_layers(arriving, old, width, grow, capacity)
        self.live.extend(arriving)
        self.filled, self.capacity = width, capacity
        self.pads, self.positions, self.tokens, self.history = pads, positions, tokens, history

    def _joined_history(
        self, arriving: Sequence[Row], old: int, width: int, grow: int, capacity: int
    ) -> tuple[Any, Any, Any, Any]:
        """(pads, positions, tokens, history) of the `old` rows and the arriving ones, the old
        rows' history moved `grow` columns to the right."""
        import torch

        device = self.device
        lengths = [len(row.ids) for row in arriving]
        pads = torch.tensor([width - n for n in lengths], device=device)
        history = torch.empty((old + len(arriving), capacity), dtype=torch.long, device=device)
        if old:
            history[:old, grow : grow + self.filled] = self.history[:, : self.filled]
            # Left padding repeats a token the row already has: the repetition penalty looks
            # at the set of tokens, so padding never changes the scores.
            first = self.history.gather(1, self.pads.unsqueeze(1))
            history[:old, :grow] = first.expand(old, grow)
            pads = torch.cat([self.pads + grow, pads])
        for r, row in enumerate(arriving, start=old):
            start = width - len(row.ids)
            history[r, :start] = row.ids[-1]
            history[r, start:width] = torch.tensor(row.ids, device=device)
        tokens = torch.tensor([row.ids[-1] for row in arriving], device=device)
        positions = torch.tensor([n - 1 for n in lengths], device=device)
        if old:
            tokens = torch.cat([self.tokens, tokens])
            positions = torch.cat([self.positions, positions])
        return pads, positions, tokens, history

    def _join_layers(
        self, arriving: Sequence[Row], old: int, width: int, grow: int, capacity: int
    ) -> None:
        """Move the arriving rows' prefilled caches into the batch's buffer layers (made here
        for the first rows of the run)."""
        prefixes = [
            [layer_states(row.cache, i) for row in arriving] for i in range(self.model.layer_count)
        ]
        for row in arriving:
            row.cache = None
        if old:
            for layer, layer_prefixes in zip(self.layers, prefixes, strict=True):
                layer.join(layer_prefixes, grow, capacity)
        else:
            buffer_layer = make_buffer_layer_class()
            self.layers = [buffer_layer(p, width - 1, capacity) for p in prefixes]
            self.cache = buffer_cache(self.layers)

    # --- stepping ----------------------------------------------------------------------

    def step(self) -> None:
        """Decode one token for every row; rows that stop, run out of budget, are dropped or
        are interrupted leave the batch."""
        import torch

        filled = self.filled
        columns = torch.arange(filled, device=self.device)
        mask = (columns.unsqueeze(0) >= self.pads.unsqueeze(1)).long()
        logits = self.model.forward(
            input_ids=self.tokens.unsqueeze(1),
            attention_mask=mask,
            position_ids=self.positions.unsqueeze(1),
            use_cache=True,
            **{self.model.cache_argument: self.cache},
        )
        chosen = self.sample(self.history[:, :filled], logits)
        self.history[:, filled] = chosen
        self.filled = filled + 1
        keep = self._retire(chosen)
        if len(keep) == len(self.live):
            self.tokens = chosen
            self.positions = self.positions + 1
            return
        self._keep_rows(keep, chosen)

    def _retire(self, chosen: Any) -> list[int]:
        """Append each row's `chosen` token and finish the rows that are done; the batch
        positions of the rows that go on."""
        import torch

        stopped = torch.isin(chosen, self.stops).tolist()
        chosen_list = chosen.tolist()
        interrupted = self.model.interrupted.is_set()
        now = time.monotonic()
        keep: list[int] = []
        for r, row in enumerate(self.live):
            if self.dropped is not None and self.dropped(row):
                self.finish(row, None)
                continue
            if row.first_token_at is None:
                row.first_token_at = now
            if not stopped[r]:
                row.output.append(chosen_list[r])
            text_stop = not stopped[r] and self._hit_text_stop(row)
            if (
                stopped[r]
                or text_stop
                or interrupted
                or len(row.output) >= self.params.max_new_tokens
            ):
                # The buffers now hold every history column but the newest (just sampled)
                # token, which is in the cache only if it was not a stop token.
                covered = len(row.ids) + len(row.output) - (0 if stopped[r] else 1)
                start = int(self.pads[r])
                self.finish(row, KVState(row_cache(self.layers, r, start, start + covered)))
            else:
                keep.append(r)
        return keep

    def _hit_text_stop(self, row: Row) -> bool:
        if not row.text_stops:
            return False
        tail = self.model.decode_tail(row.output[-_STOP_TAIL_TOKENS:])
        return any(stop in tail for stop in row.text_stops)

    def _keep_rows(self, keep: list[int], chosen: Any) -> None:
        import torch

        self.live = [self.live[r] for r in keep]
        if not keep:
            self.layers, self.cache, self.filled, self.capacity = [], None, 0, 0
            return
        index = torch.tensor(keep, device=self.device)
        pads = self.pads[index]
        # Columns that every remaining row pads can go: less attention work per step.
        trim = int(pads.min())
        for layer in self.layers:
            layer.select(index, trim)
        self.pads = pads - trim
        self.history = self.history[index, trim:]
        self.tokens = chosen[index]
        self.positions = self.positions[index] + 1
        self.filled -= trim
        self.capacity -= trim


@dataclass(frozen=True, slots=True)
class StepwiseSupport:
    """Whether the decode loop can drive a model, and how to hand it the cache."""

    layer_count: int  # KV layers; 0 when the loop cannot drive the model
    cache_argument: str  # "cache" from transformers 5.24 on, "past_key_values" before
    reason: str = ""  # why not, when it cannot

    @property
    def available(self) -> bool:
        return self.layer_count > 0


def stepwise_support(model: Any) -> StepwiseSupport:
    """The decode loop needs plain full-attention KV layers and a forward that takes explicit
    positions and a cache; anything else (sliding windows, recurrent state) goes through
    `generate`. transformers renamed the forward's cache argument in 5.24, so the name is read
    off the signature rather than assumed."""
    import inspect

    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    def unavailable(reason: str, argument: str = "past_key_values") -> StepwiseSupport:
        return StepwiseSupport(0, argument, reason)

    try:
        parameters = set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError) as exc:
        return unavailable(f"forward() has no readable signature ({exc})")
    argument = next((name for name in ("cache", "past_key_values") if name in parameters), "")
    if not argument:
        return unavailable("forward() takes no KV cache argument (cache or past_key_values)")
    missing = {"position_ids", "logits_to_keep"} - parameters
    if missing:
        return unavailable(f"forward() lacks {', '.join(sorted(missing))}", argument)
    if getattr(model.config, "is_encoder_decoder", False):
        return unavailable("encoder-decoder model", argument)
    try:
        layers = DynamicCache(config=model.config).layers
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        return unavailable(f"no dynamic cache for this config ({exc})", argument)
    kinds = sorted({type(layer).__name__ for layer in layers if type(layer) is not DynamicLayer})
    if not layers or kinds:
        return unavailable(f"cache layers other than full attention: {kinds}", argument)
    return StepwiseSupport(len(layers), argument)
