"""IRC events in, replies out: routes each event into its conversation's transcript, decides
whether a line asks for a reply, builds the job, and hands the completion to `replies`.

Runs on the reactor thread only. It owns the per-conversation transcripts; membership lives in
`members`, job scheduling in `scheduling`, what operators changed in `operator_state`. What
becomes of each reply is told to an optional observer (`observer`, for metrics).
"""

from __future__ import annotations

import dataclasses
import random as random_module
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from relaybot.bridge.continuing import Continuing
from relaybot.bridge.freshness import Freshness
from relaybot.bridge.jobs import reply_job
from relaybot.bridge.layout import pieces
from relaybot.bridge.members import Members
from relaybot.bridge.more import Offer, more_request, resumed_prompt
from relaybot.bridge.observer import DeclineReason, NoReplyObserver, ReplyObserver
from relaybot.bridge.operator_state import OperatorState
from relaybot.bridge.ports import Commands, JobQueue, Moderation, Sender, Timers
from relaybot.bridge.replies import moderated
from relaybot.bridge.scheduling import ReplyScheduler, Wanted
from relaybot.bridge.speaking import Speaking
from relaybot.bridge.state import SavedContext, saved_context
from relaybot.bridge.typing import Typing
from relaybot.config.channel_settings import ChannelSettings
from relaybot.config.schema import ReplyConfig
from relaybot.conversation.formats import Prompt, PromptFormat, Turn
from relaybot.conversation.identity import ContextKey
from relaybot.conversation.transcript import (
    QUERY_BOT_ROLE,
    QUERY_PEER_ROLE,
    SYSTEM,
    TokenCounter,
    Transcript,
    bot_join_turns,
    cast_turns,
    channel_event_turns,
)
from relaybot.inference.engine import SamplingParams
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
from relaybot.irc.text import casefold, is_channel_name, safe_line
from relaybot.log import get_logger
from relaybot.moderation import Decision, ModerationContext
from relaybot.policy.gate import ReplyGate, ReplyPolicy

