"""Prefix reuse: the store's bookkeeping (prefix match, crop, LRU and byte bounds, forget) with
plain values, the KV-cache wrapper on a real DynamicCache, and, on the real embedded model,
that reusing a cached prefix gives exactly the text a full re-prefill gives."""

from __future__ import annotations

import threading

import pytest

from relaybot.conversation.formats import RelayFormat, Turn
from relaybot.inference.engine import GenerationRequest, SamplingParams
from relaybot.inference.local.prefix_cache import PrefixStore, common_prefix


class FakeState:
    """Stands for a KV cache: `length` tokens of `per_token` bytes each."""

    def __init__(self, length: int, per_token: int = 10) -> None:
        self._length = length
        self.per_token = per_token
        self.crops: list[int] = []

    @property
    def length(self) -> int:
        return self._length

    @property
    def nbytes(self) -> int:
        return self._length * self.per_token

    def crop(self, length: int) -> None:
        self.crops.append(length)
        self._length = min(self._length, length)


def store(entries: int = 4, max_bytes: int = 1_000_000) -> PrefixStore[FakeState]:
    return PrefixStore(entries, max_bytes)


def put_fresh(cache: PrefixStore[FakeState], key: str, ids: list[int]) -> FakeState:
    state = FakeState(len(ids))
    assert cache.take(key, ids) == (None, 0)
    assert cache.put(key, ids, state)
    return state


# --- common_prefix ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([], [], 0),
        ([1, 2, 3], [], 0),
        ([1, 2, 3], [1, 2, 3], 3),
        ([1, 2, 3], [1, 2, 3, 4, 5], 3),
        ([1, 2, 3, 4], [1, 2, 9, 4], 2),
        ([7, 2, 3], [1, 2, 3], 0),
        (list(range(5000)), [*range(4321), -1, *range(4322, 5000)], 4321),
    ],
)
def test_common_prefix(a: list[int], b: list[int], expected: int) -> None:
    assert common_prefix(a, b) == expected
    assert common_prefix(tuple(a), b) == expected  # lists and tuples compare alike


# --- the store ---------------------------------------------------------------------------------


def test_a_miss_returns_nothing_and_the_key_can_then_be_stored() -> None:
    cache = store()
    assert cache.take("a", [1, 2, 3]) == (None, 0)
    state = FakeState(3)
    assert cache.put("a", [1, 2, 3, 4], state)
    assert cache.keys() == ["a"]
    assert cache.cached_ids("a") == (1, 2, 3)  # only what the state covers


def test_put_without_take_is_refused() -> None:
    cache = store()
    assert not cache.put("a", [1, 2], FakeState(2))
    assert cache.keys() == []


def test_a_longer_prompt_reuses_the_whole_cached_prefix() -> None:
    cache = store()
    state = put_fresh(cache, "a", [1, 2, 3, 4])
    taken, reused = cache.take("a", [1, 2, 3, 4, 5, 6])
    assert taken is state and reused == 4
    assert state.length == 4
    assert cache.keys() == []  # handed out while it generates


def test_a_diverging_prompt_crops_the_state_to_the_common_prefix() -> None:
    cache = store()
    state = put_fresh(cache, "a", [1, 2, 3, 4, 5, 6])
    taken, reused = cache.take("a", [1, 2, 3, 9, 9])
    assert taken is state and reused == 3
    assert state.crops == [3] and state.length == 3


def test_the_same_prompt_again_leaves_its_last_token_to_compute() -> None:
    cache = store()
    state = put_fresh(cache, "a", [1, 2, 3, 4])
    _, reused = cache.take("a", [1, 2, 3, 4])
    assert reused == 3 and state.length == 3  # the next token's logits need the last one


def test_no_common_prefix_is_a_miss_and_drops_the_entry() -> None:
    cache = store()
    put_fresh(cache, "a", [1, 2, 3])
    assert cache.take("a", [9, 2, 3]) == (None, 0)
    assert cache.keys() == []
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries, stats.nbytes) == (0, 2, 0, 0)


def test_a_state_shorter_than_the_match_bounds_the_reuse() -> None:
    cache = store()
    assert cache.take("a", [1, 2, 3, 4, 5]) == (None, 0)
    cache.put("a", [1, 2, 3, 4, 5], FakeState(2))  # covers [1, 2] only
    _, reused = cache.take("a", [1, 2, 3, 4, 5, 6])
    assert reused == 2


def test_keys_are_independent() -> None:
    cache = store()
    put_fresh(cache, "a", [1, 2, 3])
    put_fresh(cache, "b", [4, 5, 6])
    assert cache.take("b", [1, 2, 3, 4]) == (None, 0)
    state, reused = cache.take("a", [1, 2, 3, 4])
    assert state is not None and reused == 3


