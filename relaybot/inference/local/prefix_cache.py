"""Prefix reuse bookkeeping: per conversation, the token ids of its last prompt (and reply) and
the model state that covers them, bounded by entry count and bytes, least recently used first.

Pure Python: the state is anything with a length, a size and a crop (the engine wraps a KV cache).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class PrefixState(Protocol):
    """Model state for the first `length` tokens of a sequence."""

    @property
    def length(self) -> int: ...

    @property
    def nbytes(self) -> int: ...

    def crop(self, length: int) -> None:
        """Keep the state of the first `length` tokens only."""
        ...


S = TypeVar("S", bound=PrefixState)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    # Slices of a list never equal slices of a tuple: compare like with like.
    a, b = tuple(a), tuple(b)
    limit = min(len(a), len(b))
    if a[:limit] == b[:limit]:
        return limit
    # Binary search on slice equality: the comparisons run in C, so even a 4k-token prompt
    # costs a dozen slice compares instead of a Python loop over every token.
    low, high = 0, limit  # a[:low] == b[:low] holds; a[:high] == b[:high] does not
    while high - low > 1:
        middle = (low + high) // 2
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle
    return low


@dataclass(frozen=True, slots=True)
class PrefixStats:
    entries: int
    nbytes: int
    hits: int
    misses: int
    reused_tokens: int


@dataclass(slots=True)
class _Entry(Generic[S]):
    ids: tuple[int, ...]
    state: S


class PrefixStore(Generic[S]):
    """Thread-safe. `take` hands an entry out (the caller extends it in place while it
    generates) and `put` hands it back; a key forgotten in between is not stored again, so a
    reset that races a running generation still leaves nothing behind."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max(0, max_entries)
        self.max_bytes = max(0, max_bytes)
        self._entries: OrderedDict[Hashable, _Entry[S]] = OrderedDict()
        self._taken: set[Hashable] = set()
        self._lock = threading.Lock()
        self._nbytes = 0
        self._hits = 0
        self._misses = 0
        self._reused = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0

    def take(self, key: Hashable, ids: Sequence[int]) -> tuple[S | None, int]:
        """The state for the longest cached prefix of `ids` (cropped to it) and its length.

        At least the last token of `ids` is always left to compute, because the next token's
        logits come from it. (None, 0) on a miss; the key counts as taken either way."""
        with self._lock:
            self._taken.add(key)
            entry = self._entries.pop(key, None)
            if entry is not None:
                self._nbytes -= entry.state.nbytes
            if entry is None:
                self._misses += 1
                return None, 0
            usable = min(common_prefix(entry.ids, ids), len(ids) - 1, entry.state.length)
            if usable <= 0:
                self._misses += 1
                return None, 0
            self._hits += 1
            self._reused += usable
        entry.state.crop(usable)
        return entry.state, usable

    def put(self, key: Hashable, ids: Sequence[int], state: S) -> bool:
        """Store `state` (covering the first `state.length` of `ids`) as the newest entry.

        False when it was not kept: the key was forgotten since `take`, or the state alone is
        over the byte bound."""
        with self._lock:
            if key not in self._taken:
                return False
            self._taken.discard(key)
            size = state.nbytes
            if not self.enabled or size > self.max_bytes or state.length <= 0:
                return False
            old = self._entries.pop(key, None)
            if old is not None:
                self._nbytes -= old.state.nbytes
            self._entries[key] = _Entry(tuple(ids[: state.length]), state)
            self._nbytes += size
            while self._entries and (
                len(self._entries) > self.max_entries or self._nbytes > self.max_bytes
            ):
                _, evicted = self._entries.popitem(last=False)
                self._nbytes -= evicted.state.nbytes
            return True

    def release(self, key: Hashable) -> None:
        """Give up a taken key without storing anything (its generation failed)."""
        with self._lock:
            self._taken.discard(key)

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._taken.discard(key)
            entry = self._entries.pop(key, None)
            if entry is not None:
                self._nbytes -= entry.state.nbytes

    def clear(self) -> None:
        with self._lock:
            self._taken.clear()
            self._entries.clear()
            self._nbytes = 0

    def keys(self) -> list[Hashable]:
        """Oldest first."""
        with self._lock:
            return list(self._entries)

    def cached_ids(self, key: Hashable) -> tuple[int, ...] | None:
        with self._lock:
            entry = self._entries.get(key)
            return None if entry is None else entry.ids

    def stats(self) -> PrefixStats:
        with self._lock:
            return PrefixStats(
                len(self._entries), self._nbytes, self._hits, self._misses, self._reused
            )
