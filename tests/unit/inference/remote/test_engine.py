"""Tests for relaybot.inference.remote.engine end to end: built from config and by the factory."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from relaybot.config.schema import ModelConfig
from relaybot.conversation.families import Llama2Format
from relaybot.inference.factory import load_engine
from relaybot.inference.remote.engine import RemoteEngine
from relaybot.inference.remote.openai import OpenAICompletionsEngine
from relaybot.inference.remote.tgi import TgiEngine
from relaybot.inference.selection import ModelUnavailable
from tests.support.remote_server import HOST, Handler, Seen, closed_port, remote


def test_from_config_keeps_the_markup_of_the_configured_format() -> None:
    config = ModelConfig(engine="openai", format="llama2", remote=remote("http://127.0.0.1:9"))
    engine = OpenAICompletionsEngine.from_config(config)
    prompt = Llama2Format().instruction("sys", "user")
    assert engine.render(prompt) == prompt.text
    relay = OpenAICompletionsEngine.from_config(replace(config, format="relay"))
    assert "[INST]" not in relay.render(prompt)


# --- the factory --------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "cls"), [("openai", OpenAICompletionsEngine), ("tgi", TgiEngine)])
def test_factory_builds_the_engine_and_only_warns_when_the_server_is_down(
    kind: str, cls: type[RemoteEngine]
) -> None:
    url = f"http://{HOST}:{closed_port()}"
    config = ModelConfig(engine=kind, remote=remote(url), context_tokens=4096)
    started = time.monotonic()
    with capture_logs() as logs:
        engine = load_engine(config)
    assert time.monotonic() - started < 5.0
    assert isinstance(engine, cls)
    assert url in engine.description
    assert engine.context_window == 4096
    [warning] = [entry for entry in logs if entry["event"] == "remote_unreachable"]
    assert warning["log_level"] == "warning"
    assert "connection refused" in warning["error"]


def test_factory_probe_finds_the_health_endpoint_at_the_root(serve: Any) -> None:
    server = serve(lambda handler, seen: handler.send_json(200, {"status": "ok"}))
    config = ModelConfig(engine="openai", remote=remote(server.url + "/v1"))
    with capture_logs() as logs:
        load_engine(config)
    assert [seen.path for seen in server.seen] == ["/health"]
    assert [entry["event"] for entry in logs if entry["event"].startswith("remote_")] == [
        "remote_ready"
    ]


def test_factory_probe_tries_the_models_list_when_there_is_no_health(serve: Any) -> None:
    def no_health(handler: Handler, seen: Seen) -> None:
        if seen.path == "/health":
            handler.send_json(404, {"detail": "Not Found"})
        else:
            handler.send_json(200, {"data": []})

    server = serve(no_health)
    with capture_logs() as logs:
        load_engine(ModelConfig(engine="openai", remote=remote(server.url)))
    assert [seen.path for seen in server.seen] == ["/health", "/v1/models"]
    ready = [entry for entry in logs if entry["event"] == "remote_ready"]
    assert ready[0]["path"] == "/v1/models"


def test_an_unreadable_ca_file_is_a_setup_error(tmp_path: Path) -> None:
    config = ModelConfig(
        engine="tgi",
        remote=remote("https://127.0.0.1:9", ca_file=str(tmp_path / "missing.pem")),
    )
    with pytest.raises(ModelUnavailable, match="cannot set up the TGI server"):
        load_engine(config)
