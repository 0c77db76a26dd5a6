"""Unit tests for relaybot.inference.worker with a deterministic fake engine; every wait is
bounded."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest
from structlog.testing import capture_logs

from relaybot.conversation.formats import Prompt, Segment
from relaybot.inference.engine import EngineError, GenerationRequest, SamplingParams
from relaybot.inference.observer import TokenCounts
from relaybot.inference.worker import Completion, InferenceWorker, Job

TIMEOUT = 5.0


def make_job(i: int) -> Job:
    prompt = Prompt((Segment(str(i)),), stop=())
    return Job(
        job_id=i,
        key=("net", f"#c{i}"),
        reply_to=f"#c{i}",
        speaker="relaybot",
        request=GenerationRequest(prompt, SamplingParams()),
    )


class FakeEngine:
    """Answers `echo <prompt>`; can hold a batch until released, or fail on request."""

    description = "fake"
    context_window = 2048

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail_with: dict[str, BaseException] = {}  # prompt text -> exception to raise
        self.short_for: set[str] = set()  # prompt texts whose batch gets too few answers

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        prompts = [request.prompt.text for request in requests]
        self.batches.append(prompts)
        self.entered.set()
        assert self.release.wait(TIMEOUT), "test never released the engine"
        for prompt in prompts:
            if prompt in self.fail_with:
                raise self.fail_with[prompt]
        answers = [f"echo {prompt}" for prompt in prompts]
        if self.short_for.intersection(prompts):
            return answers[:-1]
        return answers


class Collector:
    def __init__(self) -> None:
        self.items: list[Completion] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def __call__(self, completion: Completion) -> None:
        with self.changed:
            self.items.append(completion)
            self.changed.notify_all()

    def wait_for(self, count: int, timeout: float = TIMEOUT) -> list[Completion]:
        with self.changed:
            ok = self.changed.wait_for(lambda: len(self.items) >= count, timeout)
            assert ok, f"only {len(self.items)} of {count} completions arrived"
            return list(self.items)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def workers(engine: FakeEngine) -> Iterator[list[InferenceWorker]]:
    made: list[InferenceWorker] = []
    yield made
    engine.release.set()
    for worker in made:
        worker.stop(timeout=TIMEOUT)


def new_worker(
    workers: list[InferenceWorker],
    engine: FakeEngine,
    collector: Collector,
    **kwargs: int,
) -> InferenceWorker:
    worker = InferenceWorker(engine, collector, **kwargs)
    workers.append(worker)
    return worker


def by_id(completions: list[Completion]) -> dict[int, Completion]:
    return {completion.job.job_id: completion for completion in completions}


def test_single_job(workers, engine, collector):
    worker = new_worker(workers, engine, collector)
    worker.start()
    job = make_job(1)
    assert worker.submit(job)
    [completion] = collector.wait_for(1)
    assert completion.job is job
    assert completion.text == "echo 1"
    assert completion.error is None
    assert completion.batch_size == 1
    assert completion.seconds >= 0


def test_pending_jobs_are_batched_up_to_max_batch(workers, engine, collector):
    worker = new_worker(workers, engine, collector, max_batch=3)
    for i in range(1, 8):
        assert worker.submit(make_job(i))
    assert worker.pending == 7
    worker.start()
    completions = collector.wait_for(7)
    assert engine.batches == [["1", "2", "3"], ["4", "5", "6"], ["7"]]
    results = by_id(completions)
    assert {i: c.text for i, c in results.items()} == {i: f"echo {i}" for i in range(1, 8)}
    assert [results[i].batch_size for i in range(1, 8)] == [3, 3, 3, 3, 3, 3, 1]
    assert [c.job.job_id for c in completions] == list(range(1, 8))  # order kept


def test_jobs_arriving_while_busy_form_the_next_batch(workers, engine, collector):
    worker = new_worker(workers, engine, collector, max_batch=8)
    worker.start()
    engine.release.clear()
    assert worker.submit(make_job(1))
    assert engine.entered.wait(TIMEOUT)
    for i in range(2, 6):
        assert worker.submit(make_job(i))
    engine.release.set()
    collector.wait_for(5)
    assert engine.batches == [["1"], ["2", "3", "4", "5"]]


def test_engine_error_yields_error_completions_and_worker_continues(workers, engine, collector):
    engine.fail_with["2"] = EngineError("CUDA out of memory")
    worker = new_worker(workers, engine, collector, max_batch=2)
    for i in (1, 2):
        worker.submit(make_job(i))
    worker.start()
    failed = collector.wait_for(2)
    for completion in failed:
        assert completion.text is None
        assert completion.error == "CUDA out of memory"
        assert completion.batch_size == 2
    worker.submit(make_job(3))
    later = collector.wait_for(3)[2]
    assert later.text == "echo 3" and later.error is None


def test_unexpected_exception_is_contained(workers, engine, collector):
    engine.fail_with["1"] = ValueError("boom")
    worker = new_worker(workers, engine, collector)
    with capture_logs() as logs:
        worker.start()
        worker.submit(make_job(1))
        [completion] = collector.wait_for(1)
    assert completion.text is None
    assert completion.error == "ValueError: boom"
    assert any(entry["event"] == "engine_crashed" for entry in logs)
    worker.submit(make_job(2))
    assert collector.wait_for(2)[1].text == "echo 2"
    assert worker._thread.is_alive()


def test_submit_returns_false_when_queue_full(workers, engine, collector):
    worker = new_worker(workers, engine, collector, max_pending=2)
    assert worker.submit(make_job(1))
    assert worker.submit(make_job(2))
    assert not worker.submit(make_job(3))
    assert worker.pending == 2
    worker.start()
    collector.wait_for(2)
    assert worker.submit(make_job(4))  # room again once drained
    assert collector.wait_for(3)[2].text == "echo 4"


def test_submit_refused_after_stop(workers, engine, collector):
    worker = new_worker(workers, engine, collector)
    worker.start()
    worker.stop(timeout=TIMEOUT)
    assert not worker._thread.is_alive()
    assert not worker.submit(make_job(1))


def test_stop_finishes_the_running_batch(workers, engine, collector):
    worker = new_worker(workers, engine, collector)
    worker.start()
    engine.release.clear()
    worker.submit(make_job(1))
    assert engine.entered.wait(TIMEOUT)
    stopper = threading.Thread(target=worker.stop, kwargs={"timeout": TIMEOUT})
    stopper.start()
    engine.release.set()
    stopper.join(TIMEOUT)
    assert not stopper.is_alive()
    assert not worker._thread.is_alive()
    assert collector.wait_for(1)[0].text == "echo 1"


def test_stop_without_start_returns():
    worker = InferenceWorker(FakeEngine(), Collector())
    worker.stop(timeout=0.1)
    assert not worker.submit(make_job(1))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_engine_returning_wrong_count_does_not_kill_worker(workers, engine, collector):
    engine.short_for.add("1")
    worker = new_worker(workers, engine, collector, max_batch=2)
    worker.submit(make_job(1))
    worker.submit(make_job(2))
    worker.start()
    first = collector.wait_for(2, timeout=2.0)
    assert all(completion.text is None and completion.error for completion in first)
    worker.submit(make_job(3))
    assert collector.wait_for(3, timeout=2.0)[2].text == "echo 3"


def test_a_cancelled_queued_job_is_never_generated(workers, engine, collector):
    worker = new_worker(workers, engine, collector, max_batch=1)
    engine.release.clear()
    worker.start()
    assert worker.submit(make_job(1))
    assert engine.entered.wait(TIMEOUT)  # job 1 is generating; 2 and 3 wait in the queue
    assert worker.submit(make_job(2))
    assert worker.submit(make_job(3))
    worker.cancel(2)
    engine.release.set()
    completions = collector.wait_for(2)
    assert sorted(by_id(completions)) == [1, 3]
    assert ["2"] not in engine.batches


# --- conversation state, batching window, replies as they finish --------------------------------


class ForgettingEngine(FakeEngine):
    """A fake engine that keeps per-conversation state and records what it is told to drop."""

    def __init__(self) -> None:
        super().__init__()
        self.forgotten: list[tuple[str, str]] = []

    def forget(self, key: tuple[str, str]) -> None:
        self.forgotten.append(key)


def test_forget_reaches_an_engine_that_keeps_conversations(collector):
    engine = ForgettingEngine()
    worker = InferenceWorker(engine, collector)
    worker.forget(("net", "#c"))
    assert engine.forgotten == [("net", "#c")]
    InferenceWorker(FakeEngine(), collector).forget(("net", "#c"))  # nothing to drop: no error


def test_cancelling_a_job_forgets_its_conversation(collector):
    engine = ForgettingEngine()
    worker = InferenceWorker(engine, collector)
    assert worker.submit(make_job(5))
    worker.cancel(5)
    worker.cancel(99)  # unknown job: nothing to forget
    assert engine.forgotten == [("net", "#c5")]
    worker.stop(timeout=TIMEOUT)


def test_jobs_submitted_together_share_a_batch_even_when_the_worker_is_idle(
    workers, engine, collector
):
    worker = new_worker(workers, engine, collector, max_batch=4)
    worker.batch_window = 2.0  # generous: the batch goes as soon as it is full
    worker.start()
    for i in range(1, 5):
        assert worker.submit(make_job(i))
    collector.wait_for(4)
    assert engine.batches == [["1", "2", "3", "4"]]


class StreamingEngine:
    """Reports row 1 at once, then waits to be released before reporting row 0 (or failing)."""

    description = "streaming"
    context_window = 2048

    def __init__(self) -> None:
        self.release = threading.Event()
        self.fail = False

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        raise AssertionError("the worker should use generate_each")

    def generate_each(self, requests, done) -> None:
        done(1, f"early {requests[1].prompt.text}")
        assert self.release.wait(TIMEOUT)
        if self.fail:
            raise EngineError("out of memory")
        done(0, f"late {requests[0].prompt.text}")


def test_a_short_reply_is_handed_over_before_its_batch_ends(collector):
    engine = StreamingEngine()
    worker = InferenceWorker(engine, collector, max_batch=2)
    worker.submit(make_job(1))
    worker.submit(make_job(2))
    worker.start()
    try:
        [early] = collector.wait_for(1)
        assert (early.job.job_id, early.text, early.batch_size) == (2, "early 2", 2)
        engine.release.set()
        late = collector.wait_for(2)[1]
        assert (late.job.job_id, late.text, late.error) == (1, "late 1", None)
    finally:
        engine.release.set()
        worker.stop(timeout=TIMEOUT)


def test_rows_not_reported_before_a_failure_get_the_error(collector):
    engine = StreamingEngine()
    engine.fail = True
    engine.release.set()
    worker = InferenceWorker(engine, collector, max_batch=2)
    worker.submit(make_job(1))
    worker.submit(make_job(2))
    worker.start()
    try:
        completions = by_id(collector.wait_for(2))
        assert completions[2].text == "early 2" and completions[2].error is None
        assert completions[1].text is None and completions[1].error == "out of memory"
    finally:
        worker.stop(timeout=TIMEOUT)


def test_starting_a_worker_resumes_an_engine_a_stopped_worker_interrupted(collector):
    class Interruptible(FakeEngine):
        def __init__(self) -> None:
            super().__init__()
            self.interrupted = False

        def interrupt(self) -> None:
            self.interrupted = True

        def resume(self) -> None:
            self.interrupted = False

    engine = Interruptible()
    first = InferenceWorker(engine, collector)
    first.start()
    first.stop(timeout=TIMEOUT)
    assert engine.interrupted
    second = InferenceWorker(engine, collector)
    second.start()
    try:
        assert not engine.interrupted
        second.submit(make_job(1))
        assert collector.wait_for(1)[0].text == "echo 1"
    finally:
        second.stop(timeout=TIMEOUT)


# --- what the observer hears ---------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    prompt_tokens: int
    reused_tokens: int
    generated_tokens: int
    first_token_at: float | None = None


class Observed:
    """A WorkerObserver that records what it hears, in order."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, float]] = []
        self.counts: list[tuple[str, Counts]] = []
        self.batches: list[int] = []
        self.first_tokens: list[tuple[str, float]] = []

    def first_token(self, network: str, seconds: float) -> None:
        self.first_tokens.append((network, seconds))

    def started(self, network: str, waited: float) -> None:
        self.starts.append((network, waited))

    def generated(self, network: str, counts: TokenCounts) -> None:
        assert isinstance(counts, Counts)
        self.counts.append((network, counts))

    def batch(self, jobs: int) -> None:
        self.batches.append(jobs)


