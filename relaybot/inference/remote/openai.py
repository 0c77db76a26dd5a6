"""The engine for OpenAI-compatible servers (vLLM, `transformers serve`, llama.cpp's server):
POST /v1/completions, the legacy text API, with the prompt sent as rendered. Owns the request
body, the fallback for servers that refuse sampling fields OpenAI lacks, and reading answers,
whole or streamed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

from relaybot.config.schema import RemoteConfig
from relaybot.inference.engine import EngineError, GenerationRequest, SamplingParams
from relaybot.inference.remote.engine import RemoteEngine, api_stops
from relaybot.inference.remote.failures import RemoteRejected
from relaybot.inference.remote.responses import Fetched
from relaybot.inference.remote.streams import StopWatch, reported_error, stream_event
from relaybot.log import get_logger

log = get_logger(component="engine")


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


class _OpenAIStream:
    """`data: {"choices": [{"text": …, "finish_reason": …}]}` chunks, maybe ending `[DONE]`
    (`transformers serve` ends with a chunk that has a finish_reason instead)."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._watch = StopWatch(stops)
        self._length = False

    def feed(self, data: str) -> bool:
        if data.strip() == "[DONE]":
            return True
        chunk = stream_event(data)
        finished = False
        stopped = False
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                text = choice.get("text")
                if isinstance(text, str):
                    stopped = self._watch.add(text) or stopped
                reason = choice.get("finish_reason")
                finished = finished or bool(reason)
                self._length = self._length or (reason == "length" and not stopped)
        return finished or stopped

    @property
    def cut(self) -> bool:
        return self._length

    @property
    def text(self) -> str:
        return self._watch.text


class OpenAICompletionsEngine(RemoteEngine):
    """POST /v1/completions (the legacy text API: the prompt is sent as rendered)."""

    kind = "openai"
    label = "OpenAI-compatible server"
    probe_paths = ("/health", "/v1/models")

    def __init__(self, remote: RemoteConfig, **kwargs: Any) -> None:
        super().__init__(remote, **kwargs)
        # Per served model: a server (or a router in front of several) may take the extra
        # fields for one model and refuse them for another, and one model's refusal must not
        # take them from the others. Keyed by the name sent (None: no name).
        self._extras: dict[str | None, str] = {}
        self._extras_lock = threading.Lock()

    def served(self, request: GenerationRequest) -> str | None:
        """The model name the request's body carries: its chosen one, else the configured."""
        return request.model or self.remote.model

    def extras_for(self, model: str | None) -> str:
        """How top_k, min_p and repetition_penalty are sent now to `model` (see
        _EXTRAS_ORDER)."""
        with self._extras_lock:
            return self._extras.get(model, EXTRAS_TOP_LEVEL)

    @property
    def extras(self) -> str:
        """How the extras are sent now to the configured model."""
        return self.extras_for(self.remote.model)

    def body(self, text: str, request: GenerationRequest, extras: str) -> dict[str, Any]:
        params = request.params
        body: dict[str, Any] = {"prompt": text, "max_tokens": params.max_new_tokens}
        model = self.served(request)
        if model:
            body["model"] = model
        body["temperature"] = max(0.0, params.temperature)
        if 0.0 < params.top_p <= 1.0:
            body["top_p"] = params.top_p
        stops = api_stops(request.prompt)
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
            if self.counter.eos_token_id is not None and model == self.remote.model:
                # The model's own config, EOS included, is replaced: without this only the
                # stop strings would end a generation. The local tokenizer is the configured
                # model's: another model chosen by name may end on another id.
                config["eos_token_id"] = self.counter.eos_token_id
            body["generation_config"] = json.dumps(config)
        return body

    def _fetch(self, text: str, request: GenerationRequest) -> Fetched:
        path = self.client.target.api_path("/v1/completions")
        stops = request.prompt.stop
        model = self.served(request)
        while True:
            extras = self.extras_for(model)
            body = self.body(text, request, extras)
            try:
                if self.remote.stream:
                    return self.client.post_stream(path, body, lambda: _OpenAIStream(stops))
                return _openai_text(self.client.post_json(path, body), self.client.url)
            except RemoteRejected as exc:
                if not self._fall_back(model, extras, exc):
                    raise

    def _fall_back(self, model: str | None, extras: str, rejected: RemoteRejected) -> bool:
        """True when the request should be sent again with fewer extras: the server refused
        the fields this mode adds (400/422 naming them) for `model`."""
        with self._extras_lock:
            now = self._extras.get(model, EXTRAS_TOP_LEVEL)
            if now != extras:
                return True  # another request already stepped down
            fields = _EXTRAS_FIELDS.get(extras, ())
            named = [field for field in fields if field in rejected.detail]
            if rejected.status not in (400, 422) or not named:
                return False
            now = self._extras[model] = _EXTRAS_ORDER[_EXTRAS_ORDER.index(extras) + 1]
            log.warning(
                "remote_sampling_fields_rejected",
                engine=self.kind,
                url=self.client.url,
                model=model,
                rejected=named,
                now=now,
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


def _openai_text(answer: Any, url: str) -> Fetched:
    try:
        text = answer["choices"][0]["text"]
        reason = answer["choices"][0].get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError):
        text = reason = None
    if not isinstance(text, str):
        error = reported_error(answer) if isinstance(answer, dict) else None
        raise EngineError(
            f"remote server {url} sent an unusable answer: no choices[0].text in "
            f"{error or str(answer)[:200]}"
        )
    return Fetched(text, reason == "length")