log = get_logger(component="relay")


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
        jobs: JobQueue,
        sender: Sender,
        random: Callable[[], float] = random_module.random,
        gate: ReplyGate | None = None,
        moderation: Moderation | None = None,
        max_concurrent: int = 1_000_000,
        max_waiting: int = 64,
        ignore_bots: bool = True,
        is_ignored: Callable[[Origin], bool] | None = None,
        commands: Commands | None = None,
        wall_clock: Callable[[], float] = time.time,
        timers: Timers | None = None,
        max_queries: int = 1000,
        operator_state: OperatorState | None = None,
        clock: Callable[[], float] = time.monotonic,
        job_ids: Iterator[int] | None = None,
        observer: ReplyObserver | None = None,
    ) -> None:
        self.network = network
        self.observer = observer if observer is not None else NoReplyObserver()
        self.clock = clock  # monotonic, the one the session's outbox reads deadlines on
        self.fmt = fmt
        self.model = model
        self.reply = reply
        self.params = params
        self.sender = sender
        self.random = random
        self.gate = gate
        self.moderation = moderation
        self.ignore_bots = ignore_bots
        self.is_ignored = is_ignored
        self.commands = commands
        self.wall_clock = wall_clock
        self.max_queries = max_queries
        self.freshness = Freshness(lambda: self.reply.max_age, clock, self.observer)
        self.scheduler = ReplyScheduler(
            network=network,
            jobs=jobs,
            conversations=self,
            fold=self.fold,
            gate=gate,
            timers=timers,
            max_concurrent=max_concurrent,
            max_waiting=max_waiting,
            freshness=self.freshness,
            send_delay=sender.send_delay,
            on_start=lambda key, job: self.typing.started(key, job.reply_to),
            job_ids=job_ids,
            observer=self.observer,
        )
        self.observer.queue_depth(lambda: self.scheduler.in_flight() + self.scheduler.waiting())
        self.typing = Typing(sender, timers, self.scheduler.is_busy)
        self.transcripts: dict[ContextKey, Transcript] = {}
        self.members = Members(self.fold)
        # Mutes, personas and settings: read here, changed by operators, persisted by the bot.
        self.operator_state = operator_state or OperatorState(
            fold=lambda name: self.fold(name), wall_clock=wall_clock
        )
        self.saved: dict[ContextKey, SavedContext] = {}  # restored when the bot joins
        self.speaking = Speaking(sender, wall_clock, self.freshness, self.observer, clock)
        self.continuing = Continuing(
            sender=sender,
            speaking=self.speaking,
            fold=self.fold,
            max_lines=self._max_lines,
            moderate=self._moderate_output,
            resume_prompt=self._resume_prompt,
            clock=clock,
        )

    # --- keys and contexts --------------------------------------------------------------

    def fold(self, name: str) -> str:
        return casefold(name, self.sender.casemapping)

    def key(self, name: str) -> ContextKey:
        return ContextKey(self.network, self.fold(name))

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
        self.members.forget(key)
        self.cancel(key)
        self.speaking.forget(key)
        self.continuing.end(key)
        if self.gate is not None:
            self.gate.forget(key)

    def cancel(self, key: ContextKey) -> None:
        """Drop what is pending for a conversation: waiting requests, a reply in flight, and
        the engine's cached prefix (its context was reset, parted or muted), and what was
        left for `more`."""
        self.scheduler.cancel(key)
        self.continuing.end(key)

    def status_of(self, channel: str, nick: str) -> str:
        return self.members.status_of(self.key(channel), nick)

    # --- what the scheduler asks (scheduling.Conversations) ---------------------------------

    def name_of(self, key: ContextKey) -> str | None:
        transcript = self.transcripts.get(key)
        return transcript.name if transcript is not None else None

    def is_muted(self, key: ContextKey) -> bool:
        return self.operator_state.is_muted(key[1])

    def settings_for(self, key: ContextKey) -> ChannelSettings:
        return self.operator_state.settings(key[1])

    def model_for(self, key: ContextKey) -> str | None:
        """The served model chosen for the conversation (None: the configured one)."""
        return self.operator_state.model_for(key[1])

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
        return self.scheduler.in_flight()

    def waiting(self) -> int:
        return self.scheduler.waiting()

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
                    and self.commands is not None
                    and self.commands.is_command(event.text)
                ):
                    self.commands.handle(event, channel)  # commands never enter a context
                    return
                if self.is_ignored is not None and self.is_ignored(origin):
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
                    self.members.start(key, origin.nick)
                elif self._is_me(origin.nick):
                    transcript = self._new_transcript(channel)
                    transcript.set_header(self._header(key, channel))
                    saved = self.saved.pop(key, None)
                    if saved is not None:
                        transcript.add(saved.turns)
                        if saved.topic:
                            transcript.set_topic(saved.topic)
                    self.transcripts[key] = transcript
                    self.members.start(key, origin.nick)
                elif key in self.transcripts:
                    self.members.joined(key, origin.nick)
                    self._record(channel, event)
            case Part(origin=origin, channel=channel):
                if self._is_me(origin.nick):
                    self.forget(channel)
                else:
                    self.members.left(self.key(channel), origin.nick)
                    self._record(channel, event)
            case Kick(channel=channel, target=target):
                if self._is_me(target):
                    self.forget(channel)
                else:
                    self.members.left(self.key(channel), target)
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
                self.members.names(self.key(channel), nicks)
            case StatusChange(channel=channel, nick=nick, prefix=prefix, added=added):
                self.members.status_changed(self.key(channel), nick, prefix, added)
            case Invite():
                pass  # the session decides whether to join; the JOIN creates the context

    def _record(self, channel: str, event: IrcEvent) -> None:
        transcript = self.transcript(channel)
        if transcript is not None:
            transcript.add(channel_event_turns(event, transcript.name))

    def _member_everywhere(self, event: Quit | NickChange, nick: str) -> None:
        new_nick = event.new_nick if isinstance(event, NickChange) else None
        for key in self.members.gone_everywhere(nick, new_nick):
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
            self.scheduler.moved(old_key, new_key, event.new_nick)
            self.continuing.moved(old_key, new_key, event.new_nick)
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
            members=self.members.of(key),
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
            if not self.scheduler.is_busy(key):
                del self.transcripts[key]
                self.speaking.forget(key)
                self.continuing.end(key)
                self.scheduler.drop_idle(key)

    def _channel_line(self, event: Message | Action, channel: str) -> None:
        key = self.key(channel)
        transcript = self.transcripts.get(key)
        if transcript is None:
            return  # a message for a channel we are not in (or left): nothing to do
        text = self._moderated_input(key, channel, event.origin, event.text)
        if text is None:
            return
        if isinstance(event, Message) and (
            request := more_request(text, self.sender.nick, self.sender.casemapping, query=False)
        ):
            self.more(channel, event.origin, event.msgid, privately=request == "private")
            return
        event = dataclasses.replace(event, text=text)
        self.continuing.end(key)  # another line in between ends the last answer's offer
        transcript.add(channel_event_turns(event, transcript.name))
        asker = self.fold(event.origin.nick)
        fresh = self.gate.heard(key, asker, text) if self.gate else True
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
        self.scheduler.want(
            key,
            Wanted(channel, self.sender.nick, event.origin.nick, True, self.clock(), event.msgid),
        )

    def _declines(self, key: ContextKey, origin: Origin, fresh: bool, where: str) -> bool:
        reason: DeclineReason | None = None
        if origin.bot and self.ignore_bots:
            reason = "sender_is_bot"
        elif not fresh:
            reason = "repeated_line"
        elif self.is_muted(key):
            reason = "muted"
        if reason is None:
            return False
        # A muted channel declines every line: not worth an info line each.
        (log.debug if reason == "muted" else log.info)(
            "reply_declined", reason=reason, network=self.network, channel=where, nick=origin.nick
        )
        self.observer.declined(key, reason)
        return True

    def _query_line(self, event: Message | Action, peer: str) -> None:
        key = self.key(peer)
        text = self._moderated_input(key, peer, event.origin, event.text)
        if text is None:
            return
        # In a query `more` is only a request while there is more, of the answer there or of
        # a channel answer asked to go on privately: otherwise it is a line.
        if isinstance(event, Message) and more_request(
            text, self.sender.nick, self.sender.casemapping, query=True
        ):
            followed = self.continuing.followed(peer)
            if key in self.continuing.offers:
                self.more(peer, event.origin, event.msgid)
                return
            if followed is not None and followed in self.transcripts:
                name = self.transcripts[followed].name
                self.more(name, event.origin, event.msgid, privately=True)
                return
        self.continuing.end(key)
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
        fresh = self.gate.heard(key, self.fold(peer), text) if self.gate else True
        if not self.reply.in_query or self._declines(key, event.origin, fresh, peer):
            return
        self.scheduler.want(
            key, Wanted(peer, QUERY_BOT_ROLE, peer, True, self.clock(), event.msgid)
        )

    # --- jobs and replies -----------------------------------------------------------------

    def retry(self, channel: str) -> bool:
        """Drop the bot's last reply from the context and generate it again (no budgets)."""
        key = self.key(channel)
        transcript = self.transcripts.get(key)
        if transcript is None or not is_channel_name(transcript.name):
            return False
        me = self.sender.nick
        self.continuing.end(key)
        transcript.drop_trailing(
            lambda turn: turn.role == me or turn.content.startswith(f"* {me} ")
        )
        self.speaking.retrying(key)
        self.scheduler.want(key, Wanted(transcript.name, me, me, False, self.clock()))
        return True

    def new_job_id(self) -> int:
        """A job id no reply uses (other kinds of job, such as `ask`, share the sequence)."""
        return self.scheduler.new_job_id()

    def job_for(self, key: ContextKey, wanted: Wanted, job_id: int) -> Job | None:
        transcript = self.transcripts.get(key)
        if transcript is None:
            return None
        if wanted.more:
            context = {"network": self.network, "channel": wanted.reply_to,
                       "nick": wanted.asker, "more": True}  # fmt: skip
            return self.continuing.job(key, wanted, job_id, transcript, context)
        return reply_job(
            key,
            wanted,
            job_id,
            transcript=transcript,
            fmt=self.fmt,
            base=self.params,
            settings=self.settings_for(key),
            network=self.network,
            model=self.model_for(key),
        )

    def on_completion(self, completion: Completion) -> None:
        job = completion.job
        context = {"job": job.job_id, **job.log_context}
        key, again = self.scheduler.finished(job.job_id)
        transcript = self.transcripts.get(key) if key is not None else None
        if key is None or transcript is None:
            log.info("reply_dropped_context_gone", **context)
            self.observer.declined(job.key, "cancelled")
            self.scheduler.start_waiting()
            return
        reply_to = transcript.name
        self.freshness.generated(completion.seconds)
        replied = False
        offer = self.continuing.resuming(key, job.job_id)
        if offer is None:
            self.continuing.end(key)  # a new answer: the last one's offer is over
        if completion.text is None:
            log.error("reply_failed", error=completion.error, **context)
            self.observer.failed(key, "engine")
            if offer is not None:
                offer.abandon_resume()  # `more` may be asked again
        elif self.is_muted(key):
            log.info("reply_dropped_muted", **context)
            self.observer.declined(key, "muted")
        elif offer is not None:
            # A part sent privately says nothing in the conversation: typing there ends.
            privately = offer.deliver_to is not None
            replied = (
                self.continuing.resumed(
                    key, transcript, offer, completion, self._speaker(job.speaker), context
                )
                and not privately
            )
        else:
            replied = self._send_reply(job, key, reply_to, transcript, completion, context)
        self.typing.finished(key, reply_to, replied=replied)
        if again is not None:
            self.scheduler.want(key, dataclasses.replace(again, reply_to=reply_to))
        self.scheduler.start_waiting()

    def _speaker(self, role: str) -> str:
        # The bot's nick may have changed since the job was made; speak as who we are now.
        return role if role == QUERY_BOT_ROLE else self.sender.nick

    def _max_lines(self, key: ContextKey) -> int:
        return self.settings_for(key).max_lines or self.reply.max_lines

    def _moderate_output(
        self, key: ContextKey, target: str, text: str, context: Mapping[str, Any]
    ) -> str | None:
        allowed = moderated(
            self.moderation, text, self._moderation_context(key, target, self.sender.nick), context
        )
        if allowed is None:
            self.observer.declined(key, "moderation")
        return allowed

    def _resume_prompt(
        self, key: ContextKey, transcript: Transcript, offer: Offer, text: str
    ) -> Prompt:
        """The prompt that resumes `offer`'s answer after `text`: the conversation as it is
        now, the answer's own turns replaced by the open turn holding everything written so
        far, trimmed so that it, the answer and the new tokens fit the context window. With
        nothing said meanwhile it starts exactly as the prompt that began the answer."""
        speaker = self._speaker(offer.speaker)
        extra = offer.params.max_new_tokens - self.params.max_new_tokens
        extra += self.model.count_tokens(text)
        own = offer.answer.turn_ids()
        turns = [t for t in transcript.turns_for(speaker, extra) if id(t) not in own]
        return resumed_prompt(self.fmt.render(turns, speaker), text)

    def _send_reply(
        self,
        job: Job,
        key: ContextKey,
        reply_to: str,
        transcript: Transcript,
        completion: Completion,
        context: dict[str, object],
    ) -> bool:
        """Whether any line of the reply was queued to go out. An answer that does not all
        go out leaves an offer for `more`."""
        assert completion.text is not None
        speaker = self._speaker(job.speaker)
        allowed = self._moderate_output(key, reply_to, completion.text, context)
        if allowed is None:
            return False
        parts = pieces(allowed, speaker=speaker, actions=True, log_context=context)
        # Text moderation replaced is not what the model wrote: nothing of it was cut off.
        cut = completion.cut and allowed == completion.text
        layout = self.continuing.lay_out(key, reply_to, tuple(parts), cut)
        answer = self.speaking.say(
            key,
            transcript,
            speaker,
            list(layout.lines),
            log_context=context,
            seconds=completion.seconds,
            requested_at=job.requested_at,
            answers=job.answers,
        )
        if answer is not None:
            self.continuing.offer(key, job, answer, layout, completion, allowed, context)
        return answer is not None

    # --- more ---------------------------------------------------------------------------

    def more(
        self, where: str, origin: Origin, msgid: str | None = None, *, privately: bool = False
    ) -> None:
        """`origin` asks for the rest of the last answer in `where` (a channel, or the
        peer's nick for a query); `privately`: by private message. Budgets, cooldown and
        backpressure apply as to any reply; when there is nothing to continue for them, a
        notice says so."""
        key = self.key(where)
        transcript = self.transcripts.get(key)
        if transcript is None or (self.is_ignored is not None and self.is_ignored(origin)):
            return
        wanted = self.continuing.asked(
            key, transcript.name, origin, msgid, self.sender.nick, privately=privately
        )
        if wanted is not None and not self._declines(key, origin, True, where):
            self.scheduler.want(key, wanted)

    def saved_contexts(self) -> list[tuple[ContextKey, SavedContext]]:
        """Channel contexts as plain values, for the state store (queries are not saved)."""
        now = self.wall_clock()
        return [
            (key, saved_context(transcript, now))
            for key, transcript in self.transcripts.items()
            if is_channel_name(transcript.name)
        ]
