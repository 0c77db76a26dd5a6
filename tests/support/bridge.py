"""Test doubles for the bridge: a recording IRC sender, a recording job queue, recording
operator commands, scripted moderation, clocks, and a `Relay` built from them (`make_relay`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from relaybot.bridge.relay import ModelInfo, Relay
from relaybot.config.schema import PolicyConfig, ReplyConfig
from relaybot.conversation.formats import RelayFormat, Turn
from relaybot.conversation.identity import ContextKey
from relaybot.inference.engine import SamplingParams
from relaybot.inference.worker import Completion, Job
from relaybot.irc.events import Join, Message, Names, Origin
from relaybot.irc.outbox import Batch
from relaybot.irc.text import privmsg_payload_budget
from relaybot.moderation import ModerationContext, Verdict
from relaybot.policy.gate import ReplyGate

NET = "testnet"
BOT = Origin("relaybot", "~relay", "bot.example")
ALICE = Origin("alice", "al", "a.example")
BOB = Origin("bob", "b", "b.example")
CAROL = Origin("carol", "c", "c.example")
OTHERBOT = Origin("otherbot", "ob", "o.example", bot=True)


@dataclass
class Sent:
    target: str
    text: str
    action: bool


@dataclass
class FakeSender:
    """The IRC session as the bridge sees it. Lines are written at once (`deliver_now`) or when
    `flush` is called; `unconfirmed` holds each line's on_lost."""

    nick: str = "relaybot"
    casemapping: str = "rfc1459"
    deliver_now: bool = True
    sent: list[Sent] = field(default_factory=list)
    pending: list[Callable[[], None]] = field(default_factory=list)
    unconfirmed: list[Callable[[], object]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    batches: list[Batch | None] = field(default_factory=list)  # each sent line's batch
    delays: dict[str, float] = field(default_factory=dict)  # send_delay by target; else 0
    threads: list[str | None] = field(default_factory=list)  # each line's in_reply_to
    typed: list[tuple[str, bool]] = field(default_factory=list)  # typing notices: target, active
    notices: list[tuple[str, str]] = field(default_factory=list)  # NOTICEs: target, text

    def payload_budget(self, target: str) -> int:
        return privmsg_payload_budget(self.nick, target, BOT.user, BOT.host)

    def send_message(
        self,
        target: str,
        text: str,
        *,
        action: bool = False,
        on_sent: Callable[[], None] | None = None,
        on_lost: Callable[[], object] | None = None,
        batch: Batch | None = None,
        in_reply_to: str | None = None,
    ) -> None:
        self.sent.append(Sent(target, text, action))
        self.threads.append(in_reply_to)
        self.batches.append(batch)
        if on_lost is not None:
            self.unconfirmed.append(on_lost)
        if on_sent is not None:
            if self.deliver_now:
                on_sent()
            else:
                self.pending.append(on_sent)

    def flush(self) -> None:
        callbacks, self.pending = self.pending, []
        for callback in callbacks:
            callback()

    def drop_queued(self, target: str) -> int:
        self.dropped.append(target)
        return 0

    def send_multiline(self, target: str, parts: Any, **kwargs: Any) -> bool:
        return False  # as on a server without draft/multiline

    def send_notice(self, target: str, text: str) -> None:
        self.notices.append((target, text))

    def typing(self, target: str, *, active: bool) -> None:
        self.typed.append((target, active))

    def send_delay(self, target: str) -> float:
        return self.delays.get(target, 0.0)


@dataclass
class RecordingJobs:
    """The inference worker as the bridge uses it (scheduling.JobQueue)."""

    accept: bool = True
    jobs: list[Job] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    forgotten: list[ContextKey] = field(default_factory=list)

    def submit(self, job: Job) -> bool:
        if self.accept:
            self.jobs.append(job)
        return self.accept

    def cancel(self, job_id: int) -> None:
        self.cancelled.append(job_id)

    def forget(self, key: ContextKey) -> None:
        self.forgotten.append(key)


@dataclass
class RecordingCommands:
    """Operator commands: lines starting with the prefix are recorded, not handled."""

    prefix: str = "!relay"
    seen: list[tuple[Message, str | None]] = field(default_factory=list)

    def is_command(self, text: str) -> bool:
        return text.startswith(self.prefix)

    def handle(self, message: Message, channel: str | None) -> None:
        self.seen.append((message, channel))


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeModeration:
    """Rules by substring: block or replace, on input or output; records what it saw."""

    def __init__(self) -> None:
        self.input_rules: dict[str, Verdict] = {}
        self.output_rules: dict[str, Verdict] = {}
        self.inputs: list[tuple[str, ModerationContext]] = []
        self.outputs: list[tuple[str, ModerationContext]] = []

    @staticmethod
    def _apply(rules: dict[str, Verdict], text: str) -> Verdict:
        for needle, verdict in rules.items():
            if needle in text:
                return verdict
        return Verdict.allow()

    def check_input(self, text: str, context: ModerationContext) -> Verdict:
        self.inputs.append((text, context))
        return self._apply(self.input_rules, text)

    def check_output(self, text: str, context: ModerationContext) -> Verdict:
        self.outputs.append((text, context))
        return self._apply(self.output_rules, text)


class TimersFrom:
    """scheduling.Timers that hands each timer to `on_schedule(delay, fn)`."""

    def __init__(self, on_schedule: Callable[[float, Callable[[], None]], object]) -> None:
        self.on_schedule = on_schedule

    def schedule(self, delay: float, fn: Callable[[], None]) -> None:
        self.on_schedule(delay, fn)


def cooldown_timers(on_schedule: Callable[[float, Callable[[], None]], object]) -> TimersFrom:
    """Timers that record every timer but the typing notices' refreshes (bridge.typing), for
    tests about the scheduler's own timers."""

    def schedule(delay: float, fn: Callable[[], None]) -> None:
        if "Typing" not in getattr(fn, "__qualname__", ""):
            on_schedule(delay, fn)

    return TimersFrom(schedule)


def words(text: str) -> int:
    return len(text.split())


@dataclass
class Harness:
    relay: Relay
    sender: FakeSender
    queue: RecordingJobs
    commands: RecordingCommands
    clock: Clock
    wall: Clock

    @property
    def jobs(self) -> list[Job]:
        return self.queue.jobs

    def say(self, origin: Origin, target: str, text: str) -> None:
        self.relay.handle(Message(origin, target, text))

    def join(self, channel: str, *others: str) -> None:
        self.relay.handle(Join(BOT, channel))
        self.relay.handle(Names(channel, ("relaybot", *others)))

    def complete(
        self, job: Job, text: str | None, error: str | None = None, *, cut: bool = False
    ) -> None:
        """`cut`: the engine says the model was still writing when its token budget ran out."""
        self.relay.on_completion(Completion(job, text, error, 0.01, 1, cut))

    def turns(self, name: str) -> list[Turn]:
        transcript = self.relay.transcript(name)
        assert transcript is not None, f"no context for {name}"
        return transcript.turns

    def prompt(self, name: str) -> list[Turn]:
        transcript = self.relay.transcript(name)
        assert transcript is not None, f"no context for {name}"
        return transcript.turns_for(self.sender.nick)

    def texts(self) -> list[str]:
        return [sent.text for sent in self.sender.sent]


def make_relay(
    *,
    reply: ReplyConfig | None = None,
    params: SamplingParams | None = None,
    random_value: float = 0.99,
    context_window: int = 2048,
    policy: PolicyConfig | None = None,
    moderation: FakeModeration | None = None,
    commands: bool = False,
    accept: bool = True,
    **relay_args: Any,
) -> Harness:
    """A Relay on recording doubles; `commands` routes `!relay ...` lines to `harness.commands`,
    `policy` adds a reply gate on `harness.clock`."""
    sender = FakeSender()
    queue = RecordingJobs(accept=accept)
    recorded = RecordingCommands()
    clock, wall = Clock(), Clock()
    relay = Relay(
        network=NET,
        fmt=RelayFormat(),
        model=ModelInfo(count_tokens=words, context_window=context_window),
        reply=reply or ReplyConfig(),
        params=params or SamplingParams(),
        jobs=queue,
        sender=sender,
        random=lambda: random_value,
        gate=ReplyGate(policy, clock) if policy is not None else None,
        moderation=moderation,
        wall_clock=wall,
        commands=recorded if commands else None,
        clock=clock,
        **relay_args,
    )
    return Harness(relay, sender, queue, recorded, clock, wall)
