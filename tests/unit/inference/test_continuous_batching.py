"""Continuous batching: requests join a batch that is already decoding and leave it when they
stop or are cancelled.

The worker's side runs against a scripted engine that steps like the real one; the engine's side
runs the real embedded model and checks that a row which joined mid-batch (longer or shorter
than the rows already there, with or without a cached prefix) gets exactly the greedy text it
gets alone, and that a cancelled row leaves without text and without a stale cache entry.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence

import pytest

from relaybot.bridge.more import resumed_prompt
from relaybot.conversation.formats import Prompt, RelayFormat, Segment, Turn
from relaybot.inference.engine import BatchFeed, GenerationRequest, SamplingParams
from relaybot.inference.worker import Completion, InferenceWorker, Job

TIMEOUT = 10.0
FAST = SamplingParams(temperature=0.0, max_new_tokens=8)
OTHER = SamplingParams(temperature=0.0, max_new_tokens=4)


def make_job(i: int, params: SamplingParams = FAST) -> Job:
    return Job(
        job_id=i,
        key=("net", f"#c{i}"),
        reply_to=f"#c{i}",
        speaker="relaybot",
        request=GenerationRequest(Prompt((Segment(str(i)),), stop=()), params),
    )


class Completions:
    def __init__(self) -> None:
        self.items: list[Completion] = []
        self.changed = threading.Condition()

    def __call__(self, completion: Completion) -> None:
        with self.changed:
            self.items.append(completion)
            self.changed.notify_all()

    def wait_for(self, count: int) -> list[Completion]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.items) >= count, TIMEOUT)
            return list(self.items)

    def by_job(self) -> dict[int, Completion]:
        return {item.job.job_id: item for item in self.items}


class SteppingEngine:
    """Decodes in steps like the local engine: each row needs `steps_for[prompt]` steps (3 by
    default); between steps it asks the feed for more rows and whether a row was dropped. The
    test gates each step, so it decides exactly when jobs arrive."""

    description = "stepping"
    context_window = 2048

    def __init__(self) -> None:
        self.calls: list[list[str]] = []  # prompt texts per generate_continuous call
        self.step_gate = threading.Semaphore(0)
        self.stepped = threading.Semaphore(0)
        self.steps_for: dict[str, int] = {}

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        raise AssertionError("the worker should batch continuously")

    def generate_continuous(
        self,
        requests: Sequence[GenerationRequest],
        done: Callable[[int, str], None],
        feed: BatchFeed | None,
        *,
        max_rows: int = 8,
    ) -> None:
        assert feed is not None
        params = requests[0].params  # the real engine decodes each settings group in turn
        texts = [request.prompt.text for request in requests]
        self.calls.append(texts)
        left = {i: self.steps_for.get(text, 3) for i, text in enumerate(texts)}
        while left:
            assert self.step_gate.acquire(timeout=TIMEOUT), "the test never let a step run"
            for index in list(left):
                if feed.dropped(index):
                    del left[index]
                    continue
                left[index] -= 1
                if left[index] == 0:
                    del left[index]
                    done(index, f"echo {texts[index]}")
            for request in feed.admit(max_rows - len(left), params):
                texts.append(request.prompt.text)  # also extends self.calls[-1]
                left[len(texts) - 1] = self.steps_for.get(request.prompt.text, 3)
            self.stepped.release()

    def run_steps(self, count: int) -> None:
        for _ in range(count):
            self.step_gate.release()
            assert self.stepped.acquire(timeout=TIMEOUT)


@pytest.fixture
def stepping() -> tuple[SteppingEngine, Completions]:
    return SteppingEngine(), Completions()


@contextlib.contextmanager
def started(worker: InferenceWorker, engine: SteppingEngine) -> Iterator[None]:
    """Run the worker; at the end let any step still gated run, then stop it."""
    worker.start()
    try:
        yield
    finally:
        for _ in range(8):
            engine.step_gate.release()
        worker.stop(timeout=TIMEOUT)


def test_a_job_submitted_mid_batch_joins_it_and_finishes_first(stepping) -> None:
    engine, completions = stepping
    engine.steps_for = {"1": 6, "2": 2}
    worker = InferenceWorker(engine, completions, max_batch=4, batch_window=0)
    worker.submit(make_job(1))
    with started(worker, engine):
        engine.run_steps(1)
        worker.submit(make_job(2))
        engine.run_steps(3)  # job 2 joins after step 1 and needs 2 more steps
        [first] = completions.wait_for(1)
        assert (first.job.job_id, first.text, first.batch_size) == (2, "echo 2", 2)
        engine.run_steps(2)
        second = completions.wait_for(2)[1]
        assert (second.job.job_id, second.text) == (1, "echo 1")
        assert engine.calls == [["1", "2"]]  # one batch: job 2 never waited for job 1


def test_a_job_with_other_settings_waits_for_the_next_batch(stepping) -> None:
    engine, completions = stepping
    worker = InferenceWorker(engine, completions, max_batch=4, batch_window=0)
    worker.submit(make_job(1))
    with started(worker, engine):
        engine.run_steps(1)
        worker.submit(make_job(2, OTHER))
        worker.submit(make_job(3))  # behind the held job: it waits too, keeping the order
        engine.run_steps(2)
        assert [c.job.job_id for c in completions.wait_for(1)] == [1]
        engine.run_steps(3)
        done = completions.wait_for(3)
        assert sorted(c.job.job_id for c in done) == [1, 2, 3]
        assert engine.calls[0] == ["1"]
        assert engine.calls[1] == ["2", "3"]


def test_a_job_cancelled_while_generating_leaves_the_batch(stepping) -> None:
    engine, completions = stepping
    engine.steps_for = {"1": 5, "2": 5}
    worker = InferenceWorker(engine, completions, max_batch=4, batch_window=0)
    worker.submit(make_job(1))
    worker.submit(make_job(2))
    with started(worker, engine):
        engine.run_steps(1)
        worker.cancel(2)
        engine.run_steps(4)
        done = completions.wait_for(2)
        results = {c.job.job_id: (c.text, c.error) for c in done}
        assert results == {1: ("echo 1", None), 2: (None, "cancelled")}


def test_a_full_batch_admits_nobody_until_a_row_leaves(stepping) -> None:
    engine, completions = stepping
    engine.steps_for = {"1": 2, "2": 4, "3": 1}
    worker = InferenceWorker(engine, completions, max_batch=2, batch_window=0.2)
    worker.submit(make_job(1))
    worker.submit(make_job(2))
    with started(worker, engine):
        engine.run_steps(1)
        worker.submit(make_job(3))
        engine.run_steps(1)  # job 1 leaves at this step; job 3 takes its row
        assert engine.calls == [["1", "2", "3"]]
        engine.run_steps(1)
        assert [c.job.job_id for c in completions.wait_for(2)] == [1, 3]


def test_the_worker_can_be_told_not_to_batch_continuously(stepping) -> None:
    engine, completions = stepping
    engine.generate_each = lambda requests, done: [  # type: ignore[attr-defined]
        done(i, f"each {r.prompt.text}") for i, r in enumerate(requests)
    ]
    worker = InferenceWorker(engine, completions, continuous=False, batch_window=0)
    worker.submit(make_job(1))
    worker.start()
    try:
        [only] = completions.wait_for(1)
        assert only.text == "each 1" and engine.calls == []
    finally:
        worker.stop(timeout=TIMEOUT)


# --- the real engine -----------------------------------------------------------------------------

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=20)


def channel(lines: int, tag: str) -> Prompt:
    turns = [Turn("relaybot", "/join #c"), Turn("system", "* Now talking in #c")]
    for i in range(lines):
        turns.append(Turn(("alice", "bob", "carol")[i % 3], f"{tag} says thing number {i}"))
    turns.append(Turn("dave", f"relaybot: what do you think about {tag}?"))
    return RelayFormat().render(turns, "relaybot")


class ScriptedFeed:
    """Hands given requests to the running batch at given admit calls; drops given indices
    after given admit calls."""

    def __init__(
        self,
        arrivals: dict[int, list[GenerationRequest]],
        drops: dict[int, int] | None = None,
    ) -> None:
        self.arrivals = arrivals
        self.drops = drops or {}
        self.calls = 0
        self.free_seen: list[int] = []

    def admit(self, free: int, params: SamplingParams) -> list[GenerationRequest]:
        self.calls += 1
        self.free_seen.append(free)
        return self.arrivals.pop(self.calls, [])[:free]

    def dropped(self, index: int) -> bool:
        after = self.drops.get(index)
        return after is not None and self.calls >= after


@pytest.fixture
def engine(real_engine: object) -> object:
    real_engine.resume()  # type: ignore[attr-defined]
    real_engine.prefix_cache.clear()  # type: ignore[attr-defined]
    yield real_engine
    real_engine.prefix_cache.clear()  # type: ignore[attr-defined]


def alone(engine: object, prompt: Prompt) -> str:
    [text] = engine.generate([GenerationRequest(prompt, GREEDY)])  # type: ignore[attr-defined]
    return str(text)


@pytest.mark.integration
def test_rows_that_join_mid_batch_get_the_text_they_get_alone(engine: object) -> None:
    first = channel(10, "cats")
    longer = channel(30, "dogs")  # the batch grows to the left for it
    shorter = channel(2, "fish")
    warm_key = ("net", "#dogs")
    engine.generate([GenerationRequest(longer, GREEDY, warm_key)])  # type: ignore[attr-defined]
    feed = ScriptedFeed(
        {1: [GenerationRequest(longer, GREEDY, warm_key)], 3: [GenerationRequest(shorter, GREEDY)]}
    )
    reported: dict[int, str] = {}
    engine.generate_continuous(  # type: ignore[attr-defined]
        [GenerationRequest(first, GREEDY)], record_into(reported), feed, max_rows=4
    )
    assert sorted(reported) == [0, 1, 2]
    stats = engine.last_stats  # type: ignore[attr-defined]
    assert stats[1].reused_tokens > 100  # the joining row continued its cached prefix
    assert feed.free_seen[0] == 3
    expected = [alone(engine, prompt) for prompt in (first, longer, shorter)]
    assert reported == dict(enumerate(expected))


def record_into(reported: dict[int, str]) -> Callable[..., None]:
    """An engine's `done` callback that keeps each request's text by index."""

    def done(index: int, text: str, cut: bool = False) -> None:
        reported[index] = text

    return done


@pytest.mark.integration
def test_a_dropped_row_leaves_without_text_or_cache_entry(engine: object) -> None:
    kept, dropped = channel(8, "owls"), channel(12, "bats")
    key = ("net", "#bats")
    feed = ScriptedFeed({}, drops={1: 2})
    reported: dict[int, str] = {}
    engine.generate_continuous(  # type: ignore[attr-defined]
        [GenerationRequest(kept, GREEDY), GenerationRequest(dropped, GREEDY, key)],
        record_into(reported),
        feed,
    )
    assert list(reported) == [0]
    assert reported[0] == alone(engine, kept)
    assert engine.prefix_cache.stats().entries == 0  # type: ignore[attr-defined]
    # The conversation is not left "taken": its next prompt is cached again.
    engine.generate([GenerationRequest(dropped, GREEDY, key)])  # type: ignore[attr-defined]
    assert engine.prefix_cache.stats().entries == 1  # type: ignore[attr-defined]


@pytest.mark.integration
def test_a_text_stop_ends_generation_early(engine: object) -> None:
    prompt = channel(6, "trains")
    full = alone(engine, prompt)
    full_tokens = engine.last_stats[0].generated_tokens  # type: ignore[attr-defined]
    words = full.split()
    assert len(words) >= 4, full
    stop = words[len(words) // 2]
    stopped = Prompt(prompt.segments, stop=(*prompt.stop, stop))
    text = alone(engine, stopped)
    assert text == full[: full.index(stop)].strip()
    assert engine.last_stats[0].generated_tokens < full_tokens  # type: ignore[attr-defined]


@pytest.mark.integration
def test_a_row_cut_by_the_token_limit_says_so_and_resumes_from_its_cached_prefix(
    engine: object,
) -> None:
    prompt, key = channel(6, "chess"), ("net", "#chess")
    short = SamplingParams(temperature=0.0, max_new_tokens=6)
    reported: dict[int, tuple[str, bool]] = {}

    def done(index: int, text: str, cut: bool = False) -> None:
        reported[index] = (text, cut)

    engine.generate_each([GenerationRequest(prompt, short, key)], done)  # type: ignore[attr-defined]
    text, cut = reported[0]
    first = engine.last_stats[0]  # type: ignore[attr-defined]
    assert first.generated_tokens == 6 and cut  # still writing when the budget ran out
    # `more` resumes with the answer so far written into the open turn: the cached prompt
    # and nearly all of the answer's tokens are not computed again.
    resumed = GenerationRequest(resumed_prompt(prompt, text), short, key)
    engine.generate_each([resumed], done)  # type: ignore[attr-defined]
    again = engine.last_stats[0]  # type: ignore[attr-defined]
    assert again.reused_tokens >= first.prompt_tokens
    # A row that ends by itself is not cut.
    roomy = SamplingParams(temperature=0.0, max_new_tokens=400)
    engine.generate_each([GenerationRequest(prompt, roomy)], done)  # type: ignore[attr-defined]
    assert engine.last_stats[0].generated_tokens < 400  # type: ignore[attr-defined]
    assert reported[0][1] is False
