"""The worker's queue takes networks in turn: a network with many jobs waiting does not hold
another's one job behind them."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from relaybot.inference.engine import GenerationRequest, SamplingParams
from relaybot.inference.fairness import FairQueue
from relaybot.inference.worker import Job


def job(network: str, job_id: int) -> Job:
    request = GenerationRequest(prompt="p", params=SamplingParams())
    return Job(job_id, (network, "#c"), "#c", "bot", request)


def test_networks_take_turns_and_each_keeps_its_own_order() -> None:
    fair = FairQueue(100)
    for n in range(1, 6):
        fair.put_nowait(job("busy", n))
    fair.put_nowait(job("quiet", 100))
    fair.put_nowait(job("other", 200))
    taken = [fair.get_nowait() for _ in range(7)]
    ids = [item.job_id for item in taken if item is not None]
    # The quiet network's one job goes second, not after the busy network's five.
    assert ids == [1, 100, 200, 2, 3, 4, 5]
    with pytest.raises(queue.Empty):
        fair.get_nowait()


def test_a_network_that_comes_back_waits_its_turn() -> None:
    fair = FairQueue(100)
    fair.put_nowait(job("a", 1))
    fair.put_nowait(job("a", 2))
    fair.put_nowait(job("b", 3))
    first = fair.get_nowait()
    assert first is not None and first.job_id == 1
    fair.put_nowait(job("c", 4))
    ids = [
        item.job_id for item in (fair.get_nowait(), fair.get_nowait(), fair.get_nowait()) if item
    ]
    assert ids == [3, 2, 4]


def test_bounded_stop_marker_and_blocking_get() -> None:
    fair = FairQueue(2)
    fair.put_nowait(job("a", 1))
    fair.put_nowait(job("b", 2))
    with pytest.raises(queue.Full):
        fair.put_nowait(job("c", 3))
    assert fair.qsize() == 2
    fair.put_nowait(None)  # stop always goes in, and comes out first
    assert fair.get_nowait() is None
    assert fair.get_nowait() is not None and fair.qsize() == 1
    fair.get_nowait()
    started = time.monotonic()
    with pytest.raises(queue.Empty):
        fair.get(timeout=0.1)
    assert time.monotonic() - started >= 0.09
    threading.Timer(0.05, lambda: fair.put_nowait(job("late", 9))).start()
    late = fair.get(timeout=5)
    assert late is not None and late.job_id == 9


def test_a_network_fills_only_its_own_share() -> None:
    shares = {"busy": 2, "quiet": 2}
    fair = FairQueue(100, per_network=lambda network: shares[network])
    fair.put_nowait(job("busy", 1))
    fair.put_nowait(job("busy", 2))
    with pytest.raises(queue.Full):
        fair.put_nowait(job("busy", 3))
    fair.put_nowait(job("quiet", 4))  # the busy network's flood left room for it
    shares["busy"] = 3  # a reload raised the share: read at each put
    fair.put_nowait(job("busy", 5))
    assert fair.qsize() == 4
