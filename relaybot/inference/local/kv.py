"""KV state for the local engine's decode loop: a conversation's batch-of-one cache as
prefix-store state, and the per-layer buffer a decode batch keeps its rows in (left-padded,
written in place, grown when rows join and trimmed when they leave).

transformers is imported only when a cache is first built: the buffer's logic is the plain
`BufferRows`, and `make_buffer_layer_class` combines it with transformers' DynamicLayer.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any


class KVState:
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


class BufferRows:
    """A full-attention KV layer for one decode batch: rows left-padded in a buffer written in
    place, instead of a torch.cat of the whole cache on every step. The buffer is allocated at
    the first forward, when the states' dtype and shape are known; rows joining before that
    wait as prefixes. Combined with DynamicLayer by `make_buffer_layer_class`."""

    keys: Any
    values: Any
    dtype: Any
    device: Any
    is_initialized: bool

    def __init__(self, prefixes: list[tuple[Any, Any] | None], length: int, capacity: int):
        super().__init__()
        self._prefixes: list[tuple[Any, Any] | None] = list(prefixes)
        self._length = length  # columns in use; row r's prefix ends at column `length`
        self._capacity = capacity
        self._key_buffer: Any = None
        self._value_buffer: Any = None

    def _allocate(self, like: Any) -> None:
        _, heads, _, dim = like.shape
        shape = (len(self._prefixes), heads, self._capacity, dim)
        self._key_buffer = like.new_zeros(shape)
        self._value_buffer = like.new_zeros(shape)
        self._place(self._prefixes, 0)
        self._prefixes = []  # the rows' own caches can be freed now
        self.dtype, self.device = like.dtype, like.device
        self.is_initialized = True

    def _place(self, prefixes: Sequence[tuple[Any, Any] | None], first_row: int) -> None:
        for row, prefix in enumerate(prefixes, start=first_row):
            if prefix is None:
                continue
            keys, values = prefix
            count = keys.shape[-2]
            if count:
                self._key_buffer[row, :, self._length - count : self._length] = keys[0]
                self._value_buffer[row, :, self._length - count : self._length] = values[0]

    def join(self, prefixes: list[tuple[Any, Any] | None], grow: int, capacity: int) -> None:
        """Append rows whose prefixes end where the batch's do, after adding `grow` empty
        columns on the left (a newcomer with a longer prompt) and widening the buffer to
        `capacity` columns."""
        self._length += grow
        self._capacity = capacity
        if self._key_buffer is None:
            self._prefixes.extend(prefixes)
            return
        rows, heads, old_capacity, dim = self._key_buffer.shape
        shape = (rows + len(prefixes), heads, capacity, dim)
        keys = self._key_buffer.new_zeros(shape)
        values = self._value_buffer.new_zeros(shape)
        keys[:rows, :, grow : grow + old_capacity] = self._key_buffer
        values[:rows, :, grow : grow + old_capacity] = self._value_buffer
        self._key_buffer, self._value_buffer = keys, values
        self._place(prefixes, rows)
        self.keys = self._key_buffer[:, :, : self._length]
        self.values = self._value_buffer[:, :, : self._length]

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


@functools.cache
def make_buffer_layer_class() -> type[Any]:
    """BufferRows as a transformers cache layer (made once, on first use)."""
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(BufferRows, DynamicLayer):
        """BufferRows where transformers expects a DynamicLayer."""

    return BufferLayer


def buffer_cache(layers: list[Any]) -> Any:
    """A cache over a decode batch's buffer layers."""
    from transformers.cache_utils import Cache

    return Cache(layers=layers)


def layer_states(cache: Any, index: int) -> tuple[Any, Any] | None:
    """(keys, values) of one layer of a batch-of-one cache, None when it holds nothing."""
    if cache is None:
        return None
    layers = cache.layers
    if index >= len(layers) or layers[index].keys is None or not layers[index].is_initialized:
        return None
    return layers[index].keys, layers[index].values


def row_cache(layers: Sequence[Any], row: int, start: int, end: int) -> Any:
    """A batch-of-one DynamicCache with copies of one row's states in [start, end)."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=[layer.row(row, start, end) for layer in layers])
