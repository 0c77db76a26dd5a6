"""The one module that knows the others: IRC events in, jobs to the worker, replies out.

Runs on the reactor thread only. It owns the per-conversation transcripts, channel
membership (to route QUIT and NICK), and which conversations have a reply in flight.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import random as random_module
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from relaybot.bridge.operator_state import OperatorState
from relaybot.bridge.state import SavedContext
from relaybot.config.channel_settings import CHANNEL_SETTINGS, ChannelSettings
from relaybot.config.schema import ReplyConfig
from relaybot.conversation.formats import PromptFormat, Turn
from relaybot.conversation.transcript import (
    QUERY_BOT_ROLE,
    QUERY_PEER_ROLE,
    SYSTEM,
    ContextKey,
    TokenCounter,
    Transcript,
    bot_join_turns,
    cast_turns,
    channel_event_turns,
)
from relaybot.inference.engine import GenerationRequest, SamplingParams
from relaybot.inference.worker import Completion, Job
from relaybot.irc.events import (
    Action,
    Invite,
    IrcEvent,
    Join,
    Kick,
    Message,
    Names,
    NickChange,
    Origin,
    Part,
    Quit,
    StatusChange,
    Topic,
)
from relaybot.irc.text import casefold, is_channel_name, reply_lines, safe_line
from relaybot.log import get_logger
from relaybot.moderation import Decision, ModerationContext, Verdict
from relaybot.policy.gate import ReplyGate, ReplyPolicy

log = get_logger(component="relay")
_STATUS_PREFIXES = "~&@%+"


class Sender(Protocol):
    """What the relay needs from the IRC session."""

    @property
    def nick(self) -> str: ...

    @property
    def casemapping(self) -> str: ...

    def payload_budget(self, target: str) -> int: ...

    def send_message(
        self,
        target: str,
        text: str,
        *,
        action: bool = False,
        on_sent: Callable[[], None] | None = None,
        on_lost: Callable[[], object] | None = None,
    ) -> None: ...

    def drop_queued(self, target: str) -> int: ...


class Moderation(Protocol):
    def check_input(self, text: str, context: ModerationContext) -> Verdict: ...

    def check_output(self, text: str, context: ModerationContext) -> Verdict: ...


@dataclass(frozen=True, slots=True)
class _Wanted:
    reply_to: str
    speaker: str
    asker: str
    gated: bool  # False for an operator's retry, which skips budgets


@dataclass(frozen=True, slots=True)
class ModelInfo:
    count_tokens: TokenCounter
    context_window: int


class Relay:
    def __init__(
        self,
        *,
        network: str,
        fmt: PromptFormat,
        model: ModelInfo,
        reply: ReplyConfig,
        params: SamplingParams,
        submit: Callable[[Job], bool],
        sender: Sender,
        random: Callable[[], float] = random_module.random,
        gate: ReplyGate | None = None,
        moderation: Moderation | None = None,
        max_concurrent: int = 1_000_000,
        max_waiting: int = 64,
        ignore_bots: bool = True,
        is_ignored: Callable[[Origin], bool] = lambda origin: False,
        is_command: Callable[[str], bool] = lambda text: False,
        on_command: Callable[[Message, str | None], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
        schedule: Callable[[float, Callable[[], None]], None] | None = None,
        max_queries: int = 1000,
        cancel_job: Callable[[int], None] = lambda job_id: None,
        forget_cached: Callable[[ContextKey], None] = lambda key: None,
        operator_state: OperatorState | None = None,
    ) -> None:
        self.network = network
        self.fmt = fmt
        self.model = model
        self.reply = reply
        self.params = params
        self.submit = submit
        self.sender = sender
        self.random = random
        self.gate = gate
        self.moderation = moderation
        self.max_concurrent = max_concurrent
        self.max_waiting = max_waiting
        self.ignore_bots = ignore_bots
        self.is_ignored = is_ignored
        self.is_command = is_command
        self.on_command = on_command
        self.wall_clock = wall_clock
        self.schedule = schedule
        self.max_queries = max_queries
        self.cancel_job = cancel_job
        self.forget_cached = forget_cached
        # Conversations waiting out a cooldown, each with the token of its one live timer; a
        # reply that starts there by any path consumes the entry, and a timer whose token is
        # no longer there has nothing left to answer.
        self._deferred: dict[ContextKey, int] = {}
        self._deferral_tokens = itertools.count(1)
        self.transcripts: dict[ContextKey, Transcript] = {}
        # Channel members: casefolded nick -> status prefixes ("@", "+", "" ...).
        self.members: dict[ContextKey, dict[str, str]] = {}
        # Mutes, personas and settings: read here, changed by operators, persisted by the bot.
        self.operator_state = operator_state or OperatorState(
            fold=lambda name: self.fold(name), wall_clock=wall_clock
        )
        self.saved: dict[ContextKey, SavedContext] = {}  # restored when the bot joins
        # The one job in flight per conversation, and where each job's reply belongs now
        # (a query follows its peer across nick changes; a forgotten context has no entry).
        self._in_flight: dict[ContextKey, int] = {}
        self._job_keys: dict[int, ContextKey] = {}
        self._wanted_again: dict[ContextKey, _Wanted] = {}
        # Conversations waiting for a generation slot, oldest first; one entry each, so the
        # newest request of a conversation replaces its older one.
        self._waiting: OrderedDict[ContextKey, _Wanted] = OrderedDict()
        self._job_ids = itertools.count(1)
        self._recent_replies: dict[ContextKey, deque[str]] = {}
        self._retrying: set[ContextKey] = set()  # the next reply there may repeat the last
        self.reply_times: deque[float] = deque(maxlen=10_000)

    # --- keys and contexts --------------------------------------------------------------

    def fold(self, name: str) -> str:
        return casefold(name, self.sender.casemapping)

    def key(self, name: str) -> ContextKey:
        return (self.network, self.fold(name))

    def _is_me(self, nick: str) -> bool:
        return self.fold(nick) == self.fold(self.sender.nick)

    def _new_transcript(self, name: str) -> Transcript:
        return Transcript(
            name=name,
            count_tokens=self.model.count_tokens,
            budget=self.model.context_window - self.params.max_new_tokens,
            turn_overhead=self.fmt.turn_overhead(),
        )

    def transcript(self, name: str) -> Transcript | None:
        return self.transcripts.get(self.key(name))

    def forget(self, name: str) -> None:
        key = self.key(name)
        self.transcripts.pop(key, None)
        self.members.pop(key, None)
        self.cancel(key)
        self._recent_replies.pop(key, None)
        if self.gate is not None:
            self.gate.forget(self._conversation(key))

    def cancel(self, key: ContextKey) -> None:
        """Drop what is pending for a conversation: waiting requests, a reply in flight, and
        the engine's cached prefix (its context was reset, parted or muted)."""
        self.forget_cached(key)
        self._wanted_again.pop(key, None)
        self._waiting.pop(key, None)
        self._deferred.pop(key, None)
        job_id = self._in_flight.pop(key, None)
        if job_id is not None:
            self._job_keys.pop(job_id, None)
            self.cancel_job(job_id)  # skipped if queued, stopped if decoding; reply dropped
            self._start_waiting()

    @staticmethod
    def _conversation(key: ContextKey) -> str:
        return f"{key[0]}\0{key[1]}"

    def status_of(self, channel: str, nick: str) -> str:
        return self.members.get(self.key(channel), {}).get(self.fold(nick), "")

    def is_muted(self, key: ContextKey) -> bool:
        return self.operator_state.is_muted(key[1])

    def settings_for(self, key: ContextKey) -> ChannelSettings:
        return self.operator_state.settings(key[1])

    def _header(self, key: ContextKey, channel: str) -> list[Turn]:
        turns = bot_join_turns(self.sender.nick, channel)
        cast = self.operator_state.cast(key[1])
        if cast is not None:
            turns += cast_turns(cast.caster, self.sender.nick, cast.bio)
        return turns

    def set_cast(self, channel: str, caster: str, bio: str | None) -> None:
        key = self.key(channel)
        self.operator_state.set_cast(key[1], caster, bio)
        transcript = self.transcripts.get(key)
        if transcript is not None:
            transcript.set_header(self._header(key, transcript.name))

    def in_flight(self) -> int:
        return len(self._in_flight)

    def waiting(self) -> int:
        return len(self._waiting)

    # --- events ---------------------------------------------------------------------------

    def handle(self, event: IrcEvent) -> None:
        match event:
            case Message(origin=origin, target=target) | Action(origin=origin, target=target):
                if self._is_me(origin.nick):
                    return  # our own line echoed back (echo-message): already recorded
                channel = target if is_channel_name(target) else None
                if channel is None and not self._is_me(target):
                    return  # STATUSMSG (@#chan), $mask broadcasts: not a private query
                if (
                    isinstance(event, Message)
                    and self.on_command is not None
                    and self.is_command(event.text)
                ):
                    self.on_command(event, channel)  # commands never enter a context
                    return
                if self.is_ignored(origin):
                    return
                if channel is not None:
                    self._channel_line(event, channel)
                else:
                    self._query_line(event, origin.nick)
            case Join(origin=origin, channel=channel):
                key = self.key(channel)
                if self._is_me(origin.nick) and key in self.transcripts:
                    # Rejoining after a reconnect: the conversation goes on where it was.
                    self.transcripts[key].set_header(self._header(key, channel))
                    self.members[key] = {self.fold(origin.nick): ""}
                elif self._is_me(origin.nick):
                    transcript = self._new_transcript(channel)
                    transcript.set_header(self._header(key, channel))
                    saved = self.saved.pop(key, None)
                    if saved is not None:
                        transcript.add(saved.turns)
                        if saved.topic:
                            transcript.set_topic(saved.topic)
                    self.transcripts[key] = transcript
                    self.members[key] = {self.fold(origin.nick): ""}
                elif key in self.transcripts:
                    self.members.setdefault(key, {})[self.fold(origin.nick)] = ""
                    self._record(channel, event)
            case Part(origin=origin, channel=channel):
                if self._is_me(origin.nick):
                    self.forget(channel)
                else:
                    self.members.get(self.key(channel), {}).pop(self.fold(origin.nick), None)
                    self._record(channel, event)
            case Kick(channel=channel, target=target):
                if self._is_me(target):
                    self.forget(channel)
                else:
                    self.members.get(self.key(channel), {}).pop(self.fold(target), None)
                    self._record(channel, event)
            case Quit(origin=origin) | NickChange(origin=origin):
                self._member_everywhere(event, origin.nick)
            case Topic(channel=channel, text=text, origin=origin):
                existing = self.transcript(channel)
                if existing is not None:
                    existing.set_topic(text)
                    if origin is not None:
                        self._record(channel, event)
            case Names(channel=channel, nicks=nicks) if self.key(channel) in self.transcripts:
                members = self.members.setdefault(self.key(channel), {})
                for entry in nicks:
                    nick = entry.lstrip(_STATUS_PREFIXES)
                    members[self.fold(nick)] = entry[: len(entry) - len(nick)]
            case StatusChange(channel=channel, nick=nick, prefix=prefix, added=added):
                known = self.members.get(self.key(channel))
                if known is not None and self.fold(nick) in known:
                    status = known[self.fold(nick)].replace(prefix, "")
                    known[self.fold(nick)] = status + prefix if added else status
            case Invite():
                pass  # the session decides whether to join; the JOIN creates the context

    def _record(self, channel: str, event: IrcEvent) -> None:
        transcript = self.transcript(channel)
        if transcript is not None:
            transcript.add(channel_event_turns(event, transcript.name))

    def _member_everywhere(self, event: Quit | NickChange, nick: str) -> None:
        folded = self.fold(nick)
        for key, members in self.members.items():
            if folded not in members:
                continue
            status = members.pop(folded)
            if isinstance(event, NickChange):
                members[self.fold(event.new_nick)] = status
            transcript = self.transcripts.get(key)
            if transcript is not None:
                transcript.add(channel_event_turns(event, transcript.name))
        old_key, new_key = self.key(nick), self.key(getattr(event, "new_nick", nick))
        if (
            isinstance(event, NickChange)
            and old_key in self.transcripts
            and old_key != new_key
            and not is_channel_name(self.transcripts[old_key].name)
            and not is_channel_name(event.new_nick)
            and new_key not in self.transcripts
        ):
            # A query follows the peer across nick changes, with its reply in flight.
            transcript = self.transcripts.pop(old_key)
            transcript.name = event.new_nick
            self.transcripts[new_key] = transcript
            if old_key in self._in_flight:
                job_id = self._in_flight.pop(old_key)
                self._in_flight[new_key] = job_id
                self._job_keys[job_id] = new_key
            for table in (self._wanted_again, self._waiting):
                if old_key in table:
                    wanted = table.pop(old_key)
                    table[new_key] = dataclasses.replace(wanted, reply_to=event.new_nick)
        if isinstance(event, NickChange) and self._is_me(event.new_nick):
            for key, transcript in self.transcripts.items():
                if is_channel_name(transcript.name):
                    transcript.set_header(self._header(key, transcript.name))

    def _moderation_context(self, key: ContextKey, target: str, nick: str) -> ModerationContext:
        return ModerationContext(
            network=self.network,
            target=target,
            nick=nick,
            private=not is_channel_name(target),
            members=frozenset(self.members.get(key, {})),
            casemapping=self.sender.casemapping,
        )

    def _moderated_input(
        self, key: ContextKey, target: str, origin: Origin, text: str
    ) -> str | None:
        """The text as moderation lets it into the context, or None when it is blocked."""
        if self.moderation is None:
            return text
        verdict = self.moderation.check_input(
            text, self._moderation_context(key, target, origin.nick)
        )
        if verdict.decision is Decision.BLOCK:
            log.info(
                "input_blocked",
                hook=verdict.hook,
                reason=verdict.reason,
                network=self.network,
                channel=target,
                nick=origin.nick,
            )
            return None
        return verdict.text if verdict.decision is Decision.REPLACE else text

    def _evict_idle_queries(self) -> None:
        """Keep at most `max_queries` private conversations: the least recent goes first."""
        queries = [k for k, t in self.transcripts.items() if not is_channel_name(t.name)]
        for key in queries[: max(0, len(queries) - self.max_queries + 1)]:
            if key not in self._in_flight:
                del self.transcripts[key]
                self._recent_replies.pop(key, None)
                self._wanted_again.pop(key, None)
                self._waiting.pop(key, None)

    def _channel_line(self, event: Message | Action, channel: str) -> None:
        key = self.key(channel)
        transcript = self.transcripts.get(key)
        if transcript is None:
            return  # a message for a channel we are not in (or left): nothing to do
        text = self._moderated_input(key, channel, event.origin, event.text)
        if text is None:
            return
        event = dataclasses.replace(event, text=text)
        transcript.add(channel_event_turns(event, transcript.name))
        asker = self.fold(event.origin.nick)
        fresh = self.gate.heard(self._conversation(key), asker, text) if self.gate else True
        if not isinstance(event, Message):
            return
        settings = self.settings_for(key)
        policy = ReplyPolicy(
            self.reply.on_mention if settings.on_mention is None else settings.on_mention,
            self.reply.in_query,
            self.reply.chance if settings.chance is None else settings.chance,
        )
        if not policy.should_reply(
            text=text,
            sender=event.origin.nick,
            bot_nick=self.sender.nick,
            private=False,
            casemapping=self.sender.casemapping,
            random=self.random,
        ):
            return
        if self._declines(key, event.origin, fresh, channel):
            return
        self.want_reply(key, _Wanted(channel, self.sender.nick, event.origin.nick, True))

    def _declines(self, key: ContextKey, origin: Origin, fresh: bool, where: str) -> bool:
        context = {"network": self.network, "channel": where, "nick": origin.nick}
        if origin.bot and self.ignore_bots:
            log.info("reply_declined", reason="sender_is_bot", **context)
            return True
        if not fresh:
            log.info("reply_declined", reason="repeated_line", **context)
            return True
        if self.is_muted(key):
            log.debug("reply_declined", reason="muted", **context)
            return True
        return False

    def _query_line(self, event: Message | Action, peer: str) -> None:
        key = self.key(peer)
        text = self._moderated_input(key, peer, event.origin, event.text)
        if text is None:
            return
        transcript = self.transcripts.pop(key, None)  # re-inserted: most recent last
        if transcript is None:
            transcript = self._new_transcript(peer)
            self._evict_idle_queries()
        self.transcripts[key] = transcript
        if isinstance(event, Action):
            transcript.add([Turn(SYSTEM, f"* {QUERY_PEER_ROLE} {safe_line(text)}")])
            return
        transcript.add([Turn(QUERY_PEER_ROLE, channel_event_turns(Message(
            event.origin, event.target, text), peer)[0].content)])  # fmt: skip
        fresh = (
            self.gate.heard(self._conversation(key), self.fold(peer), text) if self.gate else True
        )
        if not self.reply.in_query or self._declines(key, event.origin, fresh, peer):
            return
        self.want_reply(key, _Wanted(peer, QUERY_BOT_ROLE, peer, True))

    # --- jobs and replies -----------------------------------------------------------------

    def want_reply(self, key: ContextKey, wanted: _Wanted) -> None:
        """Ask for a reply in a conversation, subject to budgets and the concurrency cap."""
        context = {"network": self.network, "channel": wanted.reply_to, "nick": wanted.asker}
        if self.is_muted(key):
            log.debug("reply_declined", reason="muted", **context)
            return
        if key in self._in_flight:
            # One reply per conversation at a time; answer the newest lines when it lands.
            self._wanted_again[key] = wanted
            return
        if wanted.gated and self.gate is not None:
            conversation = self._conversation(key)
            reason = self.gate.admit(conversation, self.fold(wanted.asker))
            if reason == "cooldown" and self.schedule is not None:
                # Someone asked while the last reply was still fresh: answer a little later.
                if key not in self._deferred:
                    token = self._deferred[key] = next(self._deferral_tokens)
                    self.schedule(
                        self.gate.cooldown_left(conversation) + 0.01,
                        lambda: self._after_cooldown(key, wanted, token),
                    )
                return
            if reason is not None:
                log.info("reply_declined", reason=reason, **context)
                return
        if len(self._in_flight) >= self.max_concurrent:
            self._waiting.pop(key, None)
            self._waiting[key] = wanted
            while len(self._waiting) > self.max_waiting:
                _, dropped = self._waiting.popitem(last=False)
                log.warning(
                    "reply_dropped_queue_full",
                    network=self.network,
                    channel=dropped.reply_to,
                    waiting=len(self._waiting),
                )
            return
        self._start(key, wanted)

    def _after_cooldown(self, key: ContextKey, wanted: _Wanted, token: int) -> None:
        if self._deferred.get(key) != token:
            # Cancelled meanwhile (reset, part, mute), or a reply that started since has
            # answered the lines this request was for: nothing new to answer.
            return
        del self._deferred[key]
        transcript = self.transcripts.get(key)
        if transcript is not None:
            self.want_reply(key, dataclasses.replace(wanted, reply_to=transcript.name))

    def retry(self, channel: str) -> bool:
        """Drop the bot's last reply from the context and generate it again (no budgets)."""
        key = self.key(channel)
        transcript = self.transcripts.get(key)
        if transcript is None or not is_channel_name(transcript.name):
            return False
        me = self.sender.nick
        transcript.drop_trailing(
            lambda turn: turn.role == me or turn.content.startswith(f"* {me} ")
        )
        self._retrying.add(key)
        self.want_reply(key, _Wanted(transcript.name, me, me, False))
        return True

    def new_job_id(self) -> int:
        """A job id no reply uses (other kinds of job, such as `ask`, share the sequence)."""
        return next(self._job_ids)

    def _start_waiting(self) -> None:
        while self._waiting and len(self._in_flight) < self.max_concurrent:
            key, wanted = self._waiting.popitem(last=False)
            if key in self.transcripts:
                self._start(key, wanted)

    def _params_for(self, key: ContextKey) -> SamplingParams:
        settings = self.settings_for(key)
        changes = {
            spec.name: value
            for spec in CHANNEL_SETTINGS.values()
            if spec.section == "model" and (value := getattr(settings, spec.name)) is not None
        }
        return dataclasses.replace(self.params, **changes) if changes else self.params

    def _start(self, key: ContextKey, wanted: _Wanted) -> None:
        transcript = self.transcripts.get(key)
        if transcript is None:
            return
        params = self._params_for(key)
        # A channel may allow longer replies than the context budget was sized for.
        extra = params.max_new_tokens - self.params.max_new_tokens
        prompt = self.fmt.render(transcript.turns_for(wanted.speaker, extra), wanted.speaker)
        job = Job(
            job_id=next(self._job_ids),
            key=key,
            reply_to=wanted.reply_to,
            speaker=wanted.speaker,
            # The key lets the engine reuse this conversation's cached prompt prefix.
            request=GenerationRequest(prompt, params, cache_key=key),
            log_context={
                "network": self.network,
                "channel": wanted.reply_to,
                "nick": wanted.asker,
            },
        )
        if self.submit(job):
            self._in_flight[key] = job.job_id
            self._job_keys[job.job_id] = key
            # At most one pending reply per conversation: this one answers every line so far,
            # so a request still deferred or waiting for a slot there is consumed.
            self._deferred.pop(key, None)
            self._waiting.pop(key, None)
            log.info("reply_requested", job=job.job_id, **job.log_context)
        else:
            log.warning("reply_dropped_queue_full", **job.log_context)

    def on_completion(self, completion: Completion) -> None:
        job = completion.job
        context = {"job": job.job_id, **job.log_context}
        key = self._job_keys.pop(job.job_id, None)
        transcript = self.transcripts.get(key) if key is not None else None
        if key is None or transcript is None:
            log.info("reply_dropped_context_gone", **context)
            self._start_waiting()
            return
        del self._in_flight[key]
        reply_to = transcript.name
        if completion.text is None:
            log.error("reply_failed", error=completion.error, **context)
        elif self.is_muted(key):
            log.info("reply_dropped_muted", **context)
        else:
            self._send_reply(
                job, key, reply_to, transcript, completion.text, context, completion.seconds
            )
        again = self._wanted_again.pop(key, None)
        if again is not None:
            self.want_reply(key, dataclasses.replace(again, reply_to=reply_to))
        self._start_waiting()

    def _send_reply(
        self,
        job: Job,
        key: ContextKey,
        reply_to: str,
        transcript: Transcript,
        text: str,
        context: dict[str, object],
        seconds: float,
    ) -> None:
        # The bot's nick may have changed since the job was made; speak as who we are now.
        speaker = job.speaker if job.speaker == QUERY_BOT_ROLE else self.sender.nick
        if self.moderation is not None:
            verdict = self.moderation.check_output(
                text, self._moderation_context(key, reply_to, self.sender.nick)
            )
            if verdict.decision is Decision.BLOCK:
                log.warning("reply_blocked", hook=verdict.hook, reason=verdict.reason, **context)
                return
            if verdict.decision is Decision.REPLACE:
                log.info("reply_replaced", hook=verdict.hook, reason=verdict.reason, **context)
                text = verdict.text
        # Two-role formats show the channel as `<nick> text` lines; the model may echo that.
        own_prefix = f"<{speaker}>"
        if text.lstrip().startswith(own_prefix):
            text = text.lstrip()[len(own_prefix) :]
        # Room for "\x01ACTION \x01" too, so a line works as either a message or a /me.
        budget = self.sender.payload_budget(reply_to) - len("\x01ACTION \x01")
        max_lines = self.settings_for(key).max_lines or self.reply.max_lines
        lines = reply_lines(text, budget, max_lines)
        recent = self._recent_replies.setdefault(key, deque(maxlen=3))
        normalised = " ".join(" ".join(lines).split()).lower()
        retried = key in self._retrying
        self._retrying.discard(key)
        if normalised and normalised in recent and not retried:
            log.info("reply_dropped_repeated", **context)
            return
        if not lines:
            log.info("reply_empty", seconds=round(seconds, 3), **context)
            return
        recent.append(normalised)
        self._send_lines(reply_to, transcript, speaker, lines, context, seconds)

    def _send_lines(
        self,
        reply_to: str,
        transcript: Transcript,
        speaker: str,
        lines: Sequence[str],
        context: dict[str, object],
        seconds: float,
    ) -> None:
        """Queue the reply's lines; each enters the transcript when it is written (and leaves
        it again if the connection dies before the server confirmed it), and `reply_sent` is
        logged when the last one is written (never for lines that are dropped)."""
        outgoing: list[tuple[str, bool, Turn]] = []
        for line in lines:
            if line.startswith("/me "):
                body = line[len("/me ") :].strip()
                outgoing.append((body, True, Turn(SYSTEM, f"* {speaker} {body}")))
            elif line.startswith("/"):
                # The model imitating an IRC command: never sent as one, and not as text either.
                log.info("reply_line_dropped_command", line=line[:80], **context)
            else:
                outgoing.append((line, False, Turn(speaker, line)))
        if not outgoing:
            log.info("reply_empty", seconds=round(seconds, 3), **context)
            return
        written = 0

        def on_sent(turn: Turn, last: bool) -> Callable[[], None]:
            def written_now() -> None:
                nonlocal written
                transcript.add([turn])
                written += 1
                if last:
                    self.reply_times.append(self.wall_clock())
                    log.info("reply_sent", lines=written, seconds=round(seconds, 3), **context)

            return written_now

        for index, (text, action, turn) in enumerate(outgoing):
            last = index == len(outgoing) - 1
            self.sender.send_message(
                reply_to,
                text,
                action=action,
                on_sent=on_sent(turn, last),
                on_lost=functools.partial(transcript.retract, turn),
            )

    def saved_contexts(self) -> list[tuple[ContextKey, SavedContext]]:
        """Channel contexts as plain values, for the state store (queries are not saved)."""
        now = self.wall_clock()
        result = []
        for key, transcript in self.transcripts.items():
            if not is_channel_name(transcript.name):
                continue
            topic = transcript.topic.content if transcript.topic else None
            prefix = f"* Topic for {transcript.name} is: "
            result.append(
                (
                    key,
                    SavedContext(
                        name=transcript.name,
                        header=tuple(transcript.header),
                        topic=topic[len(prefix) :] if topic and topic.startswith(prefix) else None,
                        turns=tuple(transcript.turns),
                        saved_at=now,
                    ),
                )
            )
        return result