def test_least_recently_used_entries_go_first_when_over_the_entry_bound() -> None:
    cache = store(entries=2)
    put_fresh(cache, "a", [1, 2])
    put_fresh(cache, "b", [3, 4])
    # Using "a" again makes "b" the oldest.
    state, _ = cache.take("a", [1, 2, 5])
    assert state is not None
    cache.put("a", [1, 2, 5], FakeState(3))
    put_fresh(cache, "c", [6, 7])
    assert cache.keys() == ["a", "c"]


def test_the_byte_bound_evicts_oldest_and_refuses_a_state_larger_than_it() -> None:
    cache = store(entries=10, max_bytes=100)
    put_fresh(cache, "a", [1] * 4)  # 40 bytes
    put_fresh(cache, "b", [2] * 4)  # 80
    put_fresh(cache, "c", [3] * 3)  # 110 > 100: "a" goes
    assert cache.keys() == ["b", "c"]
    assert cache.stats().nbytes == 70
    assert cache.take("d", [4] * 11) == (None, 0)
    assert not cache.put("d", [4] * 11, FakeState(11))  # 110 bytes alone
    assert cache.keys() == ["b", "c"]


def test_forget_drops_an_entry() -> None:
    cache = store()
    put_fresh(cache, "a", [1, 2, 3])
    cache.forget("a")
    cache.forget("never-seen")
    assert cache.keys() == []
    assert cache.take("a", [1, 2, 3, 4]) == (None, 0)


def test_a_key_forgotten_while_taken_is_not_stored_again() -> None:
    cache = store()
    put_fresh(cache, "a", [1, 2, 3])
    state, _ = cache.take("a", [1, 2, 3, 4])
    assert state is not None
    cache.forget("a")  # a reset arrives while the reply generates
    assert not cache.put("a", [1, 2, 3, 4, 5], state)
    assert cache.keys() == []


def test_release_gives_a_taken_key_up() -> None:
    cache = store()
    assert cache.take("a", [1]) == (None, 0)
    cache.release("a")
    assert not cache.put("a", [1], FakeState(1))


def test_a_disabled_store_keeps_nothing() -> None:
    for cache in (PrefixStore[FakeState](0, 1000), PrefixStore[FakeState](4, 0)):
        assert not cache.enabled
        assert cache.take("a", [1, 2]) == (None, 0)
        assert not cache.put("a", [1, 2], FakeState(2))


def test_clear_empties_the_store() -> None:
    cache = store()
    put_fresh(cache, "a", [1, 2])
    cache.clear()
    assert cache.keys() == [] and cache.stats().nbytes == 0


def test_the_store_is_safe_to_forget_from_another_thread() -> None:
    cache = store(entries=1000)
    errors: list[BaseException] = []

    def churn(prefix: str) -> None:
        try:
            for i in range(300):
                key = f"{prefix}{i % 7}"
                state, _ = cache.take(key, [i, i + 1])
                cache.put(key, [i, i + 1], state or FakeState(2))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def forget() -> None:
        for i in range(300):
            cache.forget(f"x{i % 7}")

    threads = [threading.Thread(target=churn, args=("x",)), threading.Thread(target=forget)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not errors
    assert cache.stats().nbytes == 20 * len(cache.keys())


# --- the KV-cache wrapper on a real DynamicCache ------------------------------------------------


def test_kv_state_crops_a_dynamic_cache() -> None:
    torch = pytest.importorskip("torch")
    from transformers import DynamicCache

    from relaybot.inference.local.kv import KVState as _KVState

    layers = [(torch.randn(1, 2, 10, 4), torch.randn(1, 2, 10, 4)) for _ in range(3)]
    state = _KVState(DynamicCache(ddp_cache_data=layers))
    assert state.length == 10
    assert state.nbytes == 3 * 2 * (2 * 10 * 4) * 4
    state.crop(6)
    assert state.length == 6
    assert torch.equal(state.cache.layers[1].keys, layers[1][0][:, :, :6])
    state.crop(8)  # never grows
    assert state.length == 6


# --- on the real model ----------------------------------------------------------------------------

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=24)


def channel(lines: int, tag: str) -> list[Turn]:
    turns = [Turn("relaybot", "/join #c"), Turn("system", "* Now talking in #c")]
    for i in range(lines):
        turns.append(Turn(("alice", "bob", "carol")[i % 3], f"{tag} says thing number {i}"))
    return turns


@pytest.fixture
def engine(real_engine: object) -> object:
    real_engine.resume()  # type: ignore[attr-defined]  # a bot stopped earlier interrupted it
    real_engine.prefix_cache.clear()  # type: ignore[attr-defined]
    yield real_engine
    real_engine.prefix_cache.clear()  # type: ignore[attr-defined]


def render(turns: list[Turn]) -> object:
    return RelayFormat().render(turns, "relaybot")


