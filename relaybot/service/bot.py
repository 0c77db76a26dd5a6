"""Assembly: builds the engine, worker, relay, session, control and state store in order,
runs them together, and owns the operator-visible runtime state (persisted on change)."""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType

from relaybot.bridge.asking import Asking
from relaybot.bridge.operator_state import OperatorState
from relaybot.bridge.relay import ModelInfo, Relay
from relaybot.bridge.state import RuntimeState
from relaybot.config.channel_settings import SettingValue
from relaybot.config.loader import load_config
from relaybot.config.schema import Config, ConfigError, OperatorConfig
from relaybot.control.commands import format_duration
from relaybot.control.dispatch import Control
from relaybot.conversation.identity import ContextKey
from relaybot.conversation.instruct import configured_format
from relaybot.inference.engine import Engine, degradation, sampling_from
from relaybot.inference.worker import Completion, InferenceWorker
from relaybot.irc.events import Origin
from relaybot.irc.session import IrcSession
from relaybot.irc.text import is_channel_name
from relaybot.log import get_logger
from relaybot.moderation import ModerationChain, build_chain
from relaybot.policy.gate import ReplyGate
from relaybot.policy.permissions import any_mask_matches
from relaybot.service.contexts import ContextSaver
from relaybot.service.persistence import StateStore
from relaybot.service.readiness import Readiness
from relaybot.service.reload import plan_reload
from relaybot.service.systemd import Notifier

log = get_logger(component="bot")


def state_directory(config: Config) -> Path:
    if config.state.dir:
        return Path(config.state.dir)
    # systemd's StateDirectory= sets this; it may list several directories.
    systemd_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd_dir:
        return Path(systemd_dir)
    return Path.home() / ".local" / "state" / "relaybot"


