"""End-to-end latency through a real IRC server, and the bot's own overhead per message.

One real client socket per channel joins its channel; in each round every client sends
`relaybot: ping` at once and waits for the bot's reply in its channel. Reported:

- end-to-end latency (client send -> bot's reply received), p50/p95, loaded (all channels at
  once) and unloaded (one channel at a time);
- the server's own transit (client -> channel -> another client) for comparison;
- the bot's overhead per message: time on the bot's IRC thread handling the incoming line
  (parse, context, gate, prompt rendering, hand-over to the worker) plus handling its
  completion (moderation, line splitting, pacing queue) plus writing the reply to the socket,
  as wall time and as the IRC thread's CPU time (wall time also counts waiting for the GIL
  while the worker thread and this script's client sockets run in the same process).
  Generation is excluded: with `--engine instant` (default) it is a stub that answers at once,
  with `--engine embedded` the real model runs and its batch times are reported separately.

    python bench/irc_end_to_end.py                      # 100 channels, instant engine
    python bench/irc_end_to_end.py --engine embedded --channels 8 --rounds 2

Writes bench/results/irc_end_to_end.json and .png. The bot logs JSON lines at info level, as in
production, into a file in the run's temporary directory. The bot runs in this process (like the
integration tests) with pacing and budgets opened up, since this measures the bot, not the
flood limits (bench/flood_probe.py measures those).
"""

from __future__ import annotations

import argparse
import json
import platform
import select
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relay_contexts import percentile  # noqa: E402

from relaybot.config.loader import load_config  # noqa: E402
from relaybot.config.schema import Config  # noqa: E402
from relaybot.inference.engine import GenerationRequest  # noqa: E402
from relaybot.log import configure_logging  # noqa: E402
from tests.support.botrunner import BotRunner  # noqa: E402
from tests.support.ircservers import RawClient, parse_line, start_server  # noqa: E402

BOT = "relaybot"


class InstantEngine:
    """Answers at once, with a different text each time (the bot never repeats itself)."""

    description = "instant stub (no model)"
    context_window = 2048

    def __init__(self) -> None:
        self.count = 0
        self.batch_seconds: list[float] = []

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        texts = []
        for _ in requests:
            self.count += 1
            texts.append(f"pong {self.count}")
        self.batch_seconds.append(0.0)
        return texts


class TimedEngine:
    """A real engine, with each batch's wall time kept."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.description = inner.description
        self.context_window = inner.context_window
        self.batch_seconds: list[float] = []

    def count_tokens(self, text: str) -> int:
        return int(self.inner.count_tokens(text))

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        started = time.perf_counter()
        try:
            return list(self.inner.generate(requests))
        finally:
            self.batch_seconds.append(time.perf_counter() - started)

    def interrupt(self) -> None:
        self.inner.interrupt()


def bot_config(path: Path, port: int, channels: list[str], max_new_tokens: int) -> Config:
    names = ", ".join(f'"{name}"' for name in channels)
    path.write_text(
        f"""
[irc]
host = "127.0.0.1"
port = {port}
nick = "{BOT}"
channels = [{names}]
[irc.flood]
burst = 100
interval = 0.0
bytes_per_second = 100000000
[reply]
max_lines = 1
[model]
name = "embedded"
device = "cpu"
max_new_tokens = {max_new_tokens}
max_batch = 8
seed = 1
[policy]
user_burst = 1000
user_per_minute = 100000
channel_burst = 1000
channel_per_minute = 100000
cooldown = 0.0
max_concurrent = 1024
max_waiting = 4096
loop_limit = 100000
repeat_window = 0.0
[state]
dir = "{path.parent / "state"}"
flush_interval = 3600
"""
    )
    return load_config(path)


class Overhead:
    """Times spent on the bot's IRC thread, per channel, for the message in flight."""

    def __init__(self) -> None:
        # channel -> (wall seconds, CPU seconds of the bot's IRC thread)
        self.inbound: dict[str, tuple[float, float]] = {}
        self.completion: dict[str, tuple[float, float]] = {}
        self.write: dict[str, tuple[float, float]] = {}

    def per_message(self, index: int = 0) -> list[float]:
        """Wall time (index 0) or thread CPU time (index 1) per message."""
        return [
            self.inbound[channel][index]
            + self.completion[channel][index]
            + self.write.get(channel, (0.0, 0.0))[index]
            for channel in self.inbound
            if channel in self.completion
        ]

    def clear(self) -> None:
        self.inbound.clear()
        self.completion.clear()
        self.write.clear()