@pytest.mark.integration
def test_reused_prefix_gives_the_same_text_as_a_full_prefill(engine: object) -> None:
    key = ("net", "#c")
    turns = channel(20, "cats")
    reused_counts = []
    for round_ in range(3):
        turns.append(Turn("dave", f"relaybot: question {round_} about cats?"))
        prompt = render(turns)
        [reused] = engine.generate([GenerationRequest(prompt, GREEDY, key)])  # type: ignore[attr-defined]
        reused_counts.append(engine.last_stats[0].reused_tokens)  # type: ignore[attr-defined]
        [fresh] = engine.generate([GenerationRequest(prompt, GREEDY)])  # type: ignore[attr-defined]
        assert engine.last_stats[0].reused_tokens == 0  # type: ignore[attr-defined]
        assert reused == fresh
        turns.append(Turn("relaybot", reused or "..."))
    assert reused_counts[0] == 0
    assert all(count > 100 for count in reused_counts[1:])  # the earlier rounds were kept


@pytest.mark.integration
def test_an_edited_context_crops_the_cache_and_still_matches(engine: object) -> None:
    key = ("net", "#edit")
    turns = channel(20, "dogs")
    engine.generate([GenerationRequest(render(turns), GREEDY, key)])  # type: ignore[attr-defined]
    edited = [*turns[:8], Turn("erin", "something else entirely"), *turns[8:]]
    [reused] = engine.generate([GenerationRequest(render(edited), GREEDY, key)])  # type: ignore[attr-defined]
    stats = engine.last_stats[0]  # type: ignore[attr-defined]
    assert 0 < stats.reused_tokens < stats.prompt_tokens - 20
    [fresh] = engine.generate([GenerationRequest(render(edited), GREEDY)])  # type: ignore[attr-defined]
    assert reused == fresh


@pytest.mark.integration
def test_a_mixed_batch_matches_rows_generated_alone(engine: object) -> None:
    prompts = [render(channel(n, tag)) for n, tag in ((25, "a"), (3, "b"), (12, "c"))]
    keys = [("net", "#a"), ("net", "#b"), ("net", "#c")]
    # Warm one conversation so the batch mixes a reused row with cold ones of other lengths.
    engine.generate([GenerationRequest(prompts[0], GREEDY, keys[0])])  # type: ignore[attr-defined]
    batch = engine.generate(  # type: ignore[attr-defined]
        [GenerationRequest(p, GREEDY, k) for p, k in zip(prompts, keys, strict=True)]
    )
    assert engine.last_stats[0].reused_tokens > 0  # type: ignore[attr-defined]
    alone = [engine.generate([GenerationRequest(p, GREEDY)])[0] for p in prompts]  # type: ignore[attr-defined]
    assert batch == alone


@pytest.mark.integration
def test_the_stepwise_decoder_matches_transformers_generate(engine: object) -> None:
    import torch

    prompt = render([*channel(10, "fish"), Turn("dave", "relaybot: what is a fish?")])
    ids = engine.encode(prompt)  # type: ignore[attr-defined]
    model = engine.model  # type: ignore[attr-defined]
    stops = list(engine.stop_token_ids)  # type: ignore[attr-defined]
    with torch.inference_mode():
        output = model.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones((1, len(ids)), dtype=torch.long),
            max_new_tokens=GREEDY.max_new_tokens,
            do_sample=False,
            repetition_penalty=GREEDY.repetition_penalty,
            eos_token_id=stops,
            pad_token_id=stops[0],
        )
    new = output[0, len(ids) :].tolist()
    new = new[: next((i for i, t in enumerate(new) if t in stops), len(new))]
    expected = engine.tokenizer.decode(new, skip_special_tokens=True).strip()  # type: ignore[attr-defined]
    [text] = engine.generate([GenerationRequest(prompt, GREEDY)])  # type: ignore[attr-defined]
    assert text == expected


@pytest.mark.integration
def test_forget_and_the_entry_bound_on_the_engine(engine: object) -> None:
    cache = engine.prefix_cache  # type: ignore[attr-defined]
    small = SamplingParams(temperature=0.0, max_new_tokens=2)
    for name in ("#x", "#y"):
        engine.generate([GenerationRequest(render(channel(3, name)), small, ("net", name))])  # type: ignore[attr-defined]
    assert set(cache.keys()) == {("net", "#x"), ("net", "#y")}
    cached = cache.cached_ids(("net", "#x"))
    assert cached is not None and len(cached) >= len(engine.encode(render(channel(3, "#x"))))  # type: ignore[attr-defined]
    engine.forget(("net", "#x"))  # type: ignore[attr-defined]
    assert cache.keys() == [("net", "#y")]
    bound = cache.max_entries
    try:
        cache.max_entries = 1
        engine.generate([GenerationRequest(render(channel(3, "z")), small, ("net", "#z"))])  # type: ignore[attr-defined]
        assert cache.keys() == [("net", "#z")]
    finally:
        cache.max_entries = bound
