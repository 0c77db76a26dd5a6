"""Time to first reply on a long channel context, with and without prefix reuse (CPU).

One channel with a realistic context of about 2,000 tokens (built through relaybot's Transcript
and RelayFormat) is answered once, so the engine holds its KV prefix; then a new line is
appended (the bot's reply, and someone addressing the bot again) and the reply is timed:

- with reuse: the engine prefills only the new tokens after the cached prefix;
- without: the same request with no conversation key, so the whole prompt is prefilled again
  (what relaybot did before, and what the reference client does).

Two times are reported for each, as p50 over the repeats:
- first token: prefill plus the first sampled token (max_new_tokens = 1): the part of the
  reply time that prefix reuse removes;
- reply: a whole reply (greedy decoding, so both produce the same tokens, and the script checks
  that they do), at most `--reply-tokens` long (default 32: about one IRC line).

    .venv/bin/python bench/prefix_reuse.py
    .venv/bin/python bench/prefix_reuse.py --context 2000 --repeats 7
    .venv/bin/python bench/prefix_reuse.py --quick

Writes <out>/prefix_reuse.json and <out>/prefix_reuse.png (default out: bench/results).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relay_contexts import (
    REFERENCE,
    Channel,
    build_channels,
    busy_round,
    host_info,
    load_engine,
    now_iso,
    percentile,
    save_chart,
)

from relaybot.inference.engine import GenerationRequest, SamplingParams

TARGET_SPEEDUP = 3.0


def timed(engine: Any, channel: Channel, params: SamplingParams, reuse: bool) -> tuple[float, str]:
    request = GenerationRequest(channel.prompt(), params, channel.key if reuse else None)
    started = time.perf_counter()
    [text] = engine.generate([request])
    seconds = time.perf_counter() - started
    stats = engine.last_stats[0]
    if reuse and stats.reused_tokens == 0:
        raise RuntimeError("the prefix was not reused")
    return seconds, text


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    host = host_info()
    torch.manual_seed(args.seed)
    engine = load_engine(args.context + 1024)  # room for the context to grow over the repeats
    budget = engine.context_window - REFERENCE.max_new_tokens
    [channel] = build_channels(
        1, engine.count_tokens, budget, (args.context, args.context), seed=args.seed
    )
    rng = random.Random(args.seed)
    first = SamplingParams(temperature=0.0, max_new_tokens=1)
    reply = SamplingParams(temperature=0.0, max_new_tokens=args.reply_tokens)
    # Warm the kernels on a short prompt, outside any measurement.
    engine.generate([GenerationRequest(channel.prompt(), SamplingParams(max_new_tokens=2))])

    samples: dict[str, list[float]] = {
        "first_token_reuse": [],
        "first_token_full": [],
        "reply_reuse": [],
        "reply_full": [],
    }
    prompt_tokens, reused_tokens, reply_tokens, mismatches = [], [], [], 0
    for _ in range(args.repeats):
        busy_round(channel, rng, chatter=(0, 0))  # someone addresses the bot
        previous = channel.prompt()
        # Greedy: answering `previous` always gives the same reply, so priming the cache
        # with it twice (once per measurement) leaves the same cached prefix both times.
        [answer] = engine.generate([GenerationRequest(previous, reply)])
        channel.add_reply(answer or "ok")
        busy_round(channel, rng, chatter=(0, 1))  # the new line(s)
        prompt_tokens.append(len(engine.encode(channel.prompt())))
        for kind, params in (("first_token", first), ("reply", reply)):
            engine.forget(channel.key)
            engine.generate([GenerationRequest(previous, reply, channel.key)])
            seconds_reuse, text_reuse = timed(engine, channel, params, reuse=True)
            reused_tokens.append(engine.last_stats[0].reused_tokens)
            if kind == "reply":
                reply_tokens.append(engine.last_stats[0].generated_tokens)
            seconds_full, text_full = timed(engine, channel, params, reuse=False)
            mismatches += text_reuse != text_full
            samples[f"{kind}_reuse"].append(seconds_reuse)
            samples[f"{kind}_full"].append(seconds_full)
        print(
            f"context {prompt_tokens[-1]} tokens: first token "
            f"{samples['first_token_reuse'][-1]:.3f}s reused vs "
            f"{samples['first_token_full'][-1]:.3f}s full; reply "
            f"{samples['reply_reuse'][-1]:.3f}s vs {samples['reply_full'][-1]:.3f}s",
            file=sys.stderr,
            flush=True,
        )

    def p50(name: str) -> float:
        return round(percentile(samples[name], 0.5), 4)

    first_speedup = p50("first_token_full") / p50("first_token_reuse")
    reply_speedup = p50("reply_full") / p50("reply_reuse")
    return {
        "benchmark": "prefix_reuse",
        "created": now_iso(),
        "host": {**host, "load_average_at_end": [round(v, 2) for v in os.getloadavg()]},
        "model": engine.description,
        "settings": {
            "context_tokens_target": args.context,
            "repeats": args.repeats,
            "reply_tokens": args.reply_tokens,
            "seed": args.seed,
            "decoding": "greedy, repetition_penalty 1.1",
            "quick": args.quick,
        },
        "prompt_tokens_mean": round(statistics.fmean(prompt_tokens), 1),
        "reused_tokens_mean": round(statistics.fmean(reused_tokens), 1),
        "first_token": {
            "reuse_p50_s": p50("first_token_reuse"),
            "full_prefill_p50_s": p50("first_token_full"),
            "speedup": round(first_speedup, 2),
        },
        "reply": {
            "generated_tokens_mean": round(statistics.fmean(reply_tokens), 1),
            "reuse_p50_s": p50("reply_reuse"),
            "full_prefill_p50_s": p50("reply_full"),
            "speedup": round(reply_speedup, 2),
        },
        "identical_texts": mismatches == 0,
        "samples_s": {name: [round(v, 4) for v in values] for name, values in samples.items()},
        "target": {
            "speedup": TARGET_SPEEDUP,
            "met_first_token": first_speedup >= TARGET_SPEEDUP,
            "met_reply": reply_speedup >= TARGET_SPEEDUP,
        },
    }


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, kind, title in (
        (axes[0], "first_token", "Time to first token"),
        (
            axes[1],
            "reply",
            f"Whole reply (greedy, {result['reply']['generated_tokens_mean']:.0f} tokens"
            f" on average, at most {result['settings']['reply_tokens']})",
        ),
    ):
        values = [result[kind]["full_prefill_p50_s"], result[kind]["reuse_p50_s"]]
        bars = axis.bar(["full re-prefill", "prefix reuse"], values, color=["#999", "#2a7"])
        for bar, value in zip(bars, values, strict=True):
            axis.annotate(f"{value:.3f}s", (bar.get_x() + bar.get_width() / 2, value),
                          ha="center", va="bottom", fontsize=9)  # fmt: skip
        axis.set_title(f"{title}: {result[kind]['speedup']}x", fontsize=10)
        axis.set_ylabel("seconds (p50)")
    save_chart(
        figure,
        path,
        f"{result['prompt_tokens_mean']:.0f}-token channel context, "
        f"{result['reused_tokens_mean']:.0f} tokens reused — {result['created']}",
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--context", type=int, default=None, help="context tokens (2000)")
    parser.add_argument("--repeats", type=int, default=None, help="(5)")
    parser.add_argument("--reply-tokens", type=int, default=None, help="(32)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--quick", action="store_true", help="small and fast: a smoke run")
    args = parser.parse_args(argv)
    if args.context is None:
        args.context = 300 if args.quick else 2000
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if args.reply_tokens is None:
        args.reply_tokens = 4 if args.quick else 32
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = measure(args)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / "prefix_reuse.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    chart(result, args.out / "prefix_reuse.png")
    for kind in ("first_token", "reply"):
        row = result[kind]
        print(
            f"{kind}: reuse {row['reuse_p50_s']}s, full prefill {row['full_prefill_p50_s']}s, "
            f"{row['speedup']}x"
        )
    print(f"identical texts: {result['identical_texts']}; wrote {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
