"""Remote engines: the prompt goes, as one neutralised string, to an OpenAI-compatible
`/v1/completions` server (vLLM, `transformers serve`, llama.cpp's server; remote_openai) or to
TGI's `/generate` (remote_tgi). This module is what both share: the Engine protocol around a
RemoteClient. Transport, retries and the in-flight bound live in remote_http; running a batch's
requests side by side in remote_scheduling; flattening and token counting in remote_prompt.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import ClassVar, Self

from relaybot.config.schema import ModelConfig, RemoteConfig
from relaybot.conversation.formats import Prompt, cut_at_stops
from relaybot.inference.engine import BatchFeed, Done, GenerationRequest
from relaybot.inference.remote.http import RemoteClient
from relaybot.inference.remote.prompt import PLAIN_TEXT_MARKUP, Neutralizer, TokenCounter, flatten
from relaybot.inference.remote.responses import Fetched
from relaybot.inference.remote.scheduling import run_continuous
from relaybot.inference.selection import ModelUnavailable

# OpenAI's API takes at most four stop sequences (TGI's default limit is four too); the rest
# are still cut locally.
MAX_STOPS = 4


def api_stops(prompt: Prompt) -> list[str]:
    """The stop strings a request sends the server (the first MAX_STOPS)."""
    return [stop for stop in prompt.stop if stop][:MAX_STOPS]


class RemoteEngine:
    """What both remote engines share: the Engine protocol around a RemoteClient."""

    kind: ClassVar[str] = "remote"
    label: ClassVar[str] = "remote server"
    probe_paths: ClassVar[tuple[str, ...]] = ("/health",)

    def __init__(
        self,
        remote: RemoteConfig,
        *,
        context_window: int,
        counter: TokenCounter | None = None,
        neutralizer: Neutralizer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.remote = remote
        self.client = RemoteClient(remote, engine=self.kind, clock=clock)
        self.context_window = context_window
        self.counter = counter if counter is not None else TokenCounter(None)
        self.neutralize = neutralizer if neutralizer is not None else Neutralizer()
        model = f" (model {remote.model})" if remote.model else ""
        self.description = f"{self.label} {self.client.url}{model}"

    @classmethod
    def from_config(cls, config: ModelConfig) -> Self:
        """The engine for `[model]` and `[model.remote]`; ModelUnavailable when it cannot be
        set up (a CA file that is not readable)."""
        counter = TokenCounter.for_model(config)
        neutralizer = Neutralizer(
            extra_tokens=counter.special_tokens(), keep=PLAIN_TEXT_MARKUP.get(config.format, ())
        )
        try:
            return cls(
                config.remote,
                context_window=config.context_tokens,
                counter=counter,
                neutralizer=neutralizer,
            )
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(
                f"cannot set up the {cls.label} at {config.remote.url}: {exc}"
            ) from exc

    # --- the Engine protocol -----------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return self.counter.count(text)

    def render(self, prompt: Prompt) -> str:
        """The string the server gets: people's text neutralised, markup as it is."""
        return flatten(prompt, self.neutralize)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """All requests at once (the client's slots bound how many are open); when any
        fails the batch raises EngineError with the first failure's message."""
        if not requests:
            return []
        if len(requests) == 1:
            return [self.complete(requests[0]).text]
        results = [""] * len(requests)

        def done(index: int, text: str, cut: bool = False) -> None:
            results[index] = text

        self.generate_continuous(requests, done, None, max_rows=len(requests))
        return results

    def generate_continuous(
        self,
        requests: Sequence[GenerationRequest],
        done: Done,
        feed: BatchFeed | None,
        *,
        max_rows: int = 8,
    ) -> None:
        """Each request is its own HTTP request; a reply is reported when it arrives, and
        requests from `feed` start as soon as fewer than `max_rows` are open (see
        remote_scheduling). A failed request does not fail the others: EngineError names the
        failures at the end."""
        run_continuous(
            requests,
            self.complete,
            done,
            feed,
            max_rows=max_rows,
            interrupted=lambda: self.client.interrupted,
        )

    def interrupt(self) -> None:
        """Requests in progress give up at once; later ones fail fast (used at shutdown)."""
        self.client.interrupt()

    def probe(self) -> None:
        """Log whether the server answers; the bot starts either way."""
        self.client.probe([self.client.target.root_path(path) for path in self.probe_paths])

    def complete(self, request: GenerationRequest) -> Fetched:
        """The completion, cut at the prompt's stop strings (one found there means the model
        ended, whatever the server said) and stripped."""
        fetched = self._fetch(self.render(request.prompt), request)
        text = cut_at_stops(fetched.text, request.prompt.stop)
        return Fetched(text.strip(), fetched.cut and len(text) == len(fetched.text))

    def _fetch(self, text: str, request: GenerationRequest) -> Fetched:
        raise NotImplementedError