def asked(i: int, network: str, seconds_ago: float | None) -> Job:
    """Job `i` of `network`, asked for `seconds_ago` (None: no line asked, as for `ask`)."""
    at = None if seconds_ago is None else time.monotonic() - seconds_ago
    return dataclasses.replace(make_job(i), key=(network, f"#c{i}"), requested_at=at)


class CountingEngine(FakeEngine):
    """Keeps each request's token counts in `last_stats`, as the local engine does."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        # The first token chosen 0.25 s after the request was asked (asked(..., 0.0)).
        first = time.monotonic() + 0.25
        self.last_stats = {i: Counts(10 + i, i, 5 + i, first) for i in range(len(requests))}
        return super().generate(requests)


def test_the_observer_hears_when_each_asked_job_starts_and_how_large_each_batch_was(collector):
    observed = Observed()
    worker = InferenceWorker(FakeEngine(), collector, max_batch=3, observer=observed)
    started = time.monotonic()
    for job in (asked(1, "net", 3.0), asked(2, "net", None), asked(3, "other", 1.0)):
        assert worker.submit(job)
    worker.start()
    collector.wait_for(3)
    worker.stop(timeout=TIMEOUT)
    waited = dict(observed.starts)
    assert len(observed.starts) == 2  # the job no line asked for waits for nobody
    elapsed = time.monotonic() - started
    assert 3.0 <= waited["net"] <= 3.0 + elapsed
    assert 1.0 <= waited["other"] <= 1.0 + elapsed
    assert observed.batches == [3]
    assert observed.counts == []  # this engine counts no tokens


def test_token_counts_reach_the_observer_with_the_network_of_their_job(collector):
    observed = Observed()
    engine = CountingEngine()
    worker = InferenceWorker(engine, collector, max_batch=2, observer=observed)
    worker.submit(asked(1, "net", 0.0))
    worker.submit(asked(2, "other", 0.0))
    worker.start()
    collector.wait_for(2)
    engine.fail_with["3"] = EngineError("out of memory")
    worker.submit(asked(3, "net", 0.0))
    collector.wait_for(3)
    worker.stop(timeout=TIMEOUT)
    # A failed generation cost tokens nobody got: nothing is counted for it.
    assert [
        (n, c.prompt_tokens, c.reused_tokens, c.generated_tokens) for n, c in observed.counts
    ] == [
        ("net", 10, 0, 5),
        ("other", 11, 1, 6),
    ]
    assert observed.batches == [2, 1]
    # Time to first token: from the asking line to the engine's first token, per network.
    assert [network for network, _ in observed.first_tokens] == ["net", "other"]
    assert all(0.25 <= seconds < 5.0 for _, seconds in observed.first_tokens)


class JoiningEngine:
    """Decodes its first request until a second is queued, admits it into the running batch,
    then reports both with their token counts."""

    description = "joining"
    context_window = 2048

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.queued = threading.Event()
        self.last_stats: dict[int, Counts] = {}

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        raise AssertionError("the worker should batch continuously")

    def generate_continuous(self, requests, done, feed, *, max_rows: int = 8) -> None:
        self.last_stats = {}
        self.entered.set()
        assert self.queued.wait(TIMEOUT)
        total = len(requests) + len(feed.admit(max_rows - len(requests), requests[0].params))
        for index in range(total):
            self.last_stats[index] = Counts(20, 10 * index, 3)
            done(index, "text")


def test_a_job_that_joins_a_running_batch_starts_then_and_counts_in_it(collector):
    observed = Observed()
    engine = JoiningEngine()
    worker = InferenceWorker(engine, collector, max_batch=4, batch_window=0, observer=observed)
    worker.submit(asked(1, "net", 0.0))
    worker.start()
    try:
        assert engine.entered.wait(TIMEOUT)
        worker.submit(asked(2, "other", 2.0))
        engine.queued.set()
        collector.wait_for(2)
    finally:
        engine.queued.set()
        worker.stop(timeout=TIMEOUT)
    assert [network for network, _ in observed.starts] == ["net", "other"]
    assert observed.starts[1][1] >= 2.0
    assert observed.counts == [("net", Counts(20, 0, 3)), ("other", Counts(20, 10, 3))]
    assert observed.batches == [2]  # one batch served both
