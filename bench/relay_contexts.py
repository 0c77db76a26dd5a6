"""Shared by the CPU benchmarks: realistic channel contexts, the naive baseline, statistics.

Contexts are built the way the bot builds them: IRC events (joins, parts, quits, nick changes,
actions, topic changes, messages from many nicks) go through relaybot's Transcript, and prompts
are rendered by RelayFormat. Everything is drawn from a seeded random generator.

The naive baseline is what the reference client does for each request: tokenise the whole
prompt, call `generate` once (batch 1) with temperature 0.3, top_k 40, top_p 0.95, min_p 0.05,
repetition_penalty 1.1, max_new_tokens 128.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from relaybot.conversation.formats import Prompt, RelayFormat, Turn  # noqa: E402
from relaybot.conversation.transcript import Transcript, bot_join_turns, channel_event_turns  # noqa: E402
from relaybot.inference.engine import GenerationRequest, SamplingParams  # noqa: E402
from relaybot.irc.events import (  # noqa: E402
    Action,
    IrcEvent,
    Join,
    Message,
    NickChange,
    Origin,
    Part,
    Quit,
    Topic,
)

BOT = "relaybot"
NETWORK = "benchnet"
REFERENCE = SamplingParams()  # the reference client's settings are relaybot's defaults

NICKS = [
    "alice", "b0b", "carol_", "dave`", "eve", "fr4nk", "gwen", "hal9000", "ivy", "jojo",
    "kat", "lex^", "mika", "nora", "otto", "pip", "quinn", "rafa", "sol", "tux_fan",
    "ursula", "vik", "wren", "xan", "yuki", "zed", "[fox]", "moss", "nyx", "Orion",
]  # fmt: skip
CHANNELS = [
    "#linux", "#python", "#cooking", "#music", "#gamedev", "#astro", "#bikes", "#rust",
    "#books", "#garden", "#retro", "#chess", "#coffee", "#photo", "#synth", "#hiking",
]  # fmt: skip
TOPICS = {
    "#linux": "kernel 6.x talk | no distro wars | pastebin long logs",
    "#python": "Python help and chat | ask, don't ask to ask | 3.13 is out",
    "#cooking": "what's for dinner? | recipes welcome",
    "#music": "now playing, gear and gigs",
    "#gamedev": "show your progress | jam this weekend",
    "#astro": "clear skies! | meteor shower friday",
}
SUBJECTS = [
    "the build", "my laptop", "the new release", "that recipe", "the server", "my bike",
    "the concert", "this bug", "the weather", "my garden", "the game jam", "the telescope",
    "the coffee grinder", "my synth", "the trail", "the test suite", "the docs", "vim",
]  # fmt: skip
LINES = [
    "anyone tried {s} today?",
    "{s} is broken again lol",
    "i finally fixed {s}, it was a typo the whole time",
    "does {s} work for you or is it just me",
    "brb, {s} needs attention",
    "honestly {s} is better than i expected",
    "{n}: did you see what happened with {s}?",
    "lol",
    "same here",
    "hm, interesting",
    "{n}: thanks, that helped a lot",
    "i'm going to rewrite {s} from scratch this weekend",
    "ok who broke {s}",
    "my take: {s} needs more tests",
    "that's what she said about {s}",
    "good morning everyone",
    "{n}: you around? quick question about {s}",
    "switching {s} to the new version, wish me luck",
    "it works on my machine ™",
    "can confirm, {s} is slow since the update",
]
ACTIONS = ["waves", "grabs a coffee", "sighs at {s}", "is away for a bit", "cheers"]
QUESTIONS = [
    "what do you think about {s}?",
    "can you explain {s} in one line?",
    "any tips for {s}?",
    "is {s} worth it?",
    "tell us a joke about {s}",
    "how would you fix {s}?",
    "summarise the last few messages please",
    "what's your favourite thing about {s}?",
]


@dataclass
class Channel:
    """One channel's rolling context, as the relay keeps it."""

    name: str
    transcript: Transcript
    members: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (NETWORK, self.name.lower())

    def prompt(self) -> Prompt:
        return RelayFormat().render(self.transcript.turns_for(BOT), BOT)

    def add_reply(self, text: str) -> None:
        """A reply joins the context line by line once sent, as the relay does."""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        self.transcript.add([Turn(BOT, line) for line in lines if not line.startswith("/")])


def _origin(nick: str) -> Origin:
    return Origin(nick, nick.strip("_`^[]").lower() or "user", "users.example")


def _fill(template: str, rng: random.Random, members: Sequence[str]) -> str:
    return template.format(s=rng.choice(SUBJECTS), n=rng.choice(list(members) or [BOT]))


def _event(rng: random.Random, channel: Channel) -> IrcEvent:
    name, members = channel.name, channel.members
    roll = rng.random()
    if roll < 0.08 or len(members) < 3:
        nick = rng.choice([n for n in NICKS if n not in members] or NICKS)
        members.append(nick)
        return Join(_origin(nick), name)
    speaker = rng.choice(members)
    if roll < 0.11:
        members.remove(speaker)
        return Part(_origin(speaker), name, rng.choice(["", "bbl", "work"]))
    if roll < 0.13:
        members.remove(speaker)
        return Quit(_origin(speaker), rng.choice(["Ping timeout", "Quit: bye", ""]))
    if roll < 0.15:
        new = speaker.rstrip("_") + rng.choice(["_", "|away", "2"])
        members[members.index(speaker)] = new
        return NickChange(_origin(speaker), new)
    if roll < 0.16:
        return Topic(name, _fill("talking about {s} today", rng, members), _origin(speaker))
    if roll < 0.24:
        return Action(_origin(speaker), name, _fill(rng.choice(ACTIONS), rng, members))
    return Message(_origin(speaker), name, _fill(rng.choice(LINES), rng, members))


