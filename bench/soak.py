"""Soak: the real `relaybot` process under a long, steady IRC load, watched for memory growth,
errors, reconnects and lost replies.

The bot runs as `python -m relaybot --config <file>`, with a config derived from
config.example.toml, against a real ngIRCd on 127.0.0.1. Real client sockets (two per
channel by default, so that no channel is a two-party exchange that the loop guard would
stop) speak `--lines` PRIVMSG lines (default 10,000) spread evenly over `--seconds` (default
270) in `--channels` channels (default 50), each line in a random channel, about
`--addressed` of them (default a tenth) addressed to the bot (`relaybot: q<id> ...`). Churn is
mixed in: `--churn` x lines events (default 3 %, 300), each either a client parting and
rejoining its channel 1-4 s later or a client changing nick and back 2-8 s later.

Generation is instant: a stand-in OpenAI-compatible server runs in this process
(ThreadingHTTPServer on 127.0.0.1:0: GET /health and /v1/models for the bot's start-up probe,
POST /v1/completions, plain JSON or Server-Sent Events when the bot asks for "stream": true).
It answers a short, varied text that echoes the newest `q<id>` in the prompt as `a<id>`, so
every reply names the line it answers; only the bot itself is measured.

Reported (stdout and bench/results/soak.json): the bot's RSS (/proc/<pid>/status VmRSS) at
start, after the first 1,000 lines (`--baseline-lines`; a tenth of --lines when that is less),
after the load and at the end, and the growth from that baseline to the end in %; RSS, threads
and open fds every 5 s; log lines at level error and at level warning with their top event
names; reconnects ("connecting" events after the first; "disconnected" events); addressed
lines sent vs reply lines received, and how many addressed lines got a reply of their own or a
later one in the same channel; replies that answer no line not answered before (with what
happened in their channel in the 8 s before them); reply latency (send to the first answer
naming the line); bot log events about replies and the reasons replies were declined; and
whether the bot still answers at the end: after the load a client that never spoke sends one
addressed line in a channel kept quiet during the load (`#soak-final`, so that no budget of the
load is spent there) and waits up to `--final-timeout` (30 s) for the answer.

Freshness (issue 16: `[reply] max_age`, default 60 s: a reply that has not started going out
within max_age of its line is dropped; a newer reply supersedes an older unsent one in the same
conversation; the scheduler declines generations that could not leave in time; the outbox
serves the least recently served channel first), also in the result:

- `replies.latency_s` (all the load's answers) and `replies.latency_during_load_s` (those that
  arrived by the last load line): count, p50, p95 and max of request (the client sending
  `q<id>`) to the first reply line naming it;
- from the bot's log (`log.replies`, `log.dropped_stale_by_stage`, `log.declined_reasons`,
  gathered in `freshness`): replies dropped stale by `stage` (waiting, generated, queued),
  dropped superseded, and declined for "backlog";
- `backlog_at_end`: reply lines (and first answers) the bot still sent in the load's channels
  after the last load line, and when the last one came (`quiet_after_s`). After the final
  check the clients watch until those channels stay quiet `--quiet-gap` s (10) or
  `--drain-timeout` s (120) after the last load line have passed (`went_quiet`, `watched_s`;
  RSS "end" is taken after that);
- `quiet_probes`: a channel the load leaves alone, under load: at `--probe-at` of --seconds
  (25, 50 and 75 %) a client that never spoke asks once in a channel of its own
  (#soak-quiet1, #soak-quiet2, ...: no cooldown or budget shared with another probe) and each
  one's time to the answer is reported (null past `--probe-timeout`, 30 s), with the worst and
  whether all came within the target of 10 s;
- `freshness`: max_age (from the config the bench wrote; 60 s when it has none), the answers
  and the reply lines that arrived later than max_age after their question (the bound is on a
  reply starting to go out; arriving adds the server's relay, a few ms unless ngIRCd's own
  flood control delays the bot), and the oldest answer.

    python bench/soak.py                                          # the whole soak (~5-7 min)
    python bench/soak.py --lines 1000 --channels 10 --seconds 40  # a short run
    python bench/soak.py --pacing shipped     # shipped [irc.flood], ngIRCd's own flood control

Changes from config.example.toml (everything else, [policy] budgets included, as shipped):

- irc.network "soak"; irc.host/port the local ngIRCd, irc.tls false; irc.channels the load's
  channels plus #soak-final and the quiet probes' channels; state.dir in the run's temporary
  directory;
- reply.max_age only with `--max-age` (not written otherwise, so that a config schema without
  the key still loads);
- model.engine "openai" with [model.remote] url (the stand-in, ".../v1"), model "soak-standin"
  and stream (false unless --stream); model.name stays "auto" (token counts are estimated,
  nothing is loaded);
- log.format "json" (what "auto" picks anyway when stderr is a file: made explicit);
- `--pacing raised` (the default) only: irc.flood.interval 1.1 -> 0.1 s, and ngIRCd started
  with MaxPenaltyTime = 0 (its penalties off, as in the other benchmarks). Why: a tenth of
  10,000 lines in 270 s asks for ~3.7 replies/s, while the shipped pacing (a burst of 5, then
  1.1 s plus bytes/2048 per line) sends at most ~0.9 lines/s: the replies would queue by the
  hundreds, arrive minutes late, and the check at the end would wait a full round-robin of
  the busy channels (~1 min) instead of showing whether the bot still answers. ngIRCd's
  default flood control delays each client to about 3 commands/s once it has a backlog
  (measured with bench/flood_probe.py: 10 lines/s -> 3.4 lines/s delivered, no disconnect),
  also below 3.7 lines/s. With interval 0.1 the bot may send ~8 short lines/s. burst,
  bytes_per_second and max_queued stay as shipped. `--pacing shipped` keeps the shipped
  values and ngIRCd's default flood control, to see what users get at this load.

The clients stay far from ngIRCd's flood control either way: 10,000 lines over 100 clients in
270 s is ~0.37 lines/s each, and every client socket is read all the time (PINGs answered, no
send queue building up on the server). Client disconnects, server ERRORs and error numerics
the clients receive are reported.

Writes bench/results/soak.json; the bot's log (JSON lines, info level) and the config stay in
the temporary directory named in the result.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import platform
import random
import re
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import tomli_w

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.ircservers import RawClient, parse_line, start_server  # noqa: E402

BOT = "relaybot"
HOST = "127.0.0.1"
MODEL = "soak-standin"
CHECK_CHANNEL = "#soak-final"
CHECK_NICK = "soakcheck"
QUIET_CHANNEL = "#soak-quiet{}"  # one per probe during the load: #soak-quiet1, ...
QUIET_NICK = "soakquiet{}"
QUIET_TARGET_S = 10.0  # a quiet channel's answer under load, at most (issue 16)
DEFAULT_MAX_AGE = 60.0  # [reply] max_age when the config does not set it
RAISED_INTERVAL = 0.1  # irc.flood.interval with --pacing raised (shipped: 1.1)
SAMPLE_EVERY = 5.0  # seconds between RSS samples
QUESTION_TAG = re.compile(r"\bq(\d+)\b")
ANSWER_TAG = re.compile(r"\ba(\d+)\b")

ANSWERS = (
    "sure, noted",
    "sounds right to me",
    "not sure about that one",
    "ha, good point",
    "maybe ask again later",
    "the sea is calm today",
    "I would try turning it off and on again",
    "that depends on the weather",
    "fair enough",
    "let me think about that",
    "yes, and the docs agree",
    "no idea, sorry",
)
QUESTIONS = (
    "what do you think?",
    "is it going to rain?",
    "any tips for the build?",
    "how are you today?",
    "tell me about the sea",
    "did you see the game?",
    "what's a good name for a cat?",
    "should I restart it?",
)
CHATTER = (
    "hi all",
    "anyone around?",
    "brb, coffee",
    "the build is green again",
    "lol",
    "that was a long meeting",
    "ok, pushing now",
    "does anyone know where the logs went?",
    "nice",
    "back",
    "I'll look at it tomorrow",
    "the tests pass on my machine",
)


# --- the stand-in completion server ---------------------------------------------------------


class StandInHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as vLLM and `transformers serve` do
    server: StandIn

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        self.server.note(f"GET {path}")
        if path == "/health":
            self._json(200, {"status": "ok"})
        elif path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        else:
            self._json(404, {"error": {"message": f"no route {path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.split("?", 1)[0].rstrip("/")
        if path != "/v1/completions":
            self.server.note(f"POST {path}")
            self._json(404, {"error": {"message": f"no route {path}"}})
            return
        try:
            body = json.loads(raw)
            prompt = body["prompt"]
            if not isinstance(prompt, str):
                raise TypeError("prompt is not a string")
        except (ValueError, KeyError, TypeError) as exc:
            self.server.note("bad_request")
            self._json(400, {"error": {"message": f"bad request: {exc}"}})
            return
        streamed = bool(body.get("stream"))
        text = self.server.answer(prompt, streamed)
        created = int(time.time())
        if not streamed:
            self._json(
                200,
                {
                    "id": f"cmpl-{created}",
                    "object": "text_completion",
                    "created": created,
                    "model": MODEL,
                    "choices": [
                        {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
                    ],
                    "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": 8},
                },
            )
            return
        # Server-Sent Events; the body ends when the connection closes (no length).
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        words = text.split(" ")
        try:
            for index, word in enumerate(words):
                piece = word if index == 0 else " " + word
                self._event({"object": "text_completion", "model": MODEL, "choices": [
                    {"index": 0, "text": piece, "finish_reason": None}]})  # fmt: skip
            self._event({"object": "text_completion", "model": MODEL, "choices": [
                {"index": 0, "text": "", "finish_reason": "stop"}]})  # fmt: skip
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the bot hangs up once it has the finish_reason: fine

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _event(self, payload: Any) -> None:
        self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
        self.wfile.flush()


class StandIn(ThreadingHTTPServer):
    """Answers every completion at once; counts what it was asked."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__((HOST, 0), StandInHandler)
        self.lock = threading.Lock()
        self.completions = 0
        self.streamed = 0
        self.other: Counter[str] = Counter()  # probes, unknown routes, bad requests
        self.prompt_chars: list[int] = []
        self.handler_errors = 0
        self.thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/v1"

    def note(self, what: str) -> None:
        with self.lock:
            self.other[what] += 1

    def answer(self, prompt: str, streamed: bool) -> str:
        tags = QUESTION_TAG.findall(prompt)
        with self.lock:
            self.completions += 1
            self.streamed += streamed
            self.prompt_chars.append(len(prompt))
            count = self.completions
        phrase = ANSWERS[count % len(ANSWERS)]
        return f"a{tags[-1]} {phrase} ({count})" if tags else f"{phrase} ({count})"

    def handle_error(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.handler_errors += 1

    def close(self) -> None:
        self.shutdown()
        self.server_close()

    def summary(self) -> dict[str, Any]:
        with self.lock:
            chars = list(self.prompt_chars)
            tenth = max(1, len(chars) // 10)
            return {
                "completions": self.completions,
                "streamed": self.streamed,
                "other_requests": dict(self.other),
                "handler_errors": self.handler_errors,
                "prompt_chars": {
                    "max": max(chars, default=0),
                    "mean_first_tenth": round(statistics.fmean(chars[:tenth]), 1) if chars else 0,
                    "mean_last_tenth": round(statistics.fmean(chars[-tenth:]), 1) if chars else 0,
                },
            }


# --- the bot's config and process ------------------------------------------------------------


def soak_config(
    port: int,
    channels: list[str],
    state: Path,
    url: str,
    *,
    pacing: str,
    stream: bool,
    max_age: float | None = None,
) -> tuple[str, dict[str, Any]]:
    """config.example.toml, pointed at the local server and the stand-in; and what changed."""
    data: dict[str, Any] = tomllib.loads((ROOT / "config.example.toml").read_text())
    irc = data["irc"]
    changes: dict[str, Any] = {}

    def change(section: dict[str, Any], prefix: str, key: str, value: Any) -> None:
        changes[f"{prefix}.{key}"] = {"shipped": section.get(key), "soak": value}
        section[key] = value

    change(irc, "irc", "network", "soak")
    change(irc, "irc", "host", HOST)
    change(irc, "irc", "port", port)
    change(irc, "irc", "tls", False)
    irc["channels"] = channels
    changes["irc.channels"] = {"shipped": ["#relaybot"], "soak": f"{len(channels)} channels"}
    if pacing == "raised":
        change(irc.setdefault("flood", {}), "irc.flood", "interval", RAISED_INTERVAL)
    change(data.setdefault("state", {}), "state", "dir", str(state))
    model = data.setdefault("model", {})
    change(model, "model", "engine", "openai")
    model["remote"] = {"url": url, "model": MODEL, "stream": stream}
    changes["model.remote"] = {"shipped": None, "soak": dict(model["remote"])}
    change(data.setdefault("log", {}), "log", "format", "json")
    if max_age is not None:  # only when asked: a schema without the key would refuse it
        change(data.setdefault("reply", {}), "reply", "max_age", max_age)
    return tomli_w.dumps(data), changes


def configured_max_age(config_text: str) -> tuple[float, str]:
    """[reply] max_age of the config the bench wrote, and where it came from."""
    value = tomllib.loads(config_text).get("reply", {}).get("max_age")
    return (DEFAULT_MAX_AGE, "default") if value is None else (float(value), "config")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (KiB), Threads and open fds of a live process; {} once it is gone."""
    values: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                values[key] = int(rest.split()[0])
        values["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError, IndexError):
        return {}
    return values


# --- the clients ---------------------------------------------------------------------------


@dataclass
class Member:
    """One client socket in one channel."""

    client: RawClient
    channel: str
    base_nick: str
    nick: str = ""
    in_channel: bool = True
    churning: bool = False  # a part or nick change is waiting for its undo
    closed: bool = False

    def __post_init__(self) -> None:
        self.nick = self.nick or self.base_nick


@dataclass
class Observed:
    """What the clients saw."""

    reply_lines: dict[tuple[str, str], float] = field(default_factory=dict)  # first seen
    answered: dict[int, float] = field(default_factory=dict)  # question id -> first answer
    answered_in: dict[str, list[int]] = field(default_factory=dict)  # channel -> ids answered
    stray_tags: int = 0  # answers naming a question that was not asked in that channel
    not_new: list[tuple[str, str, float]] = field(default_factory=list)  # no new question
    disconnects: list[dict[str, Any]] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    numerics: Counter[str] = field(default_factory=Counter)  # error numerics (4xx/5xx)

    def last_reply(self, excluded: set[str]) -> float:
        """When the newest reply line outside `excluded` channels arrived (0 if none)."""
        return max(
            (seen for (channel, _), seen in self.reply_lines.items() if channel not in excluded),
            default=0.0,
        )


@dataclass
class Probe:
    """A client that never spoke, alone in a channel the load leaves alone: asks once."""

    member: Member
    fraction: float  # of --seconds into the load
    question: int
    sent_at: float | None = None  # clock()


class Crowd:
    """All client sockets, read together with select() on one thread."""

    def __init__(self, members: list[Member], observed: Observed, clock: Callable[[], float]):
        self.members = members
        self.observed = observed
        self.clock = clock
        self.by_sock = {member.client.sock: member for member in members}
        self.asked: dict[int, tuple[str, float]] = {}  # question id -> (channel, sent at)
        self.asked_by: dict[int, str] = {}  # question id -> the sender's nick then

    def send(self, member: Member, line: str) -> bool:
        if member.closed:
            return False
        try:
            member.client.send(line)
        except OSError as exc:
            self._closed(member, f"send failed: {exc}")
            return False
        return True

    def ask(self, member: Member, question: int, words: str) -> bool:
        """Send `relaybot: q<question> <words>` in the member's channel; note it if it went."""
        sent_at = self.clock()
        if not self.send(member, f"PRIVMSG {member.channel} :{BOT}: q{question} {words}"):
            return False
        self.asked[question] = (member.channel, sent_at)
        self.asked_by[question] = member.nick
        return True

    def pump_until(self, done: Callable[[], bool], until: float) -> bool:
        """Read until `done()` or the clock reaches `until`; whether `done()` came true."""
        while not done():
            left = until - self.clock()
            if left <= 0:
                return False
            self.pump(min(0.2, left))
        return True

    def pump(self, timeout: float) -> None:
        """Read whatever arrived (waiting up to `timeout` for something)."""
        if not self.by_sock:
            time.sleep(max(0.0, timeout))
            return
        try:
            ready, _, _ = select.select(list(self.by_sock), [], [], max(0.0, timeout))
        except (OSError, ValueError):
            ready = []
        for sock in ready:
            member = self.by_sock.get(sock)
            if member is None:
                continue
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError, TimeoutError):
                continue
            except OSError as exc:
                self._closed(member, f"recv failed: {exc}")
                continue
            if not data:
                self._closed(member, "closed by the server")
                continue
            client = member.client
            *complete, client._buffer = (client._buffer + data).split(b"\n")
            now = self.clock()
            for raw in complete:
                if raw := raw.rstrip(b"\r"):
                    self._line(member, raw.decode("utf-8", errors="replace"), now)

    def _line(self, member: Member, line: str, now: float) -> None:
        source, command, params = parse_line(line)
        if command == "PING":
            self.send(member, "PONG :" + (params[-1] if params else "irc.test"))
        elif command == "PRIVMSG" and source.lower() == BOT and params[:1]:
            channel = params[0].lower()
            text = params[-1]
            key = (channel, text)
            if key in self.observed.reply_lines:
                return  # the same reply seen by another client in the channel
            self.observed.reply_lines[key] = now
            tags = ANSWER_TAG.findall(text)
            fresh = False
            for tag in tags:
                question = int(tag)
                asked = self.asked.get(question)
                if asked is None or asked[0] != channel:
                    self.observed.stray_tags += 1
                elif question not in self.observed.answered:
                    fresh = True
                    self.observed.answered[question] = now
                    self.observed.answered_in.setdefault(channel, []).append(question)
            if not fresh:
                # No tag, or one answered before: a second answer to the same line.
                self.observed.not_new.append((channel, text, now))
        elif command == "ERROR":
            self.observed.server_errors.append(f"{member.nick}: {params[-1] if params else ''}")
        elif command.isdigit() and command[0] in "45":
            self.observed.numerics[f"{command} {params[-1] if params else ''}"[:80]] += 1

    def _closed(self, member: Member, why: str) -> None:
        if member.closed:
            return
        member.closed = True
        self.by_sock.pop(member.client.sock, None)
        self.observed.disconnects.append(
            {"nick": member.nick, "channel": member.channel, "why": why, "at": self.clock()}
        )

    def close(self) -> None:
        for member in self.members:
            with contextlib.suppress(OSError):
                member.client.close()


def connect_member(port: int, channel: str, nick: str) -> Member:
    client = RawClient.connect(HOST, port, nick)
    client.join(channel)
    return Member(client, channel, nick)


def connect_members(port: int, channels: list[str], per_channel: int) -> list[Member]:
    members = []
    for index, channel in enumerate(channels):
        for k in range(per_channel):
            nick = f"s{index}{chr(ord('a') + k)}" if per_channel <= 26 else f"s{index}x{k}"
            members.append(connect_member(port, channel, nick))
    return members


def connect_probes(port: int, fractions: Sequence[float], first_question: int) -> list[Probe]:
    """One client per probe, each in a quiet channel of its own (#soak-quiet1, ...)."""
    return [
        Probe(
            connect_member(port, QUIET_CHANNEL.format(n), QUIET_NICK.format(n)),
            fraction,
            first_question + n - 1,
        )
        for n, fraction in enumerate(fractions, start=1)
    ]


def wait_for_bot(members: list[Member], deadline: float) -> None:
    """Until the bot has joined every channel (each channel's first client sees its JOIN)."""
    seen: set[str] = set()
    for member in members:
        if member.channel in seen:
            continue
        member.client.wait_for(
            lambda line, channel=member.channel: (
                parse_line(line)[:2] == (BOT, "JOIN")
                and [p.lower() for p in parse_line(line)[2][:1]] == [channel]
            ),
            max(1.0, deadline - time.monotonic()),
        )
        seen.add(member.channel)


# --- the run -------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def probe_pending(probe: Probe, observed: Observed, now: float, timeout: float) -> bool:
    """Sent, not answered yet, and its time not up."""
    return (
        probe.sent_at is not None
        and probe.question not in observed.answered
        and now < probe.sent_at + timeout
    )


def drain_deadline(probes: list[Probe], last_line: float, args: argparse.Namespace) -> float:
    """How long to watch after the load: --drain-timeout, and every probe's timeout."""
    sent = [probe.sent_at for probe in probes if probe.sent_at is not None]
    return max([last_line + args.drain_timeout, *(t + args.probe_timeout for t in sent)])


def quiet_and_settled(
    observed: Observed,
    probes: list[Probe],
    side: set[str],
    last_line: float,
    now: float,
    args: argparse.Namespace,
) -> bool:
    """No reply line in the load's channels for --quiet-gap s, and no probe still waiting."""
    last = max(last_line, observed.last_reply(side))
    return now - last >= args.quiet_gap and not any(
        probe_pending(probe, observed, now, args.probe_timeout) for probe in probes
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="relaybot-soak-"))
    channels = [f"#soak{index}" for index in range(args.channels)]
    baseline_lines = args.baseline_lines or min(1000, max(1, args.lines // 10))
    server = start_server("ngircd", workdir / "ngircd", relaxed_flood=args.pacing == "raised")
    standin = StandIn()
    quiet_channels = [QUIET_CHANNEL.format(n) for n in range(1, len(args.probe_at) + 1)]
    side_channels = {CHECK_CHANNEL, *quiet_channels}  # not the load's
    config_text, changes = soak_config(
        server.port,
        [*channels, CHECK_CHANNEL, *quiet_channels],
        workdir / "state",
        standin.url,
        pacing=args.pacing,
        stream=args.stream,
        max_age=args.max_age,
    )
    max_age, max_age_from = configured_max_age(config_text)
    config_path = workdir / "bot.toml"
    config_path.write_text(config_text)
    log_path = workdir / "bot.log"
    log_file = log_path.open("w")
    members: list[Member] = []
    probes: list[Probe] = []
    bot: subprocess.Popen[bytes] | None = None
    crowd: Crowd | None = None
    observed = Observed()
    started = time.monotonic()

    def clock() -> float:
        return time.monotonic() - started

    rss: dict[str, Any] = {"samples": []}
    counts: Counter[str] = Counter()
    load: dict[str, Any] = {}
    final: dict[str, Any] = {"channel": CHECK_CHANNEL, "timeout_s": args.final_timeout}
    load_began = last_line_clock = watched_until = 0.0  # clock()
    went_quiet = False
    bot_exit: int | None = None
    run_log_bytes = 0
    try:
        clients = args.channels * args.per_channel + 1 + len(quiet_channels)
        print(f"workdir {workdir}; connecting {clients} clients")
        members = connect_members(server.port, channels, args.per_channel)
        checker = connect_member(server.port, CHECK_CHANNEL, CHECK_NICK)
        probes = connect_probes(server.port, args.probe_at, args.lines + 1)
        others = [checker, *(probe.member for probe in probes)]  # outside the load
        bot = subprocess.Popen(
            [sys.executable, "-m", "relaybot", "--config", str(config_path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        wait_for_bot([*members, *others], time.monotonic() + args.start_timeout)
        for member in [*members, *others]:
            member.client._pending.clear()
            member.client.lines.clear()
            member.client.sock.settimeout(10.0)  # for sendall; recv only after select
        crowd = Crowd([*members, *others], observed, clock)
        crowd.pump(2.0)  # warm-up behind us
        rss["start"] = proc_status(bot.pid)
        print(f"bot up (pid {bot.pid}, {rss['start'].get('VmRSS')} KiB); load starts")

        by_channel: dict[str, list[Member]] = {}
        for member in members:
            by_channel.setdefault(member.channel, []).append(member)
        heap: list[tuple[float, int, str, int]] = []
        seq = 0

        def push(due: float, kind: str, arg: int) -> None:
            nonlocal seq
            seq += 1
            heapq.heappush(heap, (due, seq, kind, arg))

        spacing = args.seconds / args.lines
        for index in range(args.lines):
            push(index * spacing, "line", index)
        for _ in range(round(args.lines * args.churn)):
            push(rng.uniform(0, args.seconds * 0.95), rng.choice(("part", "nick")), -1)
        for index, probe in enumerate(probes):
            push(probe.fraction * args.seconds, "probe", index)

        load_start = time.monotonic()
        load_began = clock()
        next_sample = 0.0
        max_lag = 0.0
        lines_sent = 0
        last_line_at = 0.0
        while heap:
            now = time.monotonic() - load_start
            due, _, kind, arg = heap[0]
            if now >= next_sample:
                status = proc_status(bot.pid)
                rss["samples"].append({"t": round(now, 1), "lines": lines_sent, **status})
                next_sample += SAMPLE_EVERY
                if bot.poll() is not None:
                    counts["aborted_bot_exited"] = 1
                    break
            if due > now:
                crowd.pump(min(due - now, 0.05))
                continue
            heapq.heappop(heap)
            max_lag = max(max_lag, now - due)
            if kind == "line":
                last_line_at = now
                channel = channels[rng.randrange(len(channels))]
                speakers = [m for m in by_channel[channel] if m.in_channel and not m.closed]
                addressed = rng.random() < args.addressed
                if not speakers:
                    counts["lines_skipped_no_speaker"] += 1
                    continue
                speaker = rng.choice(speakers)
                if addressed:
                    went = crowd.ask(speaker, arg, rng.choice(QUESTIONS))
                else:
                    went = crowd.send(speaker, f"PRIVMSG {channel} :m{arg} {rng.choice(CHATTER)}")
                if went:
                    lines_sent += 1
                    last_line_clock = clock()
                    counts["addressed" if addressed else "chatter"] += 1
                if lines_sent == baseline_lines and "after_baseline" not in rss:
                    rss["after_baseline"] = proc_status(bot.pid)
            elif kind == "part":
                # Someone leaves a channel where another client stays, and comes back.
                candidates = [
                    m
                    for m in members
                    if m.in_channel
                    and not m.churning
                    and not m.closed
                    and sum(o.in_channel for o in by_channel[m.channel]) > 1
                ]
                if candidates:
                    member = rng.choice(candidates)
                    if crowd.send(member, f"PART {member.channel} :brb"):
                        member.in_channel = False
                        member.churning = True
                        counts["parts"] += 1
                        push(now + rng.uniform(1.0, 4.0), "rejoin", members.index(member))
            elif kind == "rejoin":
                member = members[arg]
                if crowd.send(member, f"JOIN {member.channel}"):
                    member.in_channel = True
                    counts["rejoins"] += 1
                member.churning = False
            elif kind == "nick":
                candidates = [m for m in members if not m.churning and not m.closed]
                if candidates:
                    member = rng.choice(candidates)
                    away = f"{member.base_nick}_away"
                    if crowd.send(member, f"NICK {away}"):
                        member.nick = away
                        member.churning = True
                        counts["nick_changes"] += 1
                        push(now + rng.uniform(2.0, 8.0), "nick_back", members.index(member))
            elif kind == "nick_back":
                member = members[arg]
                if crowd.send(member, f"NICK {member.base_nick}"):
                    member.nick = member.base_nick
                    counts["nicks_back"] += 1
                member.churning = False
            elif kind == "probe":
                probe = probes[arg]
                if crowd.ask(probe.member, probe.question, "is anyone here?"):
                    probe.sent_at = crowd.asked[probe.question][1]
            crowd.pump(0.0)
        load_seconds = time.monotonic() - load_start
        load.update(counts)
        load["lines_sent"] = lines_sent
        load["seconds"] = round(last_line_at, 1)  # first line to last
        load["churn_tail_s"] = round(load_seconds - last_line_at, 1)  # undoing the last churn
        load["lines_per_second"] = round(lines_sent / last_line_at, 2) if last_line_at else None
        load["max_schedule_lag_s"] = round(max_lag, 3)
        rss["after_load"] = proc_status(bot.pid)
        if "after_baseline" not in rss:
            rss["after_baseline"] = rss["after_load"]

        # Late replies, then the check: a fresh nick, a channel the load left alone.
        settle_until = time.monotonic() + args.settle
        while time.monotonic() < settle_until:
            crowd.pump(settle_until - time.monotonic())
        question = args.lines  # an id no load line has
        final["sent"] = crowd.ask(checker, question, "are you still there?")
        if final["sent"]:
            crowd.pump_until(lambda: question in observed.answered, clock() + args.final_timeout)
        final["answered"] = question in observed.answered
        final["seconds"] = (
            round(observed.answered[question] - crowd.asked[question][1], 3)
            if final["answered"]
            else None
        )
        crowd.pump(0.5)
        # The backlog: until the load's channels stay quiet and every probe is settled.
        watched_until = drain_deadline(probes, last_line_clock, args)
        went_quiet = crowd.pump_until(
            lambda: quiet_and_settled(
                observed, probes, side_channels, last_line_clock, clock(), args
            ),
            watched_until,
        )
        watched_until = min(watched_until, clock())
        rss["end"] = proc_status(bot.pid)
        rss["samples"].append(
            {"t": round(time.monotonic() - load_start, 1), "lines": lines_sent, **rss["end"]}
        )
        log_file.flush()
        run_log_bytes = log_path.stat().st_size
    except BaseException:
        log_file.flush()
        tail = log_path.read_text(errors="replace").splitlines()[-20:]
        print("the run failed; the bot's log ends:\n" + "\n".join(tail), file=sys.stderr)
        raise
    finally:
        if crowd is not None:
            crowd.close()
        else:
            for member in members:
                member.client.close()
        if bot is not None:
            if bot.poll() is None:
                bot.terminate()
                try:
                    bot.wait(30)
                except subprocess.TimeoutExpired:
                    bot.kill()
                    bot.wait(10)
            bot_exit = bot.returncode
        log_file.close()
        server.stop()
        standin.close()

    answered = observed.answered
    every_question = dict(crowd.asked) if crowd else {}  # the load's, the probes', the final
    asked = {q: v for q, v in every_question.items() if q < args.lines}  # the load's
    newest_answer = {ch: max(ids) for ch, ids in observed.answered_in.items()}
    covered = sum(1 for q, (ch, _) in asked.items() if newest_answer.get(ch, -1) >= q)
    replies_in_load = sum(
        1 for (channel, _) in observed.reply_lines if channel not in side_channels
    )
    log = analyse_log(log_path, run_log_bytes)
    baseline_rss = rss["after_baseline"].get("VmRSS")
    end_rss = rss["end"].get("VmRSS")
    return {
        "benchmark": "soak",
        "settings": {
            "lines": args.lines,
            "channels": args.channels,
            "seconds": args.seconds,
            "clients_per_channel": args.per_channel,
            "addressed_fraction": args.addressed,
            "churn_fraction": args.churn,
            "pacing": args.pacing,
            "ngircd_flood_control": "default" if args.pacing == "shipped" else "off",
            "stream": args.stream,
            "seed": args.seed,
            "baseline_lines": baseline_lines,
            "max_age_flag": args.max_age,
            "probe_at": list(args.probe_at),
            "probe_timeout_s": args.probe_timeout,
            "drain_timeout_s": args.drain_timeout,
            "quiet_gap_s": args.quiet_gap,
        },
        "config_changes": changes,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load": dict(load),
        "rss_kib": {
            "start": rss["start"].get("VmRSS"),
            "after_baseline": baseline_rss,
            "after_load": rss["after_load"].get("VmRSS"),
            "end": end_rss,
            "growth_pct": (
                round(100.0 * (end_rss - baseline_rss) / baseline_rss, 2)
                if baseline_rss and end_rss
                else None
            ),
            "peak_hwm": rss["end"].get("VmHWM"),
            "threads_end": rss["end"].get("Threads"),
            "fds_end": rss["end"].get("fds"),
            "samples": rss["samples"],
        },
        "replies": {
            "addressed_sent": len(asked),
            "reply_lines_received": replies_in_load,
            "addressed_answered_own": sum(1 for q in asked if q in answered),
            "addressed_covered": covered,
            "stray_answer_tags": observed.stray_tags,
            "replies_answering_no_new_line": len(observed.not_new),
            "replies_answering_no_new_line_samples": [
                timeline(observed, crowd, channel, text, at)
                for channel, text, at in observed.not_new[:5]
            ]
            if crowd
            else [],
            "latency_s": latency_figures(asked, answered),
            "latency_during_load_s": latency_figures(asked, answered, until=last_line_clock),
        },
        "quiet_probes": probe_figures(probes, observed, load_began, args.probe_timeout),
        "backlog_at_end": {
            **backlog_figures(asked, observed, side_channels, last_line_clock),
            "watched_s": round(watched_until - last_line_clock, 1),
            "went_quiet": went_quiet,
        },
        "freshness": freshness_figures(every_question, observed, max_age, max_age_from, log),
        "final_check": final,
        "log": log,
        "clients": {
            "disconnects": observed.disconnects,
            "server_errors": observed.server_errors,
            "error_numerics": dict(observed.numerics.most_common(10)),
        },
        "standin": standin.summary(),
        "bot_exit_code": bot_exit,
        "workdir": str(workdir),
        "bot_log": str(log_path),
    }


def latency_figures(
    asked: dict[int, tuple[str, float]], answered: dict[int, float], until: float | None = None
) -> dict[str, Any]:
    """Question sent to its first answer: p50, p95, max; only answers by `until` if given."""
    values = [
        answered[q] - sent
        for q, (_, sent) in asked.items()
        if q in answered and (until is None or answered[q] <= until)
    ]
    return {
        "count": len(values),
        "p50": rounded(percentile(values, 0.5)),
        "p95": rounded(percentile(values, 0.95)),
        "max": rounded(max(values, default=None)),
    }


def probe_figures(
    probes: list[Probe], observed: Observed, load_began: float, timeout: float
) -> dict[str, Any]:
    """Each quiet-channel probe's time to its answer (null past `timeout`), and the worst."""
    rows = []
    for probe in probes:
        answer = observed.answered.get(probe.question)
        sent = probe.sent_at
        took = answer - sent if answer is not None and sent is not None else None
        rows.append(
            {
                "channel": probe.member.channel,
                "at_fraction": probe.fraction,
                "sent_at_s": None if sent is None else round(sent - load_began, 1),
                "seconds": rounded(took) if took is not None and took <= timeout else None,
                "answered_after_timeout_s": rounded(took) if took and took > timeout else None,
            }
        )
    times = [row["seconds"] for row in rows if row["seconds"] is not None]
    worst = max(times, default=None)
    return {
        "target_s": QUIET_TARGET_S,
        "timeout_s": timeout,
        "probes": rows,
        "worst_s": worst,
        "timed_out": sum(
            1 for row in rows if row["sent_at_s"] is not None and row["seconds"] is None
        ),
        "met": bool(rows)
        and len(times) == len(rows)
        and worst is not None
        and worst <= QUIET_TARGET_S,
    }


def backlog_figures(
    asked: dict[int, tuple[str, float]], observed: Observed, side: set[str], last_line: float
) -> dict[str, Any]:
    """What the bot still sent in the load's channels after the last load line."""
    after = sorted(
        seen
        for (channel, _), seen in observed.reply_lines.items()
        if channel not in side and seen > last_line
    )
    return {
        "reply_lines": len(after),
        "answers": sum(1 for q in asked if observed.answered.get(q, -1.0) > last_line),
        "quiet_after_s": round(after[-1] - last_line, 1) if after else 0.0,
    }


def freshness_figures(
    asked: dict[int, tuple[str, float]],
    observed: Observed,
    max_age: float,
    max_age_from: str,
    log: dict[str, Any],
) -> dict[str, Any]:
    """Answers that arrived later than max_age after their question; the bot's drops."""
    ages = [observed.answered[q] - sent for q, (_, sent) in asked.items() if q in observed.answered]
    late_lines = 0
    for (channel, text), seen in observed.reply_lines.items():
        named = [asked.get(int(tag)) for tag in ANSWER_TAG.findall(text)]
        late_lines += any(q and q[0] == channel and seen - q[1] > max_age for q in named)
    stages = log["dropped_stale_by_stage"]
    return {
        "max_age_s": max_age,
        "max_age_from": max_age_from,
        "answers_later_than_max_age": sum(1 for age in ages if age > max_age),
        "reply_lines_later_than_max_age": late_lines,
        "oldest_answer_s": rounded(max(ages, default=None)),
        "dropped_stale": sum(stages.values()),
        "dropped_stale_by_stage": stages,
        "dropped_superseded": log["replies"]["reply_dropped_superseded"],
        "declined_backlog": log["declined_reasons"].get("backlog", 0),
    }


def timeline(observed: Observed, crowd: Crowd, channel: str, text: str, at: float) -> dict:
    """What happened in `channel` in the 8 s before a reply that answered no new line."""
    events = [
        (sent, f"q{question} from {crowd.asked_by.get(question)}")
        for question, (where, sent) in crowd.asked.items()
        if where == channel and at - 8.0 <= sent <= at
    ]
    events += [
        (seen, f"bot: {line}")
        for (where, line), seen in observed.reply_lines.items()
        if where == channel and at - 8.0 <= seen <= at
    ]
    return {
        "channel": channel,
        "reply": text,
        "at_s": round(at, 3),
        "before": [f"{round(t - at, 3):+} s {what}" for t, what in sorted(events)],
    }


def analyse_log(path: Path, run_bytes: int) -> dict[str, Any]:
    """Count the bot's JSON log lines by level and event, during the run and at shutdown."""
    parts: dict[str, dict[str, Counter[str]]] = {
        "run": {"error": Counter(), "warning": Counter(), "info": Counter()},
        "shutdown": {"error": Counter(), "warning": Counter(), "info": Counter()},
    }
    declined: Counter[str] = Counter()
    stale_stages: Counter[str] = Counter()
    samples: list[str] = []
    non_json: list[str] = []
    lines = 0
    offset = 0
    with path.open("rb") as file:
        for raw in file:
            part = "run" if offset < run_bytes else "shutdown"
            offset += len(raw)
            text = raw.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            lines += 1
            try:
                entry = json.loads(text)
                level = str(entry.get("level", "")).lower()
                event = str(entry.get("event", ""))
            except (ValueError, AttributeError):
                non_json.append(text[:300])
                continue
            level = "error" if level in ("critical", "exception") else level
            if level in parts[part]:
                parts[part][level][event] += 1
            if level == "error" and len(samples) < 5:
                samples.append(text[:500])
            if event == "reply_declined":
                declined[str(entry.get("reason"))] += 1
            elif event == "reply_dropped_stale":
                stale_stages[str(entry.get("stage"))] += 1
    info = parts["run"]["info"] + parts["shutdown"]["info"]
    warnings = parts["run"]["warning"] + parts["shutdown"]["warning"]
    connecting = info["connecting"]
    return {
        "lines": lines,
        "errors": {
            "count": sum(parts["run"]["error"].values()) + sum(parts["shutdown"]["error"].values()),
            "during_run": dict(parts["run"]["error"].most_common(10)),
            "at_shutdown": dict(parts["shutdown"]["error"].most_common(10)),
            "samples": samples,
        },
        "warnings": {
            "count": sum(warnings.values()),
            "during_run": dict(parts["run"]["warning"].most_common(10)),
            "at_shutdown": dict(parts["shutdown"]["warning"].most_common(10)),
        },
        "reconnects": max(0, connecting - 1),
        "connecting_events": connecting,
        "disconnected_events": warnings["disconnected"],
        "replies": {
            name: info[name] + warnings[name]
            for name in (
                "reply_requested",
                "reply_sent",
                "reply_empty",
                "reply_dropped_repeated",
                "reply_dropped_context_gone",
                "reply_dropped_queue_full",
                "reply_dropped_stale",
                "reply_dropped_superseded",
                "outbox_full_line_dropped",
                "jobs_cancelled",
            )
        },
        "declined_reasons": dict(declined),
        "dropped_stale_by_stage": dict(stale_stages),
        "non_json_lines": {"count": len(non_json), "samples": non_json[:5]},
    }


def latency_text(figures: dict[str, Any]) -> str:
    return (
        f"p50 {figures['p50']} s, p95 {figures['p95']} s, max {figures['max']} s "
        f"({figures['count']} answers)"
    )


def freshness_report(result: dict[str, Any]) -> list[str]:
    """The report's lines for issue 16: latency, drops, backlog, quiet channels, the bound."""
    replies = result["replies"]
    fresh = result["freshness"]
    backlog = result["backlog_at_end"]
    quiet = result["quiet_probes"]
    probes = ", ".join(
        f"{row['channel']} at {round(100 * row['at_fraction'])} %: {row['seconds']} s"
        for row in quiet["probes"]
    )
    return [
        f"latency, all: {latency_text(replies['latency_s'])}; answered during the load: "
        f"{latency_text(replies['latency_during_load_s'])}",
        f"dropped stale {fresh['dropped_stale']} {fresh['dropped_stale_by_stage']}, "
        f"superseded {fresh['dropped_superseded']}, declined for backlog "
        f"{fresh['declined_backlog']}",
        f"backlog at the end: {backlog['reply_lines']} reply lines ({backlog['answers']} "
        f"answers) after the last load line, quiet after {backlog['quiet_after_s']} s "
        f"(went quiet: {backlog['went_quiet']}, watched {backlog['watched_s']} s)",
        f"quiet channel under load: {probes or 'no probes'}; worst {quiet['worst_s']} s, "
        f"{quiet['timed_out']} timed out (target {quiet['target_s']} s: met {quiet['met']})",
        f"max_age {fresh['max_age_s']} s ({fresh['max_age_from']}): "
        f"{fresh['answers_later_than_max_age']} answers and "
        f"{fresh['reply_lines_later_than_max_age']} reply lines later than it; oldest answer "
        f"{fresh['oldest_answer_s']} s",
    ]


def report(result: dict[str, Any]) -> str:
    rss = result["rss_kib"]
    replies = result["replies"]
    log = result["log"]
    final = result["final_check"]
    load = result["load"]
    return "\n".join(
        [
            f"load: {load.get('lines_sent')} lines ({load.get('addressed', 0)} addressed) in "
            f"{load.get('seconds')} s, {load.get('parts', 0)} part/rejoin, "
            f"{load.get('nick_changes', 0)} nick changes; max schedule lag "
            f"{load.get('max_schedule_lag_s')} s",
            f"RSS: start {rss['start']} KiB, after {result['settings']['baseline_lines']} lines "
            f"{rss['after_baseline']} KiB, after load {rss['after_load']} KiB, end {rss['end']} "
            f"KiB: growth {rss['growth_pct']} %",
            f"log: {log['errors']['count']} errors {log['errors']['during_run']} "
            f"{log['errors']['at_shutdown']}; {log['warnings']['count']} warnings "
            f"{log['warnings']['during_run']} {log['warnings']['at_shutdown']}",
            f"reconnects: {log['reconnects']} (disconnected events: "
            f"{log['disconnected_events']}); client disconnects: "
            f"{len(result['clients']['disconnects'])}",
            f"replies: {replies['reply_lines_received']} reply lines for "
            f"{replies['addressed_sent']} addressed lines; {replies['addressed_answered_own']} "
            f"answered by their own reply, {replies['addressed_covered']} covered; declined "
            f"{log['declined_reasons']}",
            *freshness_report(result),
            f"still answers at the end: {final.get('answered')} ({final.get('seconds')} s)",
        ]
    )


def fractions(text: str) -> tuple[float, ...]:
    """--probe-at: comma-separated fractions of the load, each in (0, 1); "" for none."""
    values = tuple(float(part) for part in text.split(",") if part.strip())
    if any(not 0.0 < value < 1.0 for value in values):
        raise argparse.ArgumentTypeError(f"fractions must lie in (0, 1): {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=10_000, help="PRIVMSG lines in all")
    parser.add_argument("--channels", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=270.0, help="spread the lines over")
    parser.add_argument("--per-channel", type=int, default=2, help="client sockets per channel")
    parser.add_argument("--addressed", type=float, default=0.1, help="fraction addressed")
    parser.add_argument("--churn", type=float, default=0.03, help="part/nick events per line")
    parser.add_argument("--pacing", choices=("raised", "shipped"), default="raised")
    parser.add_argument("--stream", action="store_true", help="model.remote.stream = true")
    parser.add_argument("--baseline-lines", type=int, default=0, help="RSS baseline after")
    parser.add_argument("--final-timeout", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds for late replies")
    parser.add_argument(
        "--max-age", type=float, help="write [reply] max_age (default: not written, 60 s)"
    )
    parser.add_argument(
        "--probe-at", type=fractions, default=(0.25, 0.5, 0.75), help="quiet-channel probes"
    )
    parser.add_argument("--probe-timeout", type=float, default=30.0)
    parser.add_argument("--drain-timeout", type=float, default=120.0, help="watch the backlog")
    parser.add_argument("--quiet-gap", type=float, default=10.0, help="silence that ends it")
    parser.add_argument("--start-timeout", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--name", default="soak")
    args = parser.parse_args(argv)
    if args.lines < 1 or args.channels < 1 or args.seconds <= 0 or args.per_channel < 1:
        parser.error("--lines, --channels, --per-channel must be >= 1 and --seconds > 0")
    per_client = args.lines / args.seconds / (args.channels * args.per_channel)
    if per_client > 1.0:
        print(f"warning: {per_client:.2f} lines/s per client; ngIRCd delays above ~3/s")
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    compact = dict(result)
    compact["rss_kib"] = {k: v for k, v in result["rss_kib"].items() if k != "samples"}
    print(json.dumps(compact, indent=2))
    print(report(result))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
