"""The names `relaybot` itself offers are the objects from their homes."""

from __future__ import annotations

import pytest

import relaybot
from relaybot.config.loader import load_config
from relaybot.config.schema import ConfigError, ModelConfig
from relaybot.conversation.api import Conversation


def test_public_names_are_the_homes_objects() -> None:
    assert relaybot.Conversation is Conversation
    assert relaybot.ModelConfig is ModelConfig
    assert relaybot.ConfigError is ConfigError
    assert relaybot.load_config is load_config
    assert all(getattr(relaybot, name) is not None for name in relaybot.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Relay'"):
        _ = relaybot.Relay  # type: ignore[attr-defined]
