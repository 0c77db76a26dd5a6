"""CPU, embedded model: N busy channels each get an addressed message at once.

For each channel count N, two copies of the same N realistic channel contexts (a few hundred
tokens each, built through relaybot's Transcript and RelayFormat from a seeded generator) go
through rounds: some chatter, then a line addressed to the bot in every channel at once. One
copy is answered by relaybot's InferenceWorker (batching across channels, prefix reuse), the
other by the naive baseline (`generate` once per request, in order, batch 1, full prompt
tokenised again), alternating round by round in the same process. Each reply joins its
channel's context, as the relay does, so the next round's prompt continues the conversation.

Throughput counts generated tokens (the stop token excluded) for both, over the wall time from
the messages' arrival to the last reply. Latency is per reply, from arrival to reply. Round 0
starts with no cached prefixes anywhere and is reported apart ("cold"); the other rounds are
the steady state of a busy bot.

    .venv/bin/python bench/cpu_channels.py                      # 1, 4, 8, 16 channels, 3 rounds
    .venv/bin/python bench/cpu_channels.py --channels 8 --repeats 5
    .venv/bin/python bench/cpu_channels.py --quick               # small and fast, for a smoke run

Writes <out>/cpu_channels.json and <out>/cpu_channels.png (default out: bench/results).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from relay_contexts import (
    BOT,
    REFERENCE,
    Channel,
    RecordingEngine,
    build_channels,
    busy_round,
    host_info,
    latency_summary,
    load_engine,
    naive_reply,
    now_iso,
    save_chart,
)

from relaybot.inference.engine import GenerationRequest, SamplingParams
from relaybot.inference.worker import Completion, InferenceWorker, Job

TARGET_CHANNELS = 8
TARGET_RATIO = 4.0


def relaybot_round(
    worker: InferenceWorker,
    recorder: RecordingEngine,
    done: queue.Queue[tuple[Completion, float]],
    channels: Sequence[Channel],
    params: SamplingParams,
    first_id: int,
) -> dict[str, Any]:
    jobs = {}
    started = time.monotonic()
    for offset, channel in enumerate(channels):
        job = Job(
            job_id=first_id + offset,
            key=channel.key,
            reply_to=channel.name,
            speaker=BOT,
            request=GenerationRequest(channel.prompt(), params, cache_key=channel.key),
        )
        jobs[job.job_id] = channel
        if not worker.submit(job):
            raise RuntimeError("the worker refused a job (queue full)")
    latencies, tokens, prompt_tokens, reused = [], 0, 0, 0
    for _ in channels:
        completion, finished = done.get(timeout=3600)
        if completion.error is not None:
            raise RuntimeError(f"generation failed: {completion.error}")
        stats = recorder.stats.pop(id(completion.job.request))
        latencies.append(finished - started)
        tokens += stats.generated_tokens
        prompt_tokens += stats.prompt_tokens
        reused += stats.reused_tokens
        jobs[completion.job.job_id].add_reply(completion.text or "")
    seconds = max(latencies)
    return {
        "seconds": seconds,
        "tokens": tokens,
        "latencies": latencies,
        "prompt_tokens": prompt_tokens,
        "reused_tokens": reused,
    }


def baseline_round(engine: Any, channels: Sequence[Channel], params: SamplingParams) -> dict:
    started = time.monotonic()
    latencies, tokens, prompt_tokens = [], 0, 0
    for channel in channels:
        text, generated, prompt_length = naive_reply(engine, channel.prompt(), params)
        latencies.append(time.monotonic() - started)
        tokens += generated
        prompt_tokens += prompt_length
        channel.add_reply(text)
    return {
        "seconds": latencies[-1],
        "tokens": tokens,
        "latencies": latencies,
        "prompt_tokens": prompt_tokens,
        "reused_tokens": 0,
    }


def summarise(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    seconds = sum(r["seconds"] for r in rounds)
    tokens = sum(r["tokens"] for r in rounds)
    latencies = [value for r in rounds for value in r["latencies"]]
    prompt_tokens = sum(r["prompt_tokens"] for r in rounds)
    return {
        "rounds": len(rounds),
        "replies": len(latencies),
        "generated_tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 2) if seconds > 0 else 0.0,
        "tokens_per_reply": round(tokens / max(1, len(latencies)), 1),
        **latency_summary(latencies),
        "prompt_tokens_mean": round(prompt_tokens / max(1, len(latencies)), 1),
        "reused_prompt_fraction": round(
            sum(r["reused_tokens"] for r in rounds) / max(1, prompt_tokens), 3
        ),
    }


def measure_count(
    args: argparse.Namespace,
    engine: Any,
    worker: InferenceWorker,
    recorder: RecordingEngine,
    done: queue.Queue[tuple[Completion, float]],
    count: int,
    params: SamplingParams,
) -> dict[str, Any]:
    engine.prefix_cache.clear()
    budget = engine.context_window - params.max_new_tokens
    ours = build_channels(count, engine.count_tokens, budget, args.context, seed=args.seed)
    theirs = build_channels(count, engine.count_tokens, budget, args.context, seed=args.seed)
    relay_rounds, base_rounds = [], []
    for index in range(args.repeats + 1):
        # The same chatter and questions reach both copies; only the replies differ.
        for copy in (ours, theirs):
            rng = random.Random(f"{args.seed}:{count}:{index}")
            for channel in copy:
                busy_round(channel, rng)
        first_id = 1 + 100_000 * count + index * count
        relay_rounds.append(relaybot_round(worker, recorder, done, ours, params, first_id))
        base_rounds.append(baseline_round(engine, theirs, params))
        print(
            f"N={count} round {index}: relaybot {relay_rounds[-1]['tokens']} tok in "
            f"{relay_rounds[-1]['seconds']:.1f}s, baseline {base_rounds[-1]['tokens']} "
            f"tok in {base_rounds[-1]['seconds']:.1f}s",
            file=sys.stderr,
            flush=True,
        )
    relaybot = summarise(relay_rounds[1:] or relay_rounds)
    baseline = summarise(base_rounds[1:] or base_rounds)
    relaybot["cold"] = summarise(relay_rounds[:1])
    baseline["cold"] = summarise(base_rounds[:1])
    ratio = relaybot["tokens_per_s"] / baseline["tokens_per_s"] if baseline["tokens_per_s"] else 0
    return {
        "channels": count,
        "relaybot": relaybot,
        "baseline": baseline,
        "throughput_ratio": round(ratio, 2),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    host = host_info()
    torch.manual_seed(args.seed)
    engine = load_engine(args.context_tokens)
    params = replace(REFERENCE, max_new_tokens=args.max_new_tokens)
    budget = engine.context_window - params.max_new_tokens
    # Warm the kernels once so neither side pays first-call costs inside a measurement.
    warm = build_channels(1, engine.count_tokens, budget, (60, 80), seed=args.seed)[0]
    naive_reply(engine, warm.prompt(), replace(params, max_new_tokens=4))
    engine.generate([GenerationRequest(warm.prompt(), replace(params, max_new_tokens=4))])

    # One worker for the whole run: stopping a worker interrupts its engine for good.
    recorder = RecordingEngine(engine)
    done: queue.Queue[tuple[Completion, float]] = queue.Queue()
    worker = InferenceWorker(
        recorder,
        lambda completion: done.put((completion, time.monotonic())),
        max_batch=args.max_batch,
        max_pending=max(64, 2 * max(args.channels)),
    )
    worker.start()
    results = []
    try:
        for count in args.channels:
            results.append(measure_count(args, engine, worker, recorder, done, count, params))
    finally:
        worker.stop(timeout=60)
    target = next((r for r in results if r["channels"] == TARGET_CHANNELS), None)
    return {
        "benchmark": "cpu_channels",
        "created": now_iso(),
        "host": {**host, "load_average_at_end": [round(v, 2) for v in os.getloadavg()]},
        "model": engine.description,
        "settings": {
            "channels": list(args.channels),
            "repeats": args.repeats,
            "seed": args.seed,
            "context_tokens_range": list(args.context),
            "context_window": engine.context_window,
            "max_batch": args.max_batch,
            "sampling": {
                "temperature": params.temperature,
                "top_k": params.top_k,
                "top_p": params.top_p,
                "min_p": params.min_p,
                "repetition_penalty": params.repetition_penalty,
                "max_new_tokens": params.max_new_tokens,
            },
            "quick": args.quick,
        },
        "results": results,
        "target": {
            "channels": TARGET_CHANNELS,
            "throughput_ratio": TARGET_RATIO,
            "measured_ratio": target["throughput_ratio"] if target else None,
            "met": bool(target and target["throughput_ratio"] >= TARGET_RATIO),
        },
    }


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["results"]
    counts = [str(row["channels"]) for row in rows]
    positions = list(range(len(rows)))
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.38
    ours = [row["relaybot"]["tokens_per_s"] for row in rows]
    theirs = [row["baseline"]["tokens_per_s"] for row in rows]
    left.bar([p - width / 2 for p in positions], ours, width, label="relaybot worker")
    left.bar([p + width / 2 for p in positions], theirs, width, label="naive baseline")
    for p, row, value in zip(positions, rows, ours, strict=True):
        left.annotate(f"{row['throughput_ratio']}x", (p - width / 2, value), ha="center",
                      va="bottom", fontsize=9)  # fmt: skip
    left.set_xticks(positions, counts)
    left.set_xlabel("busy channels")
    left.set_ylabel("generated tokens / s (aggregate)")
    left.set_title("Throughput")
    left.legend()
    for name, style in (("relaybot", "-"), ("baseline", "--")):
        for stat, marker in (("latency_p50_s", "o"), ("latency_p95_s", "^")):
            right.plot(
                counts,
                [row[name][stat] for row in rows],
                linestyle=style,
                marker=marker,
                label=f"{name} {stat.split('_')[1]}",
            )
    right.set_xlabel("busy channels")
    right.set_ylabel("reply latency (s)")
    right.set_title("Reply latency")
    right.legend(fontsize=8)
    save_chart(figure, path, f"{result['model'].split('/')[-1]} — {result['created']}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", default=None, help="comma-separated counts (1,4,8,16)")
    parser.add_argument("--repeats", type=int, default=None, help="measured rounds per count (3)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--max-batch", type=int, default=8, help="worker batch size (config: 8)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="(128)")
    parser.add_argument("--context-tokens", type=int, default=2048, help="context window")
    parser.add_argument("--quick", action="store_true", help="small and fast: a smoke run")
    args = parser.parse_args(argv)
    quick = args.quick
    args.channels = [
        int(part) for part in (args.channels or ("1,2" if quick else "1,4,8,16")).split(",")
    ]
    args.repeats = args.repeats if args.repeats is not None else (1 if quick else 3)
    if args.max_new_tokens is None:
        args.max_new_tokens = 8 if quick else REFERENCE.max_new_tokens
    args.context = (60, 120) if quick else (250, 500)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "cpu_channels.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    chart(result, args.out / "cpu_channels.png")
    print("N  relaybot tok/s  baseline tok/s  ratio  p50/p95 relaybot  p50/p95 baseline")
    for row in result["results"]:
        ours, theirs = row["relaybot"], row["baseline"]
        print(
            f"{row['channels']:<3}{ours['tokens_per_s']:>15}{theirs['tokens_per_s']:>16}"
            f"{row['throughput_ratio']:>7}  {ours['latency_p50_s']}/{ours['latency_p95_s']}"
            f"{'':>10}{theirs['latency_p50_s']}/{theirs['latency_p95_s']}"
        )
    print(f"wrote {json_path} and {json_path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
