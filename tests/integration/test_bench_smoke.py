"""The CPU benchmark scripts run end to end in their quick mode and write JSON and a chart.

They load the real embedded model, so they carry the integration mark; the speed targets are
the scripts' business, not these tests'."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO

pytestmark = pytest.mark.integration

BENCH = REPO / "bench"


def run_script(name: str, out: Path, *extra: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    finished = subprocess.run(
        [sys.executable, str(BENCH / name), "--quick", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    stem = name.removesuffix(".py")
    chart = out / f"{stem}.png"
    assert chart.is_file() and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result: dict[str, object] = json.loads((out / f"{stem}.json").read_text())
    return result


def test_cpu_channels_quick(tmp_path: Path) -> None:
    result = run_script(
        "cpu_channels.py", tmp_path, "--channels", "1,2", "--repeats", "1", "--max-new-tokens", "4"
    )
    assert result["benchmark"] == "cpu_channels"
    rows = result["results"]
    assert isinstance(rows, list) and [row["channels"] for row in rows] == [1, 2]
    for row in rows:
        for side in ("relaybot", "baseline"):
            stats = row[side]
            assert stats["replies"] == row["channels"]
            assert stats["generated_tokens"] >= 0
            assert stats["tokens_per_s"] >= 0
            assert 0 < stats["latency_p50_s"] <= stats["latency_p95_s"]
            assert stats["cold"]["replies"] == row["channels"]
        assert row["relaybot"]["reused_prompt_fraction"] > 0  # the second round reused
        assert row["baseline"]["reused_prompt_fraction"] == 0
        assert row["throughput_ratio"] >= 0
    assert result["settings"]["sampling"]["temperature"] == 0.3
    assert {"channels", "throughput_ratio", "measured_ratio", "met"} <= set(result["target"])


def test_prefix_reuse_quick(tmp_path: Path) -> None:
    result = run_script("prefix_reuse.py", tmp_path, "--context", "200", "--reply-tokens", "3")
    assert result["benchmark"] == "prefix_reuse"
    assert result["identical_texts"] is True
    assert result["reused_tokens_mean"] > 0
    for kind in ("first_token", "reply"):
        timing = result[kind]
        assert timing["reuse_p50_s"] > 0 and timing["full_prefill_p50_s"] > 0
        assert timing["speedup"] > 0
    assert {"speedup", "met_first_token", "met_reply"} <= set(result["target"])


def test_staggered_arrivals_quick(tmp_path: Path) -> None:
    result = run_script("staggered_arrivals.py", tmp_path, "--channels", "3", "--baseline")
    assert result["benchmark"] == "staggered_arrivals"
    arrivals = result["arrivals_s"]
    assert isinstance(arrivals, list) and len(arrivals) == 3 and arrivals == sorted(arrivals)
    modes = result["modes"]
    assert isinstance(modes, dict)
    assert list(modes) == ["continuous", "batch-at-a-time", "naive"]
    for stats in modes.values():
        assert stats["replies"] == 3 and len(stats["requests"]) == 3
        assert stats["generated_tokens"] > 0 and stats["tokens_per_s"] > 0
        assert 0 < stats["latency_p50_s"] <= stats["latency_p95_s"] <= stats["latency_max_s"]
        assert stats["latency_max_s"] <= stats["makespan_s"]
    assert modes["batch-at-a-time"]["joined_running_batch"] == 0
    speedup = result["speedup_continuous_over_batch_at_a_time"]
    assert speedup["latency_p50"] > 0 and speedup["latency_p95"] > 0
    assert result["settings"]["sampling"]["temperature"] == 0.3
