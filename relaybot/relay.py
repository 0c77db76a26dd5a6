"""The one module that knows the others: IRC events in, jobs to the worker, replies out.

Runs on the reactor thread only. It owns the per-conversation transcripts, channel
membership (to route QUIT and NICK), and which conversations have a reply in flight.
"""

from __future__ import annotations

import itertools
import random as random_module
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from relaybot.config import ModelConfig, ReplyConfig
from relaybot.engine import GenerationRequest, SamplingParams
from relaybot.events import (
    Action,
    Invite,
    IrcEvent,
    Join,
    Kick,
    Message,
    Names,
    NickChange,
    Part,
    Quit,
    Topic,
)
from relaybot.formats import PromptFormat, Turn
from relaybot.log import get_logger
from relaybot.policy import ReplyPolicy
from relaybot.text import casefold, is_channel_name, reply_lines, safe_line
from relaybot.transcript import (
    QUERY_BOT_ROLE,
    QUERY_PEER_ROLE,
    SYSTEM,
    ContextKey,
    TokenCounter,
    Transcript,
    bot_join_turns,
    channel_event_turns,
)
from relaybot.worker import Completion, Job

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
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class ModelInfo:
    count_tokens: TokenCounter
    context_window: int


def sampling_from(config: ModelConfig) -> SamplingParams:
    return SamplingParams(
        temperature=config.temperature,
        top_k=config.top_k,
        top_p=config.top_p,
        min_p=config.min_p,
        repetition_penalty=config.repetition_penalty,
        max_new_tokens=config.max_new_tokens,
        seed=config.seed,
    )


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
    ) -> None:
        self.network = network
        self.fmt = fmt
        self.model = model
        self.reply = reply
        self.policy = ReplyPolicy(reply.on_mention, reply.in_query, reply.chance)
        self.params = params
        self.submit = submit
        self.sender = sender
        self.random = random
        self.transcripts: dict[ContextKey, Transcript] = {}
        self.members: dict[ContextKey, set[str]] = {}
        # The one job in flight per conversation, and where each job's reply belongs now
        # (a query follows its peer across nick changes; a forgotten context has no entry).
        self._in_flight: dict[ContextKey, int] = {}
        self._job_keys: dict[int, ContextKey] = {}
        self._wanted_again: set[ContextKey] = set()
        self._job_ids = itertools.count(1)

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
        self._wanted_again.discard(key)
        job_id = self._in_flight.pop(key, None)
        if job_id is not None:
            self._job_keys.pop(job_id, None)

    # --- events ---------------------------------------------------------------------------

    def handle(self, event: IrcEvent) -> None:
        match event:
            case Message(origin=origin, target=target) | Action(origin=origin, target=target):
                if is_channel_name(target):
                    self._channel_line(event, target)
                else:
                    self._query_line(event, origin.nick)
            case Join(origin=origin, channel=channel):
                if self._is_me(origin.nick):
                    transcript = self._new_transcript(channel)
                    transcript.set_header(bot_join_turns(self.sender.nick, channel))
                    self.transcripts[self.key(channel)] = transcript
                    self.members[self.key(channel)] = {self.fold(origin.nick)}
                else:
                    self.members.setdefault(self.key(channel), set()).add(self.fold(origin.nick))
                    self._record(channel, event)
            case Part(origin=origin, channel=channel):
                if self._is_me(origin.nick):
                    self.forget(channel)
                else:
                    self.members.get(self.key(channel), set()).discard(self.fold(origin.nick))
                    self._record(channel, event)
            case Kick(channel=channel, target=target):
                if self._is_me(target):
                    self.forget(channel)
                else:
                    self.members.get(self.key(channel), set()).discard(self.fold(target))
                    self._record(channel, event)
            case Quit(origin=origin) | NickChange(origin=origin):
                self._member_everywhere(event, origin.nick)
            case Topic(channel=channel, text=text, origin=origin):
                existing = self.transcript(channel)
                if existing is not None:
                    existing.set_topic(text)
                    if origin is not None:
                        self._record(channel, event)
            case Names(channel=channel, nicks=nicks):
                members = self.members.setdefault(self.key(channel), set())
                members.update(self.fold(nick.lstrip(_STATUS_PREFIXES)) for nick in nicks)
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
            if isinstance(event, NickChange):
                members.discard(folded)
                members.add(self.fold(event.new_nick))
            else:
                members.discard(folded)
            transcript = self.transcripts.get(key)
            if transcript is not None:
                transcript.add(channel_event_turns(event, transcript.name))
        old_key, new_key = self.key(nick), self.key(getattr(event, "new_nick", nick))
        if isinstance(event, NickChange) and old_key in self.transcripts and old_key != new_key:
            # A query follows the peer across nick changes, with its reply in flight.
            transcript = self.transcripts.pop(old_key)
            transcript.name = event.new_nick
            self.transcripts[new_key] = transcript
            if old_key in self._in_flight:
                job_id = self._in_flight.pop(old_key)
                self._in_flight[new_key] = job_id
                self._job_keys[job_id] = new_key
            if old_key in self._wanted_again:
                self._wanted_again.discard(old_key)
                self._wanted_again.add(new_key)

    def _channel_line(self, event: Message | Action, channel: str) -> None:
        transcript = self.transcript(channel)
        if transcript is None:
            return  # a message for a channel we are not in (or left): nothing to do
        transcript.add(channel_event_turns(event, transcript.name))
        if isinstance(event, Message) and self.policy.should_reply(
            text=event.text,
            sender=event.origin.nick,
            bot_nick=self.sender.nick,
            private=False,
            casemapping=self.sender.casemapping,
            random=self.random,
        ):
            self._request_reply(self.key(channel), channel, self.sender.nick, event.origin.nick)

    def _query_line(self, event: Message | Action, peer: str) -> None:
        if self._is_me(peer):
            return
        key = self.key(peer)
        transcript = self.transcripts.get(key)
        if transcript is None:
            transcript = self.transcripts[key] = self._new_transcript(peer)
        if isinstance(event, Action):
            transcript.add([Turn(SYSTEM, f"* {QUERY_PEER_ROLE} {safe_line(event.text)}")])
            return
        transcript.add([Turn(QUERY_PEER_ROLE, channel_event_turns(event, peer)[0].content)])
        if self.policy.should_reply(
            text=event.text,
            sender=peer,
            bot_nick=self.sender.nick,
            private=True,
            casemapping=self.sender.casemapping,
            random=self.random,
        ):
            self._request_reply(key, peer, QUERY_BOT_ROLE, peer)

    # --- jobs and replies -----------------------------------------------------------------

    def _request_reply(self, key: ContextKey, reply_to: str, speaker: str, asker: str) -> None:
        if key in self._in_flight:
            # One reply per conversation at a time; answer the newest lines when it lands.
            self._wanted_again.add(key)
            return
        transcript = self.transcripts[key]
        prompt = self.fmt.render(transcript.turns_for(speaker), speaker)
        job = Job(
            job_id=next(self._job_ids),
            key=key,
            reply_to=reply_to,
            speaker=speaker,
            request=GenerationRequest(prompt, self.params),
            log_context={"network": self.network, "channel": reply_to, "nick": asker},
        )
        if self.submit(job):
            self._in_flight[key] = job.job_id
            self._job_keys[job.job_id] = key
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
            return
        del self._in_flight[key]
        reply_to = transcript.name
        if completion.text is None:
            log.error("reply_failed", error=completion.error, **context)
        else:
            self._send_reply(
                job, reply_to, transcript, completion.text, context, completion.seconds
            )
        if key in self._wanted_again:
            self._wanted_again.discard(key)
            self._request_reply(key, reply_to, job.speaker, "")

    def _send_reply(
        self,
        job: Job,
        reply_to: str,
        transcript: Transcript,
        text: str,
        context: dict[str, object],
        seconds: float,
    ) -> None:
        # The bot's nick may have changed since the job was made; speak as who we are now.
        speaker = job.speaker if job.speaker == QUERY_BOT_ROLE else self.sender.nick
        # Room for "\x01ACTION \x01" too, so a line works as either a message or a /me.
        budget = self.sender.payload_budget(reply_to) - len("\x01ACTION \x01")
        lines = reply_lines(text, budget, self.reply.max_lines)
        if not lines:
            log.info("reply_empty", seconds=round(seconds, 3), **context)
            return
        sent = 0
        for line in lines:
            if line.startswith("/me "):
                body = line[len("/me ") :].strip()
                self.sender.send_message(
                    reply_to,
                    body,
                    action=True,
                    on_sent=_adder(transcript, Turn(SYSTEM, f"* {speaker} {body}")),
                )
            elif line.startswith("/"):
                # The model imitating an IRC command: never sent as one, and not as text either.
                log.info("reply_line_dropped_command", line=line[:80], **context)
                continue
            else:
                self.sender.send_message(
                    reply_to, line, on_sent=_adder(transcript, Turn(speaker, line))
                )
            sent += 1
        log.info("reply_sent", lines=sent, seconds=round(seconds, 3), **context)


def _adder(transcript: Transcript, turn: Turn) -> Callable[[], None]:
    return lambda: transcript.add([turn])
