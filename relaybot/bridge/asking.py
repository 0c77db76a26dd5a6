"""The `ask` command's jobs: a closed-context question about a channel's log, sent through the
inference worker like a reply, answered in the channel (or query) it was asked in.

Answers are not recorded in the channel's context: they are a tool's output, not the bot
speaking in the conversation, and recording them would teach the model to answer in QA form.
Output moderation applies to them as to any reply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from relaybot.bridge.ports import OutputModeration, Sender
from relaybot.bridge.replies import irc_lines, moderated, send_lines
from relaybot.conversation.formats import PromptFormat, Turn
from relaybot.conversation.identity import ContextKey
from relaybot.conversation.instruct import instruction_prompt
from relaybot.conversation.qa import (
    QA_SYSTEM,
    LogLine,
    fit_lines,
    log_lines,
    parse_answer,
    qa_request,
    reply_text,
    request_budget,
)
from relaybot.inference.engine import GenerationRequest, SamplingParams
from relaybot.inference.worker import Completion, Job
from relaybot.log import get_logger
from relaybot.moderation import ModerationContext

log = get_logger(component="ask")

MAX_PENDING = 4


@dataclass(frozen=True, slots=True)
class _Question:
    asker: str
    reply_to: str
    channel: str
    lines: tuple[LogLine, ...]


class Asking:
    def __init__(
        self,
        *,
        network: str,
        fmt: PromptFormat,
        count_tokens: Callable[[str], int],
        context_window: int,
        params: Callable[[], SamplingParams],
        submit: Callable[[Job], bool],
        new_job_id: Callable[[], int],
        sender: Sender,
        moderation: Callable[[], OutputModeration | None],
        max_lines: Callable[[], int],
        model_for: Callable[[ContextKey], str | None] = lambda key: None,
    ) -> None:
        self.network = network
        self.fmt = fmt
        self.count_tokens = count_tokens
        self.context_window = context_window
        self.params = params
        self.submit = submit
        self.new_job_id = new_job_id
        self.sender = sender
        # Called each time: a reload swaps the bot's moderation chain.
        self.moderation = moderation
        self.max_lines = max_lines
        self.model_for = model_for  # the served model chosen for the channel asked about
        self._pending: dict[int, _Question] = {}

    def owns(self, job_id: int) -> bool:
        return job_id in self._pending

    def ask(
        self,
        *,
        key: ContextKey,
        channel: str,
        turns: Sequence[Turn],
        asker: str,
        question: str,
        reply_to: str,
    ) -> str | None:
        """Submit the question; a message for the asker when it cannot be asked, else None."""
        if len(self._pending) >= MAX_PENDING:
            return "too many questions in progress; ask again in a moment"
        # The cards: "Use a very low temperature!" Greedy decoding, the channel's length.
        params = dataclasses.replace(self.params(), temperature=0.0, seed=None)
        budget = request_budget(
            self.context_window, params.max_new_tokens, question, self.count_tokens
        )
        lines = fit_lines(log_lines(turns), channel, self.count_tokens, budget)
        if not lines:
            return f"nothing in {channel}'s log to answer from yet"
        prompt = instruction_prompt(self.fmt, QA_SYSTEM, qa_request(lines, channel, question))
        job = Job(
            job_id=self.new_job_id(),
            key=key,
            reply_to=reply_to,
            speaker="assistant",
            request=GenerationRequest(prompt, params, model=self.model_for(key)),
            log_context={"network": self.network, "channel": channel, "nick": asker},
        )
        if not self.submit(job):
            return "the model is busy; ask again in a moment"
        self._pending[job.job_id] = _Question(asker, reply_to, channel, tuple(lines))
        log.info("question_asked", job=job.job_id, lines=len(lines), **job.log_context)
        return None

    def on_completion(self, completion: Completion) -> None:
        question = self._pending.pop(completion.job.job_id, None)
        if question is None:
            return
        context = {"job": completion.job.job_id, **completion.job.log_context}
        if completion.text is None:
            log.error("question_failed", error=completion.error, **context)
            self.sender.send_message(
                question.reply_to, f"{question.asker}: sorry, the model failed to answer"
            )
            return
        answer = parse_answer(completion.text, [line.number for line in question.lines])
        text = reply_text(question.asker, answer, question.lines)
        allowed = moderated(
            self.moderation(),
            text,
            ModerationContext(
                network=self.network,
                target=question.reply_to,
                nick=self.sender.nick,
                private=question.reply_to == question.asker,
            ),
            context,
            what="answer",
        )
        if allowed is None:
            return
        lines = irc_lines(
            allowed,
            speaker=self.sender.nick,
            budget=self.sender.payload_budget(question.reply_to),
            max_lines=self.max_lines(),
            actions=False,  # an answer is text; a line starting with "/" is dropped
            log_context=context,
        )
        send_lines(self.sender, question.reply_to, lines)
        log.info(
            "question_answered",
            cited=list(answer.cited),
            seconds=round(completion.seconds, 3),
            **context,
        )
