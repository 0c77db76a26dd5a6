"""What batching gives a user with the shipped defaults: a real `relaybot` process started
from config.example.toml (only the server address, channels and state directory changed),
a real IRC server (ngIRCd), one real client socket per channel.

- lone: one channel addresses the bot while all others are quiet; the time from the line to
  the first line of the bot's answer (the bot sends an answer once it is generated). Several
  lone replies, each in its own channel, one after the other; the median counts.
- burst: N channels address the bot at the same moment; the time until the last of them has
  the first line of its answer.

    score = N x lone / burst

Answering one at a time scores about 1; perfect batching with no cost per row scores N.
Figures move with the machine's load and with sampled reply lengths: the script runs several
rounds and reports each.

    python bench/shipped_batching.py                  # 8 channels, 5 lone replies, 2 rounds
    python bench/shipped_batching.py --channels 8 --rounds 3

Writes bench/results/shipped_batching.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import tomli_w

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.ircservers import RawClient, parse_line, start_server  # noqa: E402

BOT = "relaybot"


def shipped_config(port: int, channels: list[str], state: Path) -> str:
    """config.example.toml as shipped, pointed at the local server."""
    data: dict[str, Any] = tomllib.loads((ROOT / "config.example.toml").read_text())
    data["irc"].update(
        network="bench",
        host="127.0.0.1",
        port=port,
        tls=False,
        channels=channels,
        invite_accounts=[],
    )
    data.setdefault("state", {})["dir"] = str(state)
    return tomli_w.dumps(data)


def answered(channel: str) -> Callable[[str], bool]:
    def answer(line: str) -> bool:
        source, command, params = parse_line(line)
        return source == BOT and command == "PRIVMSG" and params[:1] == [channel]

    return answer


def joined(channel: str) -> Callable[[str], bool]:
    def join(line: str) -> bool:
        """The bot joining after the client, or already there when the client joined."""
        source, command, params = parse_line(line)
        if command == "353" and channel in params:
            return BOT in {nick.lstrip("@+%&~") for nick in params[-1].split()}
        return source == BOT and command == "JOIN" and params[:1] == [channel]

    return join


def wait_answers(
    clients: dict[str, RawClient],
    channels: Sequence[str],
    timeout: float,
    match: Callable[[str], Callable[[str], bool]] = answered,
) -> dict[str, float]:
    """When each of `channels` got the first line of an answer (or what `match` looks for).
    Every client is read in turn (10 ms each), so that idle ones answer the server's PINGs
    and are not timed out."""
    done: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(channels):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer in {sorted(set(channels) - set(done))}")
        for name, client in clients.items():
            waiting = name in channels and name not in done
            with contextlib.suppress(TimeoutError):
                client.wait_for(match(name) if waiting else (lambda line: False), 0.01)
                done[name] = time.monotonic()
    return done


def idle(clients: dict[str, RawClient], seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        wait_answers(clients, ["#nowhere"], seconds)


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="shipped-batching-"))
    server = start_server("ngircd", workdir / "ngircd")
    lone_names = [f"#lone{i}" for i in range(args.rounds * args.lone)]
    burst_names = [f"#burst{r}x{i}" for r in range(args.rounds) for i in range(args.channels)]
    config = workdir / "bot.toml"
    config.write_text(shipped_config(server.port, lone_names + burst_names, workdir / "state"))
    log = (workdir / "bot.log").open("w")
    bot = subprocess.Popen(
        [sys.executable, "-m", "relaybot", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    clients: dict[str, RawClient] = {}
    try:
        for index, channel in enumerate(lone_names + burst_names):
            client = RawClient.connect(server.host, server.port, f"user{index}")
            client.join(channel)
            clients[channel] = client

        wait_answers(clients, list(clients), args.start_timeout, match=joined)
        idle(clients, 2.0)  # warm-up and the READY state behind us
        rounds = []
        for r in range(args.rounds):
            lone = []
            for channel in lone_names[r * args.lone : (r + 1) * args.lone]:
                started = time.monotonic()
                clients[channel].privmsg(channel, f"{BOT}: tell me about the sea")
                done = wait_answers(clients, [channel], args.timeout)
                lone.append(done[channel] - started)
                idle(clients, 1.0)
            names = burst_names[r * args.channels : (r + 1) * args.channels]
            started = time.monotonic()
            for channel in names:
                clients[channel].privmsg(channel, f"{BOT}: tell me about the sea")
            done = wait_answers(clients, names, args.timeout)
            finished = [done[c] - started for c in names]
            burst = max(finished)
            lone_median = statistics.median(lone)
            score = args.channels * lone_median / burst
            rounds.append(
                {
                    "lone_seconds": lone,
                    "lone_median": lone_median,
                    "burst_seconds": burst,
                    "burst_each": sorted(finished),
                    "score": score,
                }
            )
            print(
                f"round {r + 1}: lone {', '.join(f'{s:.1f}' for s in lone)} s (median "
                f"{lone_median:.1f}); {args.channels} at once: last answer after {burst:.1f} s;"
                f" score {score:.2f}",
                flush=True,
            )
            idle(clients, 3.0)
    finally:
        for client in clients.values():
            client.close()
        bot.terminate()
        try:
            bot.wait(30)
        except subprocess.TimeoutExpired:
            bot.kill()
        log.close()
        server.stop()
    return {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "channels": args.channels,
        "config": "config.example.toml as shipped (server, channels, state dir changed)",
        "rounds": rounds,
        "score_median": statistics.median(r["score"] for r in rounds),
        "bot_log": str(workdir / "bot.log"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--lone", type=int, default=5, help="lone replies per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--start-timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    result = run(args)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "shipped_batching.json").write_text(json.dumps(result, indent=2))
    print(f"score (median of rounds): {result['score_median']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
