"""The pure parts of the local engine's `generate` fallback: sampling arguments, and where a
row's reply ends."""

from __future__ import annotations

from relaybot.inference.engine import SamplingParams
from relaybot.inference.local.plain import sampling_arguments, until_stop


def test_temperature_zero_is_greedy() -> None:
    assert sampling_arguments(SamplingParams(temperature=0.0, top_k=40)) == {"do_sample": False}


def test_sampling_passes_the_filters_and_turns_zeros_off() -> None:
    params = SamplingParams(temperature=0.7, top_k=0, top_p=0.9, min_p=0.0)
    assert sampling_arguments(params) == {
        "do_sample": True,
        "temperature": 0.7,
        "top_k": None,
        "top_p": 0.9,
        "min_p": None,
    }
    assert sampling_arguments(SamplingParams(temperature=1.0, top_k=40, min_p=0.05))["top_k"] == 40


def test_a_reply_ends_before_its_first_stop_token() -> None:
    assert until_stop([5, 6, 2, 7, 2], [2, 4]) == [5, 6]
    assert until_stop([5, 6], [2]) == [5, 6]
    assert until_stop([4], [2, 4]) == []
