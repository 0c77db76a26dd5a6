"""The engine for Hugging Face text-generation-inference: POST /generate, or /generate_stream
when streaming. Owns TGI's request body (its own sampling rules) and reading its answers,
whole or streamed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from relaybot.inference.engine import EngineError, GenerationRequest
from relaybot.inference.remote.engine import RemoteEngine, api_stops
from relaybot.inference.remote.responses import Fetched
from relaybot.inference.remote.streams import StopWatch, reported_error, stream_event


class _TgiStream:
    """`data: {"token": {"text": …, "special": …}, "generated_text": null | str}`; the last
    event carries the whole text."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._watch = StopWatch(stops)
        self._final: str | None = None
        self._length = False

    def feed(self, data: str) -> bool:
        chunk = stream_event(data)
        final = chunk.get("generated_text")
        if isinstance(final, str):
            self._final = final
            self._length = _finish_reason(chunk) == "length"
            return True
        token = chunk.get("token")
        if isinstance(token, dict) and not token.get("special"):
            return self._watch.add(str(token.get("text") or ""))
        return False

    @property
    def text(self) -> str:
        return self._final if self._final is not None else self._watch.text

    @property
    def cut(self) -> bool:
        return self._length


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
            "details": True,  # for its finish_reason: whether the token limit ended it
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
        stops = api_stops(request.prompt)
        if stops:
            parameters["stop"] = stops
        if params.seed is not None:
            parameters["seed"] = params.seed
        # TGI has no min_p.
        return {"inputs": text, "parameters": parameters}

    def _fetch(self, text: str, request: GenerationRequest) -> Fetched:
        body = self.body(text, request)
        if self.remote.stream:
            stops = request.prompt.stop
            path = self.client.target.api_path("/generate_stream")
            return self.client.post_stream(path, body, lambda: _TgiStream(stops))
        answer = self.client.post_json(self.client.target.api_path("/generate"), body)
        return _tgi_text(answer, self.client.url)


def _finish_reason(item: dict[str, Any]) -> object:
    details = item.get("details")
    return details.get("finish_reason") if isinstance(details, dict) else None


def _tgi_text(answer: Any, url: str) -> Fetched:
    # Inference Endpoints answer with a list of one; TGI itself with the object.
    item = answer[0] if isinstance(answer, list) and answer else answer
    text = item.get("generated_text") if isinstance(item, dict) else None
    if not isinstance(text, str):
        error = reported_error(item) if isinstance(item, dict) else None
        raise EngineError(
            f"remote server {url} sent an unusable answer: no generated_text in "
            f"{error or str(answer)[:200]}"
        )
    return Fetched(text, _finish_reason(item) == "length")
