"""Remote engines: the prompt goes, as one neutralised string, to an OpenAI-compatible
`/v1/completions` server (vLLM, `transformers serve`, llama.cpp's server) or to TGI's
`/generate`. Transport, retries and the in-flight bound live in remote_http; flattening and
token counting in remote_prompt.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Self

from relaybot.config.schema import ModelConfig, RemoteConfig
from relaybot.conversation.formats import Prompt, cut_at_stops
from relaybot.inference.engine import BatchFeed, EngineError, GenerationRequest, SamplingParams
from relaybot.inference.remote.http import RemoteClient, RemoteRejected, StreamError
from relaybot.inference.remote.prompt import PLAIN_TEXT_MARKUP, Neutralizer, TokenCounter, flatten
from relaybot.inference.selection import ModelUnavailable
from relaybot.log import get_logger

log = get_logger(component="engine")

# OpenAI's API takes at most four stop sequences (TGI's default limit is four too); the rest
# are still cut locally.
MAX_STOPS = 4
# How often a running batch looks for newly queued requests while its replies are out: small
# next to any network round trip.
_FEED_POLL_SECONDS = 0.02


def _stops(prompt: Prompt) -> list[str]:
    return [stop for stop in prompt.stop if stop][:MAX_STOPS]


class _StopWatch:
    """Accumulates streamed text and says when a stop string has appeared in it."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [stop for stop in stops if stop]
        self.longest = max((len(stop) for stop in self.stops), default=0)
        self.text = ""

    def add(self, piece: str) -> bool:
        # Only the new piece and the tail before it can hold a stop string not seen before.
        start = max(0, len(self.text) - self.longest + 1)
        self.text += piece
        return bool(piece) and any(self.text.find(stop, start) >= 0 for stop in self.stops)


def _stream_event(data: str) -> dict[str, Any]:
    """One SSE event's JSON object; a StreamError if it is not one or reports an error."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise StreamError(f"an event is not JSON: {data[:100]!r}") from None
    if not isinstance(chunk, dict):
        raise StreamError("an event is not a JSON object")
    error = _stream_error(chunk)
    if error is not None:
        raise StreamError(error)
    return chunk


def _stream_error(chunk: dict[str, Any]) -> str | None:
    error = chunk.get("error")
    if not error:
        return None
    if isinstance(error, dict):
        return str(error.get("message") or json.dumps(error))
    return str(error)


class _OpenAIStream:
    """`data: {"choices": [{"text": …, "finish_reason": …}]}` chunks, maybe ending `[DONE]`
    (`transformers serve` ends with a chunk that has a finish_reason instead)."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._watch = _StopWatch(stops)

    def feed(self, data: str) -> bool:
        if data.strip() == "[DONE]":
            return True
        chunk = _stream_event(data)
        finished = False
        stopped = False
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                text = choice.get("text")
                if isinstance(text, str):
                    stopped = self._watch.add(text) or stopped
                finished = finished or bool(choice.get("finish_reason"))
        return finished or stopped

    @property
    def text(self) -> str:
        return self._watch.text


