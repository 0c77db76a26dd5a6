"""One network's part of the bot: builds its session, relay, control, gate, moderation and
state store around the engine and worker that every network shares, runs its IRC loop on a
thread of its own, and owns its operator-visible runtime state (persisted on change).

Everything here runs on the network's own loop thread, except `run` (the thread's body) and
what `IrcSession.call_soon` hands over."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from relaybot.bridge.asking import Asking
from relaybot.bridge.operator_state import OperatorState
from relaybot.bridge.relay import ModelInfo, Relay
from relaybot.bridge.state import RuntimeState
from relaybot.config.channel_settings import SettingValue
from relaybot.config.schema import Config, ConfigError, NetworkConfig, OperatorConfig
from relaybot.control.commands import format_duration
from relaybot.control.dispatch import Control
from relaybot.conversation.identity import ContextKey
from relaybot.conversation.instruct import configured_format
from relaybot.inference.engine import Engine, degradation, sampling_from
from relaybot.inference.served import ServedModels
from relaybot.inference.worker import Completion, InferenceWorker
from relaybot.irc.events import Origin
from relaybot.irc.session import IrcSession
from relaybot.irc.text import is_channel_name
from relaybot.log import get_logger
from relaybot.moderation import ModerationChain, build_chain
from relaybot.policy.gate import ReplyGate
from relaybot.policy.permissions import any_mask_matches
from relaybot.service.contexts import ContextSaver
from relaybot.service.metrics import NetworkMetrics
from relaybot.service.persistence import StateStore
from relaybot.service.readiness import HEARTBEAT_EVERY, NetworkReadiness
from relaybot.service.reload import plan_reload

log = get_logger(component="bot")

# The session's IRCv3 STS policies (relaybot.irc.sts), in the network's state directory.
STS_FILE = "sts.json"
# How much of a channel's persona `status` shows: enough to recognise it, on one line.
STATUS_PERSONA_CHARS = 30


def state_directory(config: Config) -> Path:
    if config.state.dir:
        return Path(config.state.dir)
    # systemd's StateDirectory= sets this; it may list several directories.
    systemd_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd_dir:
        return Path(systemd_dir)
    return Path.home() / ".local" / "state" / "relaybot"


class Network:
    """One network, on its own loop thread; `Bot` runs one per `[[networks]]` table."""

    def __init__(
        self,
        config: Config,
        net: NetworkConfig,
        engine: Engine,
        worker: InferenceWorker,
        *,
        job_ids: Iterator[int],
        moderation: ModerationChain | None = None,
        reload: Callable[[], str] | None = None,
        on_status: Callable[[], None] = lambda: None,
        heartbeat: float = HEARTBEAT_EVERY,
        metrics: NetworkMetrics | None = None,
    ) -> None:
        self.config = config  # the whole file, for what networks share (model, state)
        self.net = net
        self.engine = engine
        self.worker = worker
        self._reload = reload  # re-reads the file; `!relay reload` applies it to this network
        self.started = time.monotonic()
        # What `!relay model` chooses among: fixed with the engine, which a reload keeps.
        self.served = ServedModels.from_config(config.model, loaded=engine.description)
        self.store = StateStore(state_directory(config), net.name)
        self.operator_state = OperatorState(
            self.store.load_runtime(),
            fold=lambda name: self.relay.fold(name),
            persist=self._save_runtime,
        )
        self.session = IrcSession(
            net.irc,
            on_event=lambda event: self.relay.handle(event),
            on_forget=self._forgotten,
            sts_file=self.store.root / STS_FILE,  # STS policies, beside this network's state
            observer=metrics,
        )
        self.control = Control(self)
        self.gate = ReplyGate(net.policy)
        self.moderation = moderation if moderation is not None else build_chain(net.moderation)
        try:
            fmt = configured_format(config.model, getattr(engine, "tokenizer", None))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.relay = Relay(
            network=net.name,
            fmt=fmt,
            model=ModelInfo(engine.count_tokens, engine.context_window),
            reply=net.reply,
            params=sampling_from(config.model),
            jobs=worker,
            sender=self.session,
            gate=self.gate,
            moderation=self.moderation,
            max_concurrent=net.policy.max_concurrent,
            max_waiting=net.policy.max_waiting,
            ignore_bots=net.policy.ignore_bots,
            is_ignored=lambda origin: any_mask_matches(
                (*self.net.policy.ignore, *self.operator_state.ignores()),
                origin,
                self.relay.fold,
            ),
            commands=self.control,
            timers=self.session,
            operator_state=self.operator_state,
            clock=self.session.clock,  # the outbox's clock: reply deadlines are read on it
            job_ids=job_ids,
            observer=metrics,
        )
        self.asking = Asking(
            network=net.name,
            fmt=fmt,
            count_tokens=engine.count_tokens,
            context_window=engine.context_window,
            params=lambda: self.relay.params,
            submit=worker.submit,
            new_job_id=self.relay.new_job_id,
            sender=self.session,
            # Through `self`, so that a reload's new chain and limits apply here too.
            moderation=lambda: self.moderation,
            max_lines=lambda: self.net.reply.max_lines,
            model_for=self.relay.model_for,
        )
        self.contexts = ContextSaver(
            self.store, self.relay, self.session, lambda: self.config.state.flush_interval
        )
        self._restore()
        self.contexts.start()
        self.readiness = NetworkReadiness(
            self.session, net.irc, on_change=on_status, heartbeat=heartbeat
        )

    # --- start-up state ---------------------------------------------------------------------

    def _key(self, name: str) -> ContextKey:
        return self.relay.key(name)

    def _restore(self) -> None:
        state = self.operator_state.snapshot
        for name in state.parted:
            self.session.channels.pop(self.session._fold(name), None)
        for name in state.joined:
            if is_channel_name(name):
                self.session.join(name)
        dropped = self.operator_state.keep_models(self.served.allowed)
        if dropped:
            # Chosen before the allow-list (or the engine) changed: asking for them now would
            # ask for what the config no longer offers.
            log.warning("model_choices_dropped", network=self.net.name, dropped=dropped)
        contexts = self.contexts.restore()
        for name in state.casts:
            previous = self.relay.saved.get(self._key(name))
            for turn in previous.header if previous else ():
                if turn.content.startswith("/whois "):
                    self.operator_state.restore_caster(name, turn.role)
        if state != RuntimeState() or contexts:
            log.info(
                "state_restored",
                joined=list(state.joined),
                parted=list(state.parted),
                mutes=len(state.mutes),
                casts=len(state.casts),
                settings=len(state.settings),
                ignores=len(state.ignores),
                contexts=contexts,
            )

    def _save_runtime(self, state: RuntimeState) -> None:
        try:
            self.store.save_runtime(state)
        except (OSError, ValueError) as exc:
            log.error("state_save_failed", error=str(exc))

    # --- operator actions (relaybot.control.actions.OperatorActions; on the reactor thread) ---

    @property
    def operators(self) -> OperatorConfig:
        return self.net.operators

    @property
    def network(self) -> str:
        return self.net.name

    @property
    def context_tokens(self) -> int:
        return self.config.model.context_tokens

    @property
    def answers_questions(self) -> bool:
        return self.config.model.qa

    def fold(self, name: str) -> str:
        return self.relay.fold(name)

    def status_of(self, channel: str, nick: str) -> str:
        return self.relay.status_of(channel, nick)

    def send_notice(self, nick: str, text: str) -> None:
        self.session.send_notice(nick, text)

    def retry(self, channel: str) -> bool:
        return self.relay.retry(channel)

    def more(self, where: str, origin: Origin, msgid: str | None, *, privately: bool) -> None:
        self.relay.more(where, origin, msgid, privately=privately)

    def ask(self, channel: str, asker: str, question: str, reply_to: str) -> str | None:
        """Ask the model about `channel`'s log; a message for the asker if it cannot be done."""
        transcript = self.relay.transcript(channel)
        if transcript is None:
            return f"I am not in {channel}"
        return self.asking.ask(
            key=self._key(channel),
            channel=transcript.name,
            turns=transcript.turns,
            asker=asker,
            question=question,
            reply_to=reply_to,
        )

    def join_channel(self, name: str, key: str | None = None) -> None:
        self.operator_state.join(name)
        self.session.join(name, key)

    def part_channel(self, name: str, reason: str) -> None:
        fold = self.relay.fold
        configured = any(fold(c.name) == fold(name) for c in self.net.irc.channels)
        self.operator_state.part(name, configured=configured)
        self.session.part(name, reason)
        self.contexts.drop(name)
        self.readiness.progress()

    def _forgotten(self, name: str) -> None:
        """The session gave a channel up (kicked, banned...): forget it for good."""
        self.relay.forget(name)
        self.operator_state.forget_joined(name)
        self.contexts.drop(name)
        self.readiness.progress()  # a refused channel no longer holds up READY=1

    def mute(self, channel: str, seconds: float) -> None:
        key = self._key(channel)
        self.operator_state.mute(key[1], seconds)
        self.relay.cancel(key)
        self.session.drop_queued(channel)

    def unmute(self, channel: str) -> None:
        self.operator_state.unmute(self._key(channel)[1])

    def cast(self, channel: str, caster: str, bio: str | None) -> None:
        self.relay.set_cast(channel, caster, bio)

    def reset(self, channel: str) -> bool:
        key = self._key(channel)
        transcript = self.relay.transcripts.get(key)
        if transcript is None:
            return False
        self.relay.cancel(key)
        transcript.clear()
        self.contexts.flush()
        return True

    def set_setting(self, channel: str, name: str, value: SettingValue | None) -> None:
        self.operator_state.set_setting(self._key(channel)[1], name, value)

    @property
    def served_models(self) -> ServedModels:
        return self.served

    def _model_key(self, channel: str | None) -> str | None:
        return None if channel is None else self._key(channel)[1]

    def model_for(self, channel: str | None) -> str | None:
        if channel is None:
            return self.operator_state.chosen_model(None)
        return self.operator_state.model_for(self._key(channel)[1])

    def set_model(self, channel: str | None, name: str | None) -> None:
        self.operator_state.set_model(self._model_key(channel), name)

    def ignore(self, mask: str) -> None:
        self.operator_state.ignore(mask)

    def unignore(self, mask: str) -> bool:
        return self.operator_state.unignore(mask)

    def export(self, channel: str) -> Path | None:
        transcript = self.relay.transcript(channel)
        if transcript is None:
            return None
        return self.store.export_jsonl(
            transcript.name, transcript.header, transcript.turns, transcript.topic
        )

    def status_line(self) -> str:
        now = time.time()
        replies_10m = sum(1 for t in self.relay.speaking.reply_times if now - t <= 600)
        replies_1h = sum(1 for t in self.relay.speaking.reply_times if now - t <= 3600)
        channels = []
        for name in self.session.joined_channels():
            notes = self._channel_notes(self._key(name)[1], now)
            channels.append(f"{name} ({'; '.join(notes)})" if notes else name)
        uptime = format_duration(time.monotonic() - self.started)
        degraded = degradation(self.engine)
        network_model = self.operator_state.chosen_model(None)
        chosen = f", asking for {network_model}" if network_model is not None else ""
        return (
            (f"WARNING: {degraded}; " if degraded else "")
            + f"network {self.net.name}; model {self.engine.description}{chosen};"
            f" {self._queue_status()};"
            f" replies {replies_10m} in 10m, {replies_1h} in 1h; {self._backlog_status()};"
            f" up {uptime}; channels: {', '.join(channels) or 'none'}"
        )

    def _channel_notes(self, channel: str, now: float) -> list[str]:
        """What `status` says about one channel: its mute, the model chosen for it, and its
        persona (shortened)."""
        notes = []
        until = self.operator_state.muted_until(channel)
        if until is not None:
            left = "" if math.isinf(until) else f" {format_duration(until - now)}"
            notes.append(f"muted{left}")
        model = self.operator_state.chosen_model(channel)
        if model is not None:
            notes.append(f"model {model}")
        cast = self.operator_state.cast(channel)
        if cast is not None:
            bio = (
                cast.bio
                if len(cast.bio) <= STATUS_PERSONA_CHARS
                else (f"{cast.bio[: STATUS_PERSONA_CHARS - 1].rstrip()}…")
            )
            notes.append(f"persona: {bio}")
        return notes

    def _queue_status(self) -> str:
        """The shared engine's queue, then this network's own generations and waiters."""
        mine = f"{self.relay.in_flight()} generating, {self.relay.waiting()} waiting"
        others = len(self.config.networks) - 1
        if not others:
            return f"queue {self.worker.pending} pending, {mine}"
        return f"queue {self.worker.pending} pending for all {others + 1} networks; here {mine}"

    def _backlog_status(self) -> str:
        """What waits to go out, how old the oldest unanswered request is, and what was
        dropped for freshness (`[reply] max_age`)."""
        requests = [self.relay.scheduler.oldest_request(), self.session.outbox.oldest_request()]
        oldest = min((t for t in requests if t is not None), default=None)
        waiting = (
            f", oldest reply waiting {self.session.clock() - oldest:.0f}s"
            if oldest is not None
            else ""
        )
        dropped = self.relay.freshness.dropped
        return (
            f"outbox {len(self.session.outbox)} lines{waiting};"
            f" dropped {dropped['stale']} stale, {dropped['superseded']} superseded,"
            f" {dropped['backlog']} for backlog"
        )

    def reload(self) -> str:
        """`!relay reload`: re-read the config file and apply this network's part of it."""
        if self._reload is None:
            return "no config file to reload"
        return self._reload()

    def apply(self, new: Config) -> str:
        """Apply what can change at runtime of this network's table in `new` (which has
        been loaded and checked); returns what was done."""
        try:
            net = new.network(self.net.name)
        except KeyError:
            return f"{self.net.name} is no longer in the file; restart to leave it"
        try:
            moderation = build_chain(net.moderation)
        except ConfigError as exc:
            log.error("reload_failed", network=self.net.name, error=str(exc))
            return f"reload failed, still on the old config: {exc}"
        plan = plan_reload(
            self.config,
            new,
            net.name,
            operator_joined=self.operator_state.joined(),
            operator_parted=self.operator_state.parted(),
            fold=self.relay.fold,
        )
        self.config, self.net = new, net
        old_moderation, self.moderation = self.moderation, moderation
        self.relay.moderation = moderation
        old_moderation.close()
        self.relay.reply = net.reply
        if not plan.needs_restart:
            self.relay.params = sampling_from(new.model)
        self.relay.scheduler.max_concurrent = net.policy.max_concurrent
        self.relay.scheduler.max_waiting = net.policy.max_waiting
        self.relay.ignore_bots = net.policy.ignore_bots
        self.gate.configure(net.policy)
        for channel in plan.join:
            self.session.join(channel.name, channel.key.value if channel.key else None)
        for name in plan.part:
            self.session.part(name, "removed from the config")
            self.contexts.drop(name)
        log.info(
            "config_reloaded",
            network=net.name,
            joined=[channel.name for channel in plan.join],
            parted=list(plan.part),
            needs_restart=list(plan.needs_restart),
        )
        self.readiness.progress()
        return plan.summary()

    # --- running (the network's loop thread) ------------------------------------------------

    def dispatch(self, completion: Completion) -> None:
        """A completion for this network, on its loop thread."""
        if self.asking.owns(completion.job.job_id):
            self.asking.on_completion(completion)
        else:
            self.relay.on_completion(completion)

    def run(self) -> None:
        """The network's loop: connect, serve until stopped, then save its contexts."""
        try:
            self.session.run()
        finally:
            self.moderation.close()
            written = self.contexts.flush()
            log.info("contexts_saved", network=self.net.name, count=written)

    def stop(self, message: str = "relaybot shutting down") -> None:
        """Thread-safe and signal-safe."""
        self.session.stop(message)