def instrument(runner: BotRunner, overhead: Overhead) -> None:
    """Wrap the three places a message passes through on the IRC thread (bench only)."""
    bot = runner.net  # the one network the bench runs the bot on
    dispatch = bot.dispatch

    def timed_dispatch(completion: Any) -> None:
        started, cpu = time.perf_counter(), time.thread_time()
        dispatch(completion)
        overhead.completion[completion.job.reply_to.lower()] = (
            time.perf_counter() - started,
            time.thread_time() - cpu,
        )

    bot.dispatch = timed_dispatch  # type: ignore[method-assign]

    def wrap_connection() -> None:
        connection = bot.session.connection
        process_line = connection._process_line
        send_raw = connection.send_raw

        def timed_line(line: str) -> None:
            started, cpu = time.perf_counter(), time.thread_time()
            process_line(line)
            elapsed = (time.perf_counter() - started, time.thread_time() - cpu)
            _, command, params = parse_line(line)
            if command == "PRIVMSG" and params and params[-1].startswith(f"{BOT}:"):
                overhead.inbound[params[0].lower()] = elapsed

        def timed_send(line: str) -> None:
            started, cpu = time.perf_counter(), time.thread_time()
            send_raw(line)
            elapsed = (time.perf_counter() - started, time.thread_time() - cpu)
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[0] == "PRIVMSG":
                overhead.write[parts[1].lower()] = elapsed

        connection._process_line = timed_line
        connection.send_raw = timed_send

    runner.on_reactor(wrap_connection)


def collect(
    clients: dict[str, RawClient], waiting: set[str], sent_at: dict[str, float], timeout: float
) -> dict[str, float]:
    """Read every client socket until each channel in `waiting` saw the bot's reply."""
    received: dict[str, float] = {}
    by_socket = {client.sock: (channel, client) for channel, client in clients.items()}
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        ready, _, _ = select.select(list(by_socket), [], [], 0.5)
        now = time.perf_counter()
        for sock in ready:
            channel, client = by_socket[sock]
            client._receive(time.monotonic() + 0.01)
            for line in list(client._pending):
                source, command, params = parse_line(line)
                if command == "PRIVMSG" and source.lower() == BOT and params[0].lower() == channel:
                    client._pending.remove(line)
                    if channel in waiting:
                        waiting.discard(channel)
                        received[channel] = now - sent_at[channel]
            client._pending.clear()
    if waiting:
        raise TimeoutError(f"no reply in {timeout} s for {len(waiting)} channel(s)")
    return received


def summary(values: Sequence[float]) -> dict[str, float]:
    ms = [value * 1000 for value in values]
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 0.50), 3),
        "p95_ms": round(percentile(ms, 0.95), 3),
        "max_ms": round(max(ms), 3) if ms else float("nan"),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else float("nan"),
    }