class _TgiStream:
    """`data: {"token": {"text": …, "special": …}, "generated_text": null | str}`; the last
    event carries the whole text."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._watch = _StopWatch(stops)
        self._final: str | None = None

    def feed(self, data: str) -> bool:
        chunk = _stream_event(data)
        final = chunk.get("generated_text")
        if isinstance(final, str):
            self._final = final
            return True
        token = chunk.get("token")
        if isinstance(token, dict) and not token.get("special"):
            return self._watch.add(str(token.get("text") or ""))
        return False

    @property
    def text(self) -> str:
        return self._final if self._final is not None else self._watch.text


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
            return [self.complete(requests[0])]
        results = [""] * len(requests)
        self.generate_continuous(requests, results.__setitem__, None, max_rows=len(requests))
        return results

    def generate_continuous(
        self,
        requests: Sequence[GenerationRequest],
        done: Callable[[int, str], None],
        feed: BatchFeed | None,
        *,
        max_rows: int = 8,
    ) -> None:
        """Each request is its own HTTP request; a reply is reported when it arrives, and
        requests from `feed` start as soon as fewer than `max_rows` are open, without waiting
        for the others (the server batches them). A failed request does not fail the others:
        they are reported, and EngineError names the failures at the end. A dropped request's
        answer is not reported (the HTTP request itself runs to its end)."""
        finished: queue.Queue[tuple[int, str | None, BaseException | None]] = queue.Queue()
        open_indices: set[int] = set()
        dropped: set[int] = set()
        failures: list[BaseException] = []

        def run(index: int, request: GenerationRequest) -> None:
            try:
                finished.put((index, self.complete(request), None))
            except BaseException as exc:  # handed to the inference thread
                finished.put((index, None, exc))

        def start(index: int, request: GenerationRequest) -> None:
            open_indices.add(index)
            thread = threading.Thread(
                target=run, args=(index, request), name=f"relaybot-remote-{index}", daemon=True
            )
            thread.start()

        for index, request in enumerate(requests):
            start(index, request)
        admitted = len(requests)
        params = requests[0].params if requests else None
        while open_indices:
            try:
                index, text, error = finished.get(timeout=_FEED_POLL_SECONDS)
            except queue.Empty:
                pass
            else:
                open_indices.discard(index)
                if error is not None:
                    failures.append(error)
                elif index not in dropped:
                    done(index, text or "")
            if feed is None or params is None:
                continue
            dropped.update(index for index in open_indices if feed.dropped(index))
            free = max_rows - len(open_indices)
            if free > 0 and not self.client.interrupted:
                for request in feed.admit(free, params):
                    start(admitted, request)
                    admitted += 1
        for error in failures:
            if not isinstance(error, EngineError):
                raise error  # a bug: let the worker log it as engine_crashed
        if failures:
            raise EngineError(f"{failures[0]} ({len(failures)} of {admitted} requests failed)")

    def interrupt(self) -> None:
        """Requests in progress give up at once; later ones fail fast (used at shutdown)."""
        self.client.interrupt()

    def probe(self) -> None:
        """Log whether the server answers; the bot starts either way."""
        self.client.probe([self.client.target.root_path(path) for path in self.probe_paths])

    def complete(self, request: GenerationRequest) -> str:
        raw = self._fetch(self.render(request.prompt), request)
        return cut_at_stops(raw, request.prompt.stop).strip()

    def _fetch(self, text: str, request: GenerationRequest) -> str:
        raise NotImplementedError


# What to send beyond OpenAI's own sampling fields, tried in this order: vLLM's (and llama.cpp's)
# extra top-level fields; `transformers serve`, which refuses unknown fields with 422 but takes
# a `generation_config` JSON string (and samples only when that says do_sample); then nothing.
EXTRAS_TOP_LEVEL = "top-level"
EXTRAS_GENERATION_CONFIG = "generation_config"
EXTRAS_NONE = "none"
_EXTRAS_ORDER = (EXTRAS_TOP_LEVEL, EXTRAS_GENERATION_CONFIG, EXTRAS_NONE)
_EXTRAS_FIELDS = {
    EXTRAS_TOP_LEVEL: ("top_k", "min_p", "repetition_penalty"),
    EXTRAS_GENERATION_CONFIG: ("generation_config",),
}


class OpenAICompletionsEngine(RemoteEngine):
    """POST /v1/completions (the legacy text API: the prompt is sent as rendered)."""

    kind = "openai"
    label = "OpenAI-compatible server"
    probe_paths = ("/health", "/v1/models")

    def __init__(self, remote: RemoteConfig, **kwargs: Any) -> None:
        super().__init__(remote, **kwargs)
        self._extras = EXTRAS_TOP_LEVEL
        self._extras_lock = threading.Lock()

    @property
    def extras(self) -> str:
        """How top_k, min_p and repetition_penalty are sent now (see _EXTRAS_ORDER)."""
        with self._extras_lock:
            return self._extras

    def body(self, text: str, request: GenerationRequest, extras: str) -> dict[str, Any]:
        params = request.params
        body: dict[str, Any] = {"prompt": text, "max_tokens": params.max_new_tokens}
        if self.remote.model:
            body["model"] = self.remote.model
        body["temperature"] = max(0.0, params.temperature)
        if 0.0 < params.top_p <= 1.0:
            body["top_p"] = params.top_p
        stops = _stops(request.prompt)
        if stops:
            body["stop"] = stops
        if params.seed is not None:
            body["seed"] = params.seed
        if self.remote.stream:
            body["stream"] = True
        if extras == EXTRAS_TOP_LEVEL:
            if params.top_k > 0:
                body["top_k"] = params.top_k
            if params.min_p > 0:
                body["min_p"] = params.min_p
            body["repetition_penalty"] = params.repetition_penalty
        elif extras == EXTRAS_GENERATION_CONFIG:
            config = _generation_config(params)
            if self.counter.eos_token_id is not None:
                # The model's own config, EOS included, is replaced: without this only the
                # stop strings would end a generation.
                config["eos_token_id"] = self.counter.eos_token_id
            body["generation_config"] = json.dumps(config)
        return body

    def _fetch(self, text: str, request: GenerationRequest) -> str:
        path = self.client.target.api_path("/v1/completions")
        stops = request.prompt.stop
        while True:
            extras = self.extras
            body = self.body(text, request, extras)
            try:
                if self.remote.stream:
                    return self.client.post_stream(path, body, lambda: _OpenAIStream(stops))
                return _openai_text(self.client.post_json(path, body), self.client.url)
            except RemoteRejected as exc:
                if not self._fall_back(extras, exc):
                    raise

    def _fall_back(self, extras: str, rejected: RemoteRejected) -> bool:
        """True when the request should be sent again with fewer extras: the server refused
        the fields this mode adds (400/422 naming them)."""
        with self._extras_lock:
            if self._extras != extras:
                return True  # another request already stepped down
            fields = _EXTRAS_FIELDS.get(extras, ())
            named = [field for field in fields if field in rejected.detail]
            if rejected.status not in (400, 422) or not named:
                return False
            self._extras = _EXTRAS_ORDER[_EXTRAS_ORDER.index(extras) + 1]
            log.warning(
                "remote_sampling_fields_rejected",
                engine=self.kind,
                url=self.client.url,
                rejected=named,
                now=self._extras,
                detail=rejected.detail,
            )
            return True


def _generation_config(params: SamplingParams) -> dict[str, Any]:
    """transformers' GenerationConfig fields for `transformers serve`. It replaces the
    model's own generation config, so everything that matters is spelled out."""
    config: dict[str, Any] = {
        "max_new_tokens": params.max_new_tokens,
        "repetition_penalty": params.repetition_penalty,
    }
    if params.temperature > 0:
        config.update(do_sample=True, temperature=params.temperature)
        if params.top_k > 0:
            config["top_k"] = params.top_k
        if 0.0 < params.top_p < 1.0:
            config["top_p"] = params.top_p
        if params.min_p > 0:
            config["min_p"] = params.min_p
    else:
        config["do_sample"] = False
    return config


