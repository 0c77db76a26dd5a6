"""`more` carried out: the offer each cut answer leaves in its conversation, who may ask for it,
the next part sent from text generated before, and the job that resumes generation once that is
used up, whose text joins the same answer. Reactor thread only; the relay routes to it.

The rules themselves (what asks, where generation resumes, how parts join) are pure, in
`relaybot.bridge.more`; laying out lines is `relaybot.bridge.layout`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from relaybot.bridge.layout import Layout, Piece, lay_out, pieces
from relaybot.bridge.more import Offer, continued, joiner, resume_point
from relaybot.bridge.ports import Sender
from relaybot.bridge.replies import line_budget
from relaybot.bridge.scheduling import Wanted
from relaybot.bridge.speaking import Answer, Speaking
from relaybot.conversation.formats import Prompt
from relaybot.conversation.identity import ContextKey
from relaybot.conversation.transcript import QUERY_BOT_ROLE, Transcript
from relaybot.inference.engine import GenerationRequest
from relaybot.inference.worker import Completion, Job
from relaybot.irc.events import Origin
from relaybot.log import get_logger
from relaybot.policy.ratelimit import TokenBucket

log = get_logger(component="relay")

NO_MORE = "There is no more to my last answer."
ALL_SAID = "That was all I had to say."

# (key, target, text, log context) -> the text as output moderation lets it out, or None
Moderate = Callable[[ContextKey, str, str, Mapping[str, Any]], "str | None"]
# (key, transcript, offer, the answer so far) -> the prompt that resumes it
ResumePrompt = Callable[[ContextKey, Transcript, Offer, str], Prompt]


class Continuing:
    def __init__(
        self,
        *,
        sender: Sender,
        speaking: Speaking,
        fold: Callable[[str], str],
        max_lines: Callable[[ContextKey], int],
        moderate: Moderate,
        resume_prompt: ResumePrompt,
        clock: Callable[[], float],
    ) -> None:
        self.sender = sender
        self.speaking = speaking
        self.fold = fold
        self.max_lines = max_lines
        self.moderate = moderate
        self.resume_prompt = resume_prompt
        self.clock = clock
        self.offers: dict[ContextKey, Offer] = {}
        # How often each person, and everyone together, may be told there is no more: a
        # flood of `more`, from one nick or many, cannot flood notices back.
        self._notices: dict[str, TokenBucket] = {}
        self._all_notices = TokenBucket(0.25, 5, clock)
        # The channel answer each person last asked to go on privately (`more pm`).
        self._follows: dict[str, ContextKey] = {}

    def lay_out(self, key: ContextKey, target: str, parts: tuple[Piece, ...], cut: bool) -> Layout:
        return lay_out(
            parts, budget=line_budget(self.sender, target), max_lines=self.max_lines(key),
            cut_off=cut,
        )  # fmt: skip

    def end(self, key: ContextKey) -> None:
        """Something else was said in the conversation, or it was reset, muted or left."""
        self.offers.pop(key, None)

    def moved(self, old: ContextKey, new: ContextKey, nick: str) -> None:
        """A query follows its peer to a new nick, with the offer to them."""
        offer = self.offers.pop(old, None)
        if offer is not None:
            offer.asker, offer.folded_asker = nick, self.fold(nick)
            self.offers[new] = offer

    def offer(
        self,
        key: ContextKey,
        job: Job,
        answer: Answer,
        layout: Layout,
        completion: Completion,
        allowed: str,
        context: Mapping[str, Any],
    ) -> None:
        """A reply went out as `layout`: what it left unsaid waits for `more`."""
        self.offers.pop(key, None)
        if not layout.more or job.asker is None:
            return
        offer = self.offers[key] = Offer(
            asker=job.asker,
            folded_asker=self.fold(job.asker),
            speaker=job.speaker,
            answer=answer,
            params=job.request.params,
            model=job.request.model,
            text=allowed,
            rest=layout.rest,
            # Text moderation replaced is not what the model wrote: nothing to resume.
            resumable=completion.cut and allowed == completion.text,
        )
        unsent = sum(len(piece.text) for piece in layout.rest)
        log.info("reply_offers_more", unsent=unsent, resumable=offer.resumable, **context)

    def resuming(self, key: ContextKey, job_id: int) -> Offer | None:
        """The offer whose continuation job `job_id` is, if it is one."""
        offer = self.offers.get(key)
        return offer if offer is not None and offer.resuming == job_id else None

    def asked(
        self,
        key: ContextKey,
        name: str,
        origin: Origin,
        msgid: str | None,
        speaker: str,
        *,
        privately: bool = False,
    ) -> Wanted | None:
        """`origin` asks for more in the conversation `name` (`privately`: by private
        message): the request to schedule, or None (with a notice, rate-limited) when there
        is nothing to continue for them."""
        offer = self.offers.get(key)
        if offer is None or offer.folded_asker != self.fold(origin.nick):
            reason = "no_offer" if offer is None else "not_theirs"
            log.info("more_declined", reason=reason, channel=name, nick=origin.nick)
            if self._may_notice(origin.nick):
                self.sender.send_notice(
                    origin.nick,
                    NO_MORE
                    if offer is None
                    else f"My last answer here was for {offer.asker}; ask me yourself.",
                )
            return None
        if offer.speaker == QUERY_BOT_ROLE:
            speaker, privately = QUERY_BOT_ROLE, False  # a query is private already
        if privately:
            # A plain `more` in the query with the bot goes on with this answer there.
            self._follows.pop(offer.folded_asker, None)
            self._follows[offer.folded_asker] = key
            while len(self._follows) > 1000:
                self._follows.pop(next(iter(self._follows)))
        return Wanted(
            name, speaker, origin.nick, True, self.clock(), msgid, more=True, privately=privately
        )

    def followed(self, nick: str) -> ContextKey | None:
        """The conversation whose answer `nick` last asked to go on privately, while it has
        more."""
        key = self._follows.get(self.fold(nick))
        offer = self.offers.get(key) if key is not None else None
        return key if offer is not None and offer.folded_asker == self.fold(nick) else None

    def _may_notice(self, nick: str) -> bool:
        folded = self.fold(nick)
        bucket = self._notices.get(folded)
        if bucket is None:
            if len(self._notices) > 1000:
                self._notices.clear()
            bucket = self._notices[folded] = TokenBucket(0.1, 2, self.clock)
        return bucket.can_take() and self._all_notices.take() and bucket.take()

    def job(
        self,
        key: ContextKey,
        wanted: Wanted,
        job_id: int,
        transcript: Transcript,
        context: Mapping[str, Any],
    ) -> Job | None:
        """The next part of the offer in `key`: sent now from text generated before (None
        returned), or a job that resumes generation where the answer stands."""
        offer = self.offers.get(key)
        if offer is None or offer.resuming is not None:
            return None  # ended meanwhile, or its continuation is generating already
        if not offer.rest and not offer.resumable:
            self.end(key)  # nothing left, and the model had ended
            return None
        if offer.rest:
            # Laid out as if the model had ended: `more` there means the rest fills a part.
            layout = self.lay_out(key, transcript.name, offer.rest, False)
            # A rest shorter than a full part is written on by the model first, so that a
            # part is not a stub ending where the token limit happened to fall.
            if not offer.resumable or layout.more:
                to = wanted.asker if wanted.privately else None
                self._say(key, transcript, offer, layout, wanted, context, 0.0, to)
                return None
        base, rest = resume_point(offer.text, offer.rest)
        offer.resuming, offer.resume_from = job_id, (base, rest)
        offer.deliver_to = wanted.asker if wanted.privately else None
        return Job(
            job_id=job_id,
            key=key,
            reply_to=wanted.reply_to,
            speaker=offer.speaker,
            request=GenerationRequest(
                self.resume_prompt(key, transcript, offer, base),
                offer.params,
                cache_key=key,
                model=offer.model,
            ),
            log_context=dict(context),
            requested_at=wanted.requested_at,
            answers=wanted.msgid,
            asker=wanted.asker,
        )

    def resumed(
        self,
        key: ContextKey,
        transcript: Transcript,
        offer: Offer,
        completion: Completion,
        speaker: str,
        context: Mapping[str, Any],
    ) -> bool:
        """A resumed generation came back: its text joins the answer's unsent rest, and the
        next part goes out. Whether any line was queued."""
        job = completion.job
        resume_from, to = offer.resume_from, offer.deliver_to
        offer.abandon_resume()
        if completion.text is None or resume_from is None:
            return False  # failed: `more` may be asked again
        allowed = self.moderate(key, transcript.name, completion.text, context)
        if allowed is None:
            self.end(key)
            return False
        offer.text, offer.rest = resume_from
        join = joiner(offer.text, allowed)
        parts = pieces(allowed, speaker=speaker, actions=True, log_context=context)
        offer.rest = continued(offer.rest, parts, join)
        offer.text = offer.text + join + allowed
        offer.resumable = completion.cut and allowed == completion.text
        if not offer.rest:
            self.end(key)
            log.info("more_empty", **context)
            if job.asker is not None:
                self.sender.send_notice(job.asker, ALL_SAID)
            return False
        layout = self.lay_out(key, transcript.name, offer.rest, offer.resumable)
        wanted = Wanted(transcript.name, speaker, job.asker or "", True,
                        job.requested_at or self.clock(), job.answers, more=True)  # fmt: skip
        return self._say(key, transcript, offer, layout, wanted, context, completion.seconds, to)

    def _say(
        self,
        key: ContextKey,
        transcript: Transcript,
        offer: Offer,
        layout: Layout,
        wanted: Wanted,
        context: Mapping[str, Any],
        seconds: float,
        to: str | None = None,
    ) -> bool:
        said = self.speaking.say(
            key,
            transcript,
            wanted.speaker,
            list(layout.lines),
            log_context=context,
            seconds=seconds,
            requested_at=wanted.requested_at,
            answers=wanted.msgid,
            answer=offer.answer,
            supersede=False,
            to=to,
        )
        if said is None or not layout.more:
            self.end(key)
        else:
            offer.rest = layout.rest
        return said is not None
