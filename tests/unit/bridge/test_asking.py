"""Tests for relaybot.bridge.asking: the `ask` jobs, their answers and their delivery."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from relaybot.bridge.asking import MAX_PENDING, Asking
from relaybot.conversation.families import VicunaFormat
from relaybot.conversation.formats import Turn
from relaybot.inference.engine import SamplingParams
from relaybot.inference.worker import Completion, Job
from relaybot.moderation import Decision, ModerationContext, Verdict
from tests.support.channel_log import TURNS


@dataclass
class _Sender:
    nick: str = "relaybot"
    sent: list[tuple[str, str]] = field(default_factory=list)

    def payload_budget(self, target: str) -> int:
        return 400

    casemapping: str = "rfc1459"

    def send_message(self, target: str, text: str, **_: object) -> None:
        self.sent.append((target, text))

    def drop_queued(self, target: str) -> int:
        return 0


@dataclass
class _OutputCheck:
    check: Callable[[str, ModerationContext], Verdict]

    def check_output(self, text: str, context: ModerationContext) -> Verdict:
        return self.check(text, context)


def _asking(
    sender: _Sender,
    jobs: list[Job],
    verdict: Verdict | None = None,
    accept: bool = True,
    model: str | None = None,
) -> Asking:
    ids = iter(range(100, 200))

    def submit(job: Job) -> bool:
        jobs.append(job)
        return accept

    def check(text: str, context: ModerationContext) -> Verdict:
        assert context.nick == "relaybot" and context.target == "#lab"
        return verdict or Verdict(Decision.ALLOW, text)

    return Asking(
        network="net",
        fmt=VicunaFormat(),
        count_tokens=lambda text: len(text.split()),
        context_window=2048,
        params=lambda: SamplingParams(temperature=0.8, max_new_tokens=64, seed=5),
        submit=submit,
        new_job_id=lambda: next(ids),
        sender=sender,
        moderation=lambda: _OutputCheck(check),
        max_lines=lambda: 2,
        model_for=lambda key: model if key == ("net", "#lab") else "wrong",
    )


def _ask(asking: Asking) -> str | None:
    return asking.ask(
        key=("net", "#lab"),
        channel="#lab",
        turns=TURNS,
        asker="dave",
        question="where is the build server?",
        reply_to="#lab",
    )


def test_question_is_a_greedy_closed_context_job_answered_in_the_channel() -> None:
    sender, jobs = _Sender(), []
    asking = _asking(sender, jobs)
    assert _ask(asking) is None
    (job,) = jobs
    assert asking.owns(job.job_id)
    assert job.request.params.temperature == 0.0
    text = job.request.prompt.text
    # Vicuna (airoboros) wrapping around the card's blocks.
    assert text.startswith("A chat between a curious user and an assistant.")
    assert " USER: BEGININPUT\nBEGINCONTEXT\nchannel: #lab\nline: 1\n" in text
    assert text.endswith("ENDINSTRUCTION ASSISTANT:")
    asking.on_completion(Completion(job, "Rack 4.\nSource: line: 2", None, 0.5, 1))
    assert sender.sent == [("#lab", "dave: Rack 4. [from line 2 <alice>]")]
    assert not asking.owns(job.job_id)


def test_a_question_asks_the_model_chosen_for_its_channel() -> None:
    jobs: list[Job] = []
    _ask(_asking(_Sender(), jobs, model="chosen"))
    _ask(_asking(_Sender(), jobs))
    assert [job.request.model for job in jobs] == ["chosen", None]


def test_failed_or_blocked_answers() -> None:
    sender, jobs = _Sender(), []
    asking = _asking(sender, jobs)
    _ask(asking)
    asking.on_completion(Completion(jobs[0], None, "CUDA out of memory", 0.1, 1))
    assert sender.sent == [("#lab", "dave: sorry, the model failed to answer")]

    sender, jobs = _Sender(), []
    asking = _asking(sender, jobs, verdict=Verdict(Decision.BLOCK, "", "words#1", "bad word"))
    _ask(asking)
    asking.on_completion(Completion(jobs[0], "Rack 4.", None, 0.1, 1))
    assert sender.sent == []


def test_busy_model_and_too_many_questions() -> None:
    sender, jobs = _Sender(), []
    assert _ask(_asking(sender, jobs, accept=False)) == "the model is busy; ask again in a moment"
    asking = _asking(sender, jobs)
    for _ in range(MAX_PENDING):
        assert _ask(asking) is None
    assert _ask(asking) == "too many questions in progress; ask again in a moment"


def test_an_empty_log_is_explained() -> None:
    asking = _asking(_Sender(), [])
    answer = asking.ask(
        key=("net", "#lab"),
        channel="#lab",
        turns=[Turn("relaybot", "/join #lab")],
        asker="dave",
        question="anything?",
        reply_to="#lab",
    )
    assert answer == "nothing in #lab's log to answer from yet"