class Bot:
    def __init__(
        self,
        config: Config,
        engine: Engine,
        *,
        config_path: Path | None = None,
        moderation: ModerationChain | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.engine = engine
        self.started = time.monotonic()
        self.store = StateStore(state_directory(config), config.irc.network)
        self.operator_state = OperatorState(
            self.store.load_runtime(),
            fold=lambda name: self.relay.fold(name),
            persist=self._save_runtime,
        )
        self.session = IrcSession(
            config.irc,
            on_event=lambda event: self.relay.handle(event),
            on_forget=self._forgotten,
        )
        self.worker = InferenceWorker(
            engine,
            self._completed,
            max_batch=config.model.max_batch,
            max_pending=max(config.policy.max_concurrent, 1) + 8,
        )
        self.control = Control(self)
        self.gate = ReplyGate(config.policy)
        self.moderation = moderation if moderation is not None else build_chain(config.moderation)
        try:
            fmt = configured_format(config.model, getattr(engine, "tokenizer", None))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.relay = Relay(
            network=config.irc.network,
            fmt=fmt,
            model=ModelInfo(engine.count_tokens, engine.context_window),
            reply=config.reply,
            params=sampling_from(config.model),
            jobs=self.worker,
            sender=self.session,
            gate=self.gate,
            moderation=self.moderation,
            max_concurrent=config.policy.max_concurrent,
            max_waiting=config.policy.max_waiting,
            ignore_bots=config.policy.ignore_bots,
            is_ignored=lambda origin: any_mask_matches(
                (*self.config.policy.ignore, *self.operator_state.ignores()),
                origin,
                self.relay.fold,
            ),
            commands=self.control,
            timers=self.session,
            operator_state=self.operator_state,
            clock=self.session.clock,  # the outbox's clock: reply deadlines are read on it
        )
        self.asking = Asking(
            network=config.irc.network,
            fmt=fmt,
            count_tokens=engine.count_tokens,
            context_window=engine.context_window,
            params=lambda: self.relay.params,
            submit=self.worker.submit,
            new_job_id=self.relay.new_job_id,
            sender=self.session,
            # Through `self`, so that a reload's new chain and limits apply here too.
            moderation=lambda: self.moderation,
            max_lines=lambda: self.config.reply.max_lines,
        )
        self.contexts = ContextSaver(
            self.store, self.relay, self.session, lambda: self.config.state.flush_interval
        )
        self._restore()
        self.contexts.start()
        self.readiness = Readiness(
            self.session,
            Notifier.from_environment(),
            config.irc,
            degradation=lambda: degradation(self.engine),
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
        return self.config.operators

    @property
    def network(self) -> str:
        return self.config.irc.network

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
        configured = any(fold(c.name) == fold(name) for c in self.config.irc.channels)
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
            until = self.operator_state.muted_until(self._key(name)[1])
            if until is not None:
                left = "" if math.isinf(until) else f" {format_duration(until - now)}"
                channels.append(f"{name} (muted{left})")
            else:
                channels.append(name)
        uptime = format_duration(time.monotonic() - self.started)
        degraded = degradation(self.engine)
        return (
            (f"WARNING: {degraded}; " if degraded else "")
            + f"model {self.engine.description}; queue {self.worker.pending} pending,"
            f" {self.relay.in_flight()} generating, {self.relay.waiting()} waiting;"
            f" replies {replies_10m} in 10m, {replies_1h} in 1h; {self._backlog_status()};"
            f" up {uptime}; channels: {', '.join(channels) or 'none'}"
        )

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
        """Re-read the config file and apply what can change at runtime."""
        if self.config_path is None:
            return "no config file to reload"
        try:
            new = load_config(self.config_path)
            moderation = build_chain(new.moderation)
        except ConfigError as exc:
            log.error("reload_failed", error=str(exc))
            return f"reload failed, still on the old config: {exc}"
        plan = plan_reload(
            self.config,
            new,
            operator_joined=self.operator_state.joined(),
            operator_parted=self.operator_state.parted(),
            fold=self.relay.fold,
        )
        self.config = new
        old_moderation, self.moderation = self.moderation, moderation
        self.relay.moderation = moderation
        old_moderation.close()
        self.relay.reply = new.reply
        if not plan.needs_restart:
            self.relay.params = sampling_from(new.model)
        self.relay.scheduler.max_concurrent = new.policy.max_concurrent
        self.relay.scheduler.max_waiting = new.policy.max_waiting
        self.relay.ignore_bots = new.policy.ignore_bots
        self.gate.configure(new.policy)
        for channel in plan.join:
            self.session.join(channel.name, channel.key.value if channel.key else None)
        for name in plan.part:
            self.session.part(name, "removed from the config")
            self.contexts.drop(name)
        log.info(
            "config_reloaded",
            joined=[channel.name for channel in plan.join],
            parted=list(plan.part),
            needs_restart=list(plan.needs_restart),
        )
        return plan.summary()

    def _reload_notified(self) -> None:
        self.readiness.reloading()
        try:
            log.info("reload", result=self.reload())
        finally:
            self.readiness.reloaded()

    # --- running ----------------------------------------------------------------------------

    def _completed(self, completion: Completion) -> None:
        # Called on the inference thread: hand over to the reactor thread, touch nothing.
        self.session.call_soon(lambda: self._dispatch(completion))

    def _dispatch(self, completion: Completion) -> None:
        if self.asking.owns(completion.job.job_id):
            self.asking.on_completion(completion)
        else:
            self.relay.on_completion(completion)

    def run(self, *, install_signal_handlers: bool = True) -> None:
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._on_signal)
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGHUP, self._on_hangup)
        self.worker.start()
        try:
            self.session.run()
        finally:
            self.readiness.stopping()
            self.worker.stop(timeout=10.0)
            self.moderation.close()
            written = self.contexts.flush()
            log.info("contexts_saved", count=written)

    def stop(self) -> None:
        self.session.stop()

    # A signal handler runs between two bytecodes of the main thread, which may be holding
    # any lock just then (the log writer's, for one: logging from the handler deadlocked the
    # bot when SIGTERM arrived mid-log line). So handlers only hand the work to the loop.

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self.session.call_soon(lambda: self._stop_for_signal(name))

    def _stop_for_signal(self, name: str) -> None:
        log.info("signal_received", signal=name)
        self.readiness.stopping()
        self.session.stop()

    def _on_hangup(self, signum: int, frame: FrameType | None) -> None:
        self.session.call_soon(self._hangup)

    def _hangup(self) -> None:
        log.info("signal_received", signal="SIGHUP")
        self._reload_notified()