def _openai_text(answer: Any, url: str) -> str:
    try:
        text = answer["choices"][0]["text"]
    except (KeyError, IndexError, TypeError):
        text = None
    if not isinstance(text, str):
        error = _stream_error(answer) if isinstance(answer, dict) else None
        raise EngineError(
            f"remote server {url} sent an unusable answer: no choices[0].text in "
            f"{error or str(answer)[:200]}"
        )
    return text


class TgiEngine(RemoteEngine):
    """POST /generate (or /generate_stream) of Hugging Face text-generation-inference."""

    kind = "tgi"
    label = "TGI server"
    probe_paths = ("/health", "/info")

    def body(self, text: str, request: GenerationRequest) -> dict[str, Any]:
        params = request.params
        parameters: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "return_full_text": False,
            "details": False,
        }
        if params.temperature > 0:
            parameters["do_sample"] = True
            parameters["temperature"] = params.temperature
            if params.top_k > 0:
                parameters["top_k"] = params.top_k
            if 0.0 < params.top_p < 1.0:  # TGI refuses 1.0
                parameters["top_p"] = params.top_p
        else:
            # TGI refuses temperature 0, and any top_k/top_p/temperature turns sampling on.
            parameters["do_sample"] = False
        if params.repetition_penalty > 0 and params.repetition_penalty != 1.0:
            parameters["repetition_penalty"] = params.repetition_penalty
        stops = _stops(request.prompt)
        if stops:
            parameters["stop"] = stops
        if params.seed is not None:
            parameters["seed"] = params.seed
        # TGI has no min_p.
        return {"inputs": text, "parameters": parameters}

    def _fetch(self, text: str, request: GenerationRequest) -> str:
        body = self.body(text, request)
        if self.remote.stream:
            stops = request.prompt.stop
            path = self.client.target.api_path("/generate_stream")
            return self.client.post_stream(path, body, lambda: _TgiStream(stops))
        answer = self.client.post_json(self.client.target.api_path("/generate"), body)
        return _tgi_text(answer, self.client.url)


def _tgi_text(answer: Any, url: str) -> str:
    # Inference Endpoints answer with a list of one; TGI itself with the object.
    item = answer[0] if isinstance(answer, list) and answer else answer
    text = item.get("generated_text") if isinstance(item, dict) else None
    if not isinstance(text, str):
        error = _stream_error(item) if isinstance(item, dict) else None
        raise EngineError(
            f"remote server {url} sent an unusable answer: no generated_text in "
            f"{error or str(answer)[:200]}"
        )
    return text
