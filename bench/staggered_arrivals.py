"""CPU, embedded model: addressed messages from busy channels arrive at staggered times.

N channels (default 16) each hold a realistic rolling context (250-800 tokens, built through
relaybot's Transcript and RelayFormat from a seeded generator, as in cpu_channels.py); after a
little chatter someone addresses the bot in each of them. The N requests arrive one by one on a
seeded Poisson schedule (exponential gaps, mean `--mean-gap` seconds, the first at 0), so that
the worker is busy: new requests come in while earlier replies are still decoding.

The same requests on the same schedule go through each mode, one after the other, in one process:

- continuous: InferenceWorker(max_batch=8, continuous=True): a request that arrives while a
  batch decodes joins it between two decode steps (while it has fewer than 8 rows);
- batch-at-a-time: InferenceWorker(max_batch=8, continuous=False): a batch runs to the end
  (finished rows are reported early), and requests that arrive meanwhile wait for the next one;
- naive (only with `--baseline`; it takes longer than both others together): the reference
  client, one `generate` per request (batch 1, the full prompt tokenised again) in arrival
  order; a request that arrives while another is answered waits for it.

Sampling is the reference client's (temperature 0.3, top-k 40, top-p 0.95, min-p 0.05,
repetition penalty 1.1, max_new_tokens 128), and torch is seeded alike before each mode; still,
rows sample in other batches in each mode, so a request's reply (and its length, 5 tokens or
128) differs from mode to mode, and with 16 requests that noise is large. `--greedy` (temperature
0, the rest unchanged) gives every mode the same replies, so only the scheduling differs. The
engine's prefix cache is cleared before each mode and every mode uses its own conversation
keys, so no mode starts from prefixes another one computed.

Latency is per request, from its submission (its arrival) to its completion. Throughput is the
generated tokens (the stop token excluded, as the engine counts them) over the makespan: from
the first arrival to the last reply. The speed-up of continuous over batch-at-a-time is the
ratio of their latencies (p50, p95, max).

    .venv/bin/python bench/staggered_arrivals.py                  # 16 channels, mean gap 0.5 s
    .venv/bin/python bench/staggered_arrivals.py --greedy --mean-gap 4  # same replies, less load
    .venv/bin/python bench/staggered_arrivals.py --channels 8 --mean-gap 2 --baseline
    .venv/bin/python bench/staggered_arrivals.py --quick          # small and fast, a smoke run

Writes <out>/staggered_arrivals.json and <out>/staggered_arrivals.png (default out:
bench/results).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay_contexts import (
    BOT,
    NETWORK,
    REFERENCE,
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

from relaybot.conversation.formats import Prompt
from relaybot.inference.engine import GenerationRequest, SamplingParams
from relaybot.inference.worker import Completion, InferenceWorker, Job

CONTINUOUS = "continuous"
BATCH_AT_A_TIME = "batch-at-a-time"
NAIVE = "naive"
WORKER_MODES = {CONTINUOUS: True, BATCH_AT_A_TIME: False}  # mode -> InferenceWorker(continuous)


@dataclass(frozen=True, slots=True)
class Arrival:
    """One addressed message: when it arrives (seconds after the first) and its prompt."""

    at: float
    channel: str
    prompt: Prompt


@dataclass(slots=True)
class Outcome:
    """What one request cost in one mode."""

    channel: str
    arrival_s: float
    latency_s: float
    generated_tokens: int
    prompt_tokens: int
    waited_s: float  # before its batch took it (latency minus the worker's own timing)


def arrivals(args: argparse.Namespace, engine: Any, params: SamplingParams) -> list[Arrival]:
    """The requests and their schedule, the same for every mode."""
    budget = engine.context_window - params.max_new_tokens
    channels = build_channels(
        args.channels, engine.count_tokens, budget, args.context, seed=args.seed
    )
    rng = random.Random(f"{args.seed}:arrivals")
    for channel in channels:
        busy_round(channel, rng)
    rng.shuffle(channels)
    schedule, at = [], 0.0
    for index, channel in enumerate(channels):
        if index:
            at += rng.expovariate(1.0 / args.mean_gap) if args.mean_gap > 0 else 0.0
        schedule.append(Arrival(round(at, 3), channel.name, channel.prompt()))
    return schedule


def wait_until(deadline: float) -> float:
    delay = deadline - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    return time.monotonic()


def run_worker_mode(
    mode: str,
    recorder: RecordingEngine,
    schedule: Sequence[Arrival],
    params: SamplingParams,
    max_batch: int,
) -> tuple[list[Outcome], float, dict[str, Any]]:
    finished: queue.Queue[tuple[Completion, float]] = queue.Queue()
    worker = InferenceWorker(
        recorder,
        lambda completion: finished.put((completion, time.monotonic())),
        max_batch=max_batch,
        max_pending=max(64, 2 * len(schedule)),
        continuous=WORKER_MODES[mode],
    )
    recorder.reset()
    submitted: dict[int, float] = {}
    worker.start()
    try:
        start = time.monotonic()
        for job_id, arrival in enumerate(schedule):
            key = (f"{NETWORK}/{mode}", arrival.channel.lower())  # this mode's own cache keys
            request = GenerationRequest(arrival.prompt, params, cache_key=key)
            job = Job(
                job_id=job_id, key=key, reply_to=arrival.channel, speaker=BOT, request=request
            )
            submitted[job_id] = wait_until(start + arrival.at)
            if not worker.submit(job):
                raise RuntimeError("the worker refused a job (queue full)")
        outcomes: list[Outcome | None] = [None] * len(schedule)
        last = start
        for _ in schedule:
            completion, at = finished.get(timeout=3600)
            if completion.error is not None:
                raise RuntimeError(f"generation failed: {completion.error}")
            job_id = completion.job.job_id
            stats = recorder.stats.pop(id(completion.job.request))
            latency = at - submitted[job_id]
            outcomes[job_id] = Outcome(
                channel=completion.job.reply_to,
                arrival_s=round(submitted[job_id] - start, 3),
                latency_s=latency,
                generated_tokens=stats.generated_tokens,
                prompt_tokens=stats.prompt_tokens,
                waited_s=max(0.0, latency - completion.seconds),
            )
            last = max(last, at)
    finally:
        worker.stop(timeout=60)
    batching = {
        "batches": len(recorder.batch_sizes),
        "first_rows_per_batch": list(recorder.batch_sizes),
        "joined_running_batch": recorder.joined,
    }
    return [outcome for outcome in outcomes if outcome is not None], last - start, batching


def run_naive(
    engine: Any, schedule: Sequence[Arrival], params: SamplingParams
) -> tuple[list[Outcome], float, dict[str, Any]]:
    outcomes = []
    start = time.monotonic()
    for arrival in schedule:
        began = wait_until(start + arrival.at)
        _, generated, prompt_tokens = naive_reply(engine, arrival.prompt, params)
        ended = time.monotonic()
        outcomes.append(
            Outcome(
                channel=arrival.channel,
                arrival_s=arrival.at,
                latency_s=ended - (start + arrival.at),
                generated_tokens=generated,
                prompt_tokens=prompt_tokens,
                waited_s=max(0.0, began - (start + arrival.at)),
            )
        )
    return outcomes, time.monotonic() - start, {"batches": len(schedule)}


def summary(outcomes: Sequence[Outcome], makespan: float, batching: dict[str, Any]) -> dict:
    latencies = [outcome.latency_s for outcome in outcomes]
    tokens = sum(outcome.generated_tokens for outcome in outcomes)
    count = max(1, len(outcomes))
    return {
        "replies": len(outcomes),
        "generated_tokens": tokens,
        "tokens_per_reply": round(tokens / count, 1),
        "makespan_s": round(makespan, 3),
        "tokens_per_s": round(tokens / makespan, 2) if makespan > 0 else 0.0,
        **latency_summary(latencies),
        "latency_max_s": round(max(latencies, default=float("nan")), 3),
        "waited_mean_s": round(sum(o.waited_s for o in outcomes) / count, 3),
        "prompt_tokens_mean": round(sum(o.prompt_tokens for o in outcomes) / count, 1),
        **batching,
        "requests": [
            {
                **dataclasses.asdict(o),
                "latency_s": round(o.latency_s, 3),
                "waited_s": round(o.waited_s, 3),
            }
            for o in outcomes
        ],
    }


def speedup(modes: dict[str, dict[str, Any]], slow: str, fast: str) -> dict[str, float] | None:
    """How many times lower `fast`'s latency is than `slow`'s; throughput ratio likewise."""
    if slow not in modes or fast not in modes:
        return None
    a, b = modes[slow], modes[fast]

    def ratio(x: float, y: float) -> float:
        return round(x / y, 2) if y > 0 else float("nan")

    return {
        "latency_p50": ratio(a["latency_p50_s"], b["latency_p50_s"]),
        "latency_p95": ratio(a["latency_p95_s"], b["latency_p95_s"]),
        "latency_max": ratio(a["latency_max_s"], b["latency_max_s"]),
        "makespan": ratio(a["makespan_s"], b["makespan_s"]),
        "tokens_per_s": ratio(b["tokens_per_s"], a["tokens_per_s"]),
        # Sampled replies differ from mode to mode: how much more work `fast` had to do.
        "generated_tokens": ratio(b["generated_tokens"], a["generated_tokens"]),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    host = host_info()
    torch.manual_seed(args.seed)
    engine = load_engine(args.context_tokens)
    params = dataclasses.replace(REFERENCE, max_new_tokens=args.max_new_tokens)
    if args.greedy:
        params = dataclasses.replace(params, temperature=0.0)
    schedule = arrivals(args, engine, params)
    # Warm the kernels (a batch of two as well) so no mode pays first-call costs.
    warm = [
        GenerationRequest(a.prompt, dataclasses.replace(params, max_new_tokens=4))
        for a in schedule[:2]
    ]
    engine.generate(warm)
    if args.baseline:
        naive_reply(engine, schedule[0].prompt, dataclasses.replace(params, max_new_tokens=4))

    recorder = RecordingEngine(engine)
    modes: dict[str, dict[str, Any]] = {}
    for mode in args.modes:
        engine.prefix_cache.clear()
        torch.manual_seed(args.seed)
        load_before = os.getloadavg()
        if mode == NAIVE:
            outcome = run_naive(engine, schedule, params)
        else:
            outcome = run_worker_mode(mode, recorder, schedule, params, args.max_batch)
        modes[mode] = summary(*outcome)
        # Other processes on the machine skew CPU timings a lot: keep what the load was.
        modes[mode]["load_average_before_after"] = [
            round(load_before[0], 2),
            round(os.getloadavg()[0], 2),
        ]
        print(
            f"{mode}: {modes[mode]['generated_tokens']} tok, makespan "
            f"{modes[mode]['makespan_s']:.1f}s, p50 {modes[mode]['latency_p50_s']:.1f}s",
            file=sys.stderr,
            flush=True,
        )
    engine.prefix_cache.clear()
    return {
        "benchmark": "staggered_arrivals",
        "created": now_iso(),
        "host": {**host, "load_average_at_end": [round(v, 2) for v in os.getloadavg()]},
        "model": engine.description,
        "settings": {
            "channels": args.channels,
            "mean_gap_s": args.mean_gap,
            "seed": args.seed,
            "context_tokens_range": list(args.context),
            "context_window": engine.context_window,
            "max_batch": args.max_batch,
            "modes": list(args.modes),
            "sampling": dataclasses.asdict(params),
            "quick": args.quick,
        },
        "arrivals_s": [arrival.at for arrival in schedule],
        "modes": modes,
        "speedup_continuous_over_batch_at_a_time": speedup(modes, BATCH_AT_A_TIME, CONTINUOUS),
        "speedup_continuous_over_naive": speedup(modes, NAIVE, CONTINUOUS),
    }


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = result["modes"]
    figure, (cdf, bars) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, stats in modes.items():
        latencies = sorted(request["latency_s"] for request in stats["requests"])
        fractions = [(i + 1) / len(latencies) for i in range(len(latencies))]
        cdf.step([0.0, *latencies], [0.0, *fractions], where="post", label=name)
    cdf.set_xlabel("latency, submit to reply (s)")
    cdf.set_ylabel("fraction of requests")
    cdf.set_title("Reply latency CDF")
    cdf.grid(alpha=0.3)
    cdf.legend()
    stats_names = ("latency_p50_s", "latency_p95_s", "latency_max_s", "makespan_s")
    width = 0.8 / max(1, len(modes))
    for offset, (name, stats) in enumerate(modes.items()):
        xs = [i + (offset - (len(modes) - 1) / 2) * width for i in range(len(stats_names))]
        bars.bar(
            xs,
            [stats[s] for s in stats_names],
            width,
            label=f"{name} ({stats['tokens_per_s']} tok/s)",
        )
    bars.set_xticks(range(len(stats_names)), ["p50", "p95", "max", "makespan"])
    bars.set_ylabel("seconds")
    gain = result["speedup_continuous_over_batch_at_a_time"]
    bars.set_title(
        f"continuous vs batch-at-a-time: p50 {gain['latency_p50']}x, p95 {gain['latency_p95']}x"
        if gain
        else "Latency and makespan"
    )
    bars.legend(fontsize=8)
    settings = result["settings"]
    save_chart(
        figure,
        path,
        f"{settings['channels']} channels, mean gap {settings['mean_gap_s']} s — "
        f"{result['model'].split('/')[-1]} — {result['created']}",
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=None, help="requests, one each (16)")
    parser.add_argument("--mean-gap", type=float, default=None, help="seconds between (0.5)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="(128)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--max-batch", type=int, default=8, help="worker batch size (config: 8)")
    parser.add_argument("--context-tokens", type=int, default=2048, help="context window")
    parser.add_argument(
        "--greedy",
        action="store_true",
        help="temperature 0: every mode gets the same replies, so only scheduling differs",
    )
    parser.add_argument("--baseline", action="store_true", help="also the naive reference client")
    parser.add_argument("--log-level", default="warning", help="relaybot's log level (to stderr)")
    parser.add_argument(
        "--quick", "--tiny", action="store_true", help="small and fast: a smoke run"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    if args.channels is None:
        args.channels = 3 if quick else 16
    if args.mean_gap is None:
        args.mean_gap = 0.2 if quick else 0.5
    if args.max_new_tokens is None:
        args.max_new_tokens = 8 if quick else REFERENCE.max_new_tokens
    args.context = (60, 120) if quick else (250, 800)
    args.modes = [CONTINUOUS, BATCH_AT_A_TIME] + ([NAIVE] if args.baseline else [])
    return args


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{'mode':<16}{'tok/s':>7}{'tokens':>8}{'p50 s':>8}{'p95 s':>8}{'max s':>8}"
        f"{'makespan s':>12}"
    )
    for name, stats in result["modes"].items():
        print(
            f"{name:<16}{stats['tokens_per_s']:>7}{stats['generated_tokens']:>8}"
            f"{stats['latency_p50_s']:>8}{stats['latency_p95_s']:>8}{stats['latency_max_s']:>8}"
            f"{stats['makespan_s']:>12}"
        )
    for label, key in (
        ("batch-at-a-time", "speedup_continuous_over_batch_at_a_time"),
        ("naive", "speedup_continuous_over_naive"),
    ):
        gain = result[key]
        if gain:
            print(
                f"continuous over {label}: latency p50 {gain['latency_p50']}x, "
                f"p95 {gain['latency_p95']}x, max {gain['latency_max']}x, "
                f"tokens/s {gain['tokens_per_s']}x"
            )
            if abs(gain["generated_tokens"] - 1) > 0.1:
                print(
                    f"  note: continuous generated {gain['generated_tokens']}x the tokens of "
                    f"{label} (sampled replies differ by mode); --greedy compares equal work"
                )


def main(argv: Sequence[str] | None = None) -> int:
    from relaybot.log import configure_logging

    args = parse_args(argv)
    configure_logging(args.log_level, fmt="console")
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "staggered_arrivals.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    chart(result, args.out / "staggered_arrivals.png")
    print_table(result)
    print(f"wrote {json_path} and {json_path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