def transit(server_host: str, port: int, samples: int) -> list[float]:
    """Client -> channel -> another client, through the same server."""
    with (
        RawClient.connect(server_host, port, "speaker") as speaker,
        RawClient.connect(server_host, port, "listener") as listener,
    ):
        speaker.join("#transit")
        listener.join("#transit")
        times = []
        for index in range(samples):
            started = time.perf_counter()
            speaker.privmsg("#transit", f"t{index}")
            listener.wait_for(lambda line, i=index: line.endswith(f":t{i}"), 10)
            times.append(time.perf_counter() - started)
        return times


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="relaybot-e2e-"))
    server = start_server(args.server, workdir / "server", relaxed_flood=True)
    channels = [f"#c{index}" for index in range(args.channels)]
    engine: Any
    if args.engine == "instant":
        engine = InstantEngine()
    else:
        from relaybot.inference.local.engine import TransformersEngine

        config = bot_config(workdir / "bot.toml", server.port, channels, args.max_new_tokens)
        engine = TimedEngine(TransformersEngine.load(config.model))
    config = bot_config(workdir / "bot.toml", server.port, channels, args.max_new_tokens)
    # Log as in production (JSON lines, info level), into a file instead of the journal.
    log_file = (workdir / "bot.log").open("w")
    saved_stderr, sys.stderr = sys.stderr, log_file
    try:
        configure_logging("info", "json")
    finally:
        sys.stderr = saved_stderr
    overhead = Overhead()
    clients: dict[str, RawClient] = {}
    try:
        transit_times = transit(server.host, server.port, args.transit_samples)
        with BotRunner(config, engine) as runner:
            runner.wait_until(
                lambda: all(runner.turns(name) is not None for name in channels),
                60,
                "the bot to join every channel",
            )
            instrument(runner, overhead)
            for index, channel in enumerate(channels):
                client = RawClient.connect(server.host, server.port, f"user{index}")
                client.join(channel)
                clients[channel] = client
            for client in clients.values():
                client._pending.clear()

            loaded_latency: list[float] = []
            loaded_overhead: list[float] = []
            loaded_cpu: list[float] = []
            for round_index in range(args.warmup + args.rounds):
                overhead.clear()
                sent_at: dict[str, float] = {}
                for channel, client in clients.items():
                    sent_at[channel] = time.perf_counter()
                    client.privmsg(channel, f"{BOT}: ping {round_index}")
                received = collect(clients, set(clients), sent_at, args.timeout)
                runner.wait_until(
                    lambda: len(overhead.write) >= len(clients), 10, "the writes to be timed"
                )
                if round_index >= args.warmup:
                    loaded_latency.extend(received.values())
                    loaded_overhead.extend(overhead.per_message())
                    loaded_cpu.extend(overhead.per_message(1))

            unloaded_latency: list[float] = []
            unloaded_overhead: list[float] = []
            unloaded_cpu: list[float] = []
            for channel in channels[: args.unloaded]:
                overhead.clear()
                client = clients[channel]
                sent_at = {channel: time.perf_counter()}
                client.privmsg(channel, f"{BOT}: alone")
                received = collect({channel: client}, {channel}, sent_at, args.timeout)
                runner.wait_until(lambda: bool(overhead.write), 10, "the write to be timed")
                unloaded_latency.extend(received.values())
                unloaded_overhead.extend(overhead.per_message())
                unloaded_cpu.extend(overhead.per_message(1))
    finally:
        for client in clients.values():
            client.close()
        server.stop()
        log_file.close()

    generation = engine.batch_seconds
    return {
        "benchmark": "irc_end_to_end",
        "server": args.server,
        "engine": engine.description,
        "channels": args.channels,
        "rounds": args.rounds,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": _cpu_count(),
        "transit": summary(transit_times),
        "loaded": {
            "latency": summary(loaded_latency),
            "bot_overhead": summary(loaded_overhead),
            "bot_overhead_cpu": summary(loaded_cpu),
        },
        "unloaded": {
            "latency": summary(unloaded_latency),
            "bot_overhead": summary(unloaded_overhead),
            "bot_overhead_cpu": summary(unloaded_cpu),
        },
        "generation_batches": summary(generation),
        "samples_ms": {
            "loaded_latency": [round(v * 1000, 3) for v in loaded_latency],
            "loaded_overhead": [round(v * 1000, 4) for v in loaded_overhead],
            "loaded_overhead_cpu": [round(v * 1000, 4) for v in loaded_cpu],
        },
    }


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for axis, key, title in (
        (left, "loaded_latency", "end-to-end latency (ms), all channels at once"),
        (right, "loaded_overhead", "bot overhead per message (ms)"),
    ):
        values = sorted(result["samples_ms"][key])
        fractions = [(index + 1) / len(values) for index in range(len(values))]
        axis.plot(values, fractions, label="wall time")
        if key == "loaded_overhead":
            cpu = sorted(result["samples_ms"]["loaded_overhead_cpu"])
            axis.plot(cpu, [(i + 1) / len(cpu) for i in range(len(cpu))], label="IRC thread CPU")
            axis.set_xscale("log")
        axis.set_title(title, fontsize=10)
        axis.set_ylabel("fraction of messages")
        axis.grid(alpha=0.3)
    right.axvline(2.0, color="red", linestyle="--", label="2 ms target")
    right.legend()
    figure.suptitle(
        f"{result['channels']} channels via {result['server']}, engine: {result['engine']}",
        fontsize=11,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--unloaded", type=int, default=20, help="one-at-a-time samples")
    parser.add_argument("--transit-samples", type=int, default=50)
    parser.add_argument("--engine", choices=("instant", "embedded"), default="instant")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--server", choices=("miniircd", "ngircd", "inspircd"), default="ngircd")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--name", default="irc_end_to_end")
    args = parser.parse_args(argv)
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{args.name}.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    chart(result, args.out / f"{args.name}.png")
    compact = {key: value for key, value in result.items() if key != "samples_ms"}
    print(json.dumps(compact, indent=2))
    print(f"wrote {json_path} and {json_path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