def build_channels(
    count: int,
    count_tokens: Any,
    budget: int,
    context_tokens: tuple[int, int],
    seed: int,
) -> list[Channel]:
    """`count` channels, each with a context of about `context_tokens` (low, high) tokens."""
    rng = random.Random(seed)
    channels = []
    for index in range(count):
        name = CHANNELS[index % len(CHANNELS)] + ("" if index < len(CHANNELS) else str(index))
        transcript = Transcript(name=name, count_tokens=count_tokens, budget=budget)
        transcript.set_header(bot_join_turns(BOT, name))
        transcript.set_topic(TOPICS.get(name, f"welcome to {name}"))
        channel = Channel(name, transcript)
        target = rng.randint(*context_tokens)
        while transcript.token_count < target:
            add_event(channel, _event(rng, channel))
        channels.append(channel)
    return channels


def add_event(channel: Channel, event: IrcEvent) -> None:
    channel.transcript.add(channel_event_turns(event, channel.name))


def busy_round(channel: Channel, rng: random.Random, chatter: tuple[int, int] = (1, 3)) -> None:
    """A few lines of chatter, then someone addresses the bot."""
    for _ in range(rng.randint(*chatter)):
        add_event(channel, _event(rng, channel))
    asker = rng.choice(channel.members or NICKS)
    question = _fill(rng.choice(QUESTIONS), rng, channel.members)
    add_event(channel, Message(_origin(asker), channel.name, f"{BOT}: {question}"))


def naive_reply(engine: Any, prompt: Prompt, params: SamplingParams) -> tuple[str, int, int]:
    """The baseline: the full prompt tokenised again, one `generate` call, batch 1.

    Returns (text, generated tokens without the stop token, prompt tokens)."""
    import torch

    from relaybot.conversation.formats import cut_at_stops

    ids = (
        list(engine.bos_token_ids)
        + engine.tokenizer(prompt.text, add_special_tokens=False)["input_ids"]
    )
    sampling: dict[str, Any] = {"do_sample": False}
    if params.temperature > 0:
        sampling = {
            "do_sample": True,
            "temperature": params.temperature,
            "top_k": params.top_k,
            "top_p": params.top_p,
            "min_p": params.min_p,
        }
    stops = list(engine.stop_token_ids)
    with torch.inference_mode():
        output = engine.model.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones((1, len(ids)), dtype=torch.long),
            max_new_tokens=params.max_new_tokens,
            repetition_penalty=params.repetition_penalty,
            eos_token_id=stops,
            pad_token_id=stops[0],
            **sampling,
        )
    new = output[0, len(ids) :].tolist()
    cut = next((i for i, token in enumerate(new) if token in stops), len(new))
    text = engine.tokenizer.decode(new[:cut], skip_special_tokens=True)
    return cut_at_stops(text, prompt.stop).strip(), cut, len(ids)


class RecordingEngine:
    """Wraps the real engine for the worker: remembers each request's token counts, the rows
    each batch started with and how many rows joined a running batch."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.stats: dict[int, Any] = {}
        self.batch_sizes: list[int] = []
        self.joined = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def reset(self) -> None:
        self.stats.clear()
        self.batch_sizes.clear()
        self.joined = 0

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        self.batch_sizes.append(len(requests))
        texts: list[str] = self.engine.generate(requests)
        for index, request in enumerate(requests):
            self.stats[id(request)] = self.engine.last_stats[index]
        return texts

    def generate_each(self, requests: Sequence[GenerationRequest], done: Any) -> None:
        self.generate_continuous(requests, done, None, continuous=False)

    def generate_continuous(
        self,
        requests: Sequence[GenerationRequest],
        done: Any,
        feed: Any,
        *,
        max_rows: int = 8,
        continuous: bool = True,
    ) -> None:
        """Rows that join are numbered on after the first ones, in the order admitted."""
        self.batch_sizes.append(len(requests))
        order = list(requests)
        recorder = self

        class Feed:
            def admit(self, free: int, params: Any) -> Sequence[GenerationRequest]:
                admitted = feed.admit(free, params)
                order.extend(admitted)
                recorder.joined += len(admitted)
                return admitted

            def dropped(self, index: int) -> bool:
                return bool(feed.dropped(index))

        def recorded(index: int, text: str, cut: bool = False) -> None:
            self.stats[id(order[index])] = self.engine.last_stats[index]
            done(index, text, cut)

        if not continuous:
            self.engine.generate_each(requests, recorded)
            return
        self.engine.generate_continuous(
            requests, recorded, Feed() if feed is not None else None, max_rows=max_rows
        )


def load_engine(context_tokens: int, **kwargs: Any) -> Any:
    from relaybot.config.schema import ModelConfig
    from relaybot.inference.local.engine import TransformersEngine

    return TransformersEngine.load(
        ModelConfig(name="embedded", device="cpu", context_tokens=context_tokens), **kwargs
    )


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "latency_p50_s": round(percentile(values, 0.50), 3),
        "latency_p95_s": round(percentile(values, 0.95), 3),
        "latency_mean_s": round(statistics.fmean(values), 3) if values else float("nan"),
    }


def host_info() -> dict[str, Any]:
    import torch
    import transformers

    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": [round(value, 2) for value in load],
    }


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def save_chart(figure: Any, path: Path, title: str) -> None:
    """Title, lay out, write (PNG) and free a matplotlib figure."""
    import matplotlib.pyplot as plt

    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
