"""Unit tests for relaybot.inference.served: the names `!relay model` may choose, by engine."""

from __future__ import annotations

import pytest

from relaybot.config.schema import ModelConfig, RemoteConfig
from relaybot.inference.served import LOCAL_KEEPS_ONE, TGI_SERVES_ONE, ServedModels


def openai(model: str | None, *models: str) -> ServedModels:
    remote = RemoteConfig(model=model, models=models)
    return ServedModels.from_config(ModelConfig(engine="openai", remote=remote))


def test_the_configured_model_is_always_allowed_and_listed_first() -> None:
    served = openai("a", "b", "a", "c")
    assert served.allowed == ("a", "b", "c")
    assert served.refusal("a") is None and served.refusal("c") is None
    assert served.cannot_switch is None


def test_an_empty_list_allows_only_the_configured_model() -> None:
    served = openai("a")
    assert served.allowed == ("a",)
    assert served.refusal("b") == (
        "model 'b' is not on the list; allowed: a (the list is [model.remote] models in the config)"
    )


def test_names_are_matched_exactly() -> None:
    assert openai("a", "Big-Model").refusal("big-model") is not None


def test_without_a_configured_model_the_server_default_applies() -> None:
    served = openai(None, "b")
    assert served.allowed == ("b",)
    assert served.describe(None) == "the server's default"
    assert served.describe("b") == "b"
    assert openai(None).refusal("b") == (
        "model 'b' is not on the list; allowed: none (the list is [model.remote] models in the"
        " config)"
    )


@pytest.mark.parametrize(
    ("engine", "reason"), [("local", LOCAL_KEEPS_ONE), ("tgi", TGI_SERVES_ONE)]
)
def test_engines_that_serve_one_model_cannot_switch(engine: str, reason: str) -> None:
    config = ModelConfig(
        engine=engine, name="embedded", remote=RemoteConfig(model="a", models=("b",))
    )
    served = ServedModels.from_config(config)
    assert served.allowed == ()
    assert served.cannot_switch == reason
    assert served.refusal("a") == reason and served.refusal("b") == reason


def test_what_the_engines_that_cannot_switch_are_said_to_run() -> None:
    local = ServedModels.from_config(ModelConfig(engine="local", name="embedded"))
    assert local.describe(None) == "embedded"
    loaded = ServedModels.from_config(ModelConfig(engine="local"), loaded="SmolLM2 on cpu")
    assert loaded.describe(None) == "SmolLM2 on cpu"  # not `auto`
    tgi = ServedModels.from_config(ModelConfig(engine="tgi", remote=RemoteConfig(model="a")))
    assert tgi.describe(None) == "the one the server runs"


def test_the_local_message_says_how_to_change_the_model() -> None:
    assert "[model] name" in LOCAL_KEEPS_ONE and "systemctl restart relaybot" in LOCAL_KEEPS_ONE
