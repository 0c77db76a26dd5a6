"""The loader declares no defaults of its own: every key left out reads as the default its
schema dataclass declares, apart from the documented derived defaults."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from relaybot.config.loader import loads_config
from relaybot.config.schema import (
    ChannelConfig,
    Config,
    FloodConfig,
    IrcConfig,
    LogConfig,
    MetricsConfig,
    ModelConfig,
    ModerationConfig,
    ModerationHookConfig,
    NetworkConfig,
    OperatorConfig,
    PolicyConfig,
    RemoteConfig,
    ReplyConfig,
    StateConfig,
)
from relaybot.inference.presets import preset_named

MINIMAL = """
[irc]
host = "irc.example.net"
nick = "relaybot"
"""

EVERY_TABLE = ("reply", "model", "model.remote", "log", "policy", "operators", "moderation")
EVERY_TABLE += ("state", "irc.flood", "metrics")


def _with_empty_tables() -> str:
    text = MINIMAL
    for table in EVERY_TABLE:
        text += f"[{table}]\n"
    return text


def test_left_out_keys_read_as_the_dataclass_defaults() -> None:
    config = loads_config(MINIMAL)
    assert config.networks[0].irc == IrcConfig(host="irc.example.net", nick="relaybot")
    assert config.networks[0].irc.flood == FloodConfig()
    assert config.networks[0].reply == ReplyConfig()
    assert config.model == ModelConfig()
    assert config.model.remote == RemoteConfig()
    assert config.log == LogConfig()
    # The one derived default: policy.max_concurrent follows model.max_batch.
    assert config.networks[0].policy == PolicyConfig(max_concurrent=ModelConfig().max_batch)
    assert config.networks[0].operators == OperatorConfig()
    assert config.networks[0].moderation == ModerationConfig()
    assert config.state == StateConfig()
    assert config.metrics == MetricsConfig()


def test_empty_tables_read_like_left_out_ones() -> None:
    assert loads_config(_with_empty_tables()) == loads_config(MINIMAL)


def test_the_tls_port_is_the_derived_port_default() -> None:
    config = loads_config(MINIMAL + "tls = true\n")
    assert config.networks[0].irc.port == IrcConfig.TLS_PORT
    assert loads_config(MINIMAL + "tls = true\nport = 7000\n").networks[0].irc.port == 7000


def test_a_preset_fills_the_model_defaults_it_knows() -> None:
    preset = preset_named("relay")
    assert preset is not None
    model = loads_config(MINIMAL + '[model]\nname = "relay"\ntop_k = 7\n').model
    assert (model.context_tokens, model.format, model.stop) == (
        preset.context_tokens,
        preset.format,
        preset.stop,
    )
    assert model.temperature == preset.sampling.temperature
    assert model.top_k == 7  # a key the file gives wins over the preset
    assert model.max_batch == ModelConfig().max_batch  # a key no preset sets: the schema's


# --- the defaults come from the schema, whatever it declares -----------------------------------

# Valid values other than the shipped defaults, for the keys whose change cannot be derived
# from the type alone (bool, int and float defaults are changed by `_another`).
OTHER = {
    "irc.network": "othernet",
    "irc.alt_nicks": ("relaybot_",),
    "irc.username": "user",
    "irc.realname": "someone",
    "irc.channels": (ChannelConfig("#other"),),
    "irc.invite_from": ("*!*@example.org",),
    "irc.invite_accounts": ("acct",),
    "irc.fallback_servers": (("irc.example.org", 6697),),
    "irc.tls_fingerprints": ("ab" * 32,),
    "model.engine": "openai",
    "model.name": "my-model",
    "model.gguf_file": "model.gguf",
    "model.device": "cpu",
    "model.dtype": "float32",
    "model.quantization": "none",
    "model.cache_dir": "/var/cache/models",
    "model.seed": 7,
    "model.format": "chatml",
    "model.stop": ("END",),
    "model.attention": "eager",
    "model.remote.url": "https://example.org:8443/v1",
    "model.remote.model": "served-model",
    "model.remote.models": ("other-model",),
    "log.level": "debug",
    "log.format": "json",
    "policy.max_concurrent": 3,  # not model.max_batch: the test sees it is derived from that
    "policy.ignore": ("spammer",),
    "operators.prefix": "!bot",
    "operators.accounts": ("admin",),
    "operators.hostmasks": ("admin!*@example.org",),
    "moderation.hooks": (ModerationHookConfig("words", {"words": ["x"]}),),
    "state.dir": "/var/lib/relaybot",
    "metrics.address": "::1",
}

# Keys the test leaves at their default: tables read as None when left out (irc.sasl,
# irc.nickserv) and secrets are None unless the file names one; a file path must exist to load.
UNCHANGED = {
    "irc.host",
    "irc.nick",
    "irc.tls",  # changing it changes irc.port's default too; see the TLS port test
    "irc.sasl",
    "irc.nickserv",
    "irc.password",
    "irc.ca_file",
    "irc.client_cert_file",
    "irc.client_key_file",
    "model.remote.api_key",
    "model.remote.ca_file",
}


def _another(key: str, value: object) -> object:
    if key in OTHER:
        return OTHER[key]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.5
    return value


def _changed(path: str, instance: Any) -> Any:
    """`instance` with every key changed that the test changes (tables recursively)."""
    changes = {}
    for item in dataclasses.fields(instance):
        key = f"{path}.{item.name}"
        value = getattr(instance, item.name)
        if key in UNCHANGED:
            continue
        new = _changed(key, value) if dataclasses.is_dataclass(value) else _another(key, value)
        assert new != value, f"{key}: give the test another valid value for it in OTHER"
        changes[item.name] = new
    return dataclasses.replace(instance, **changes)


def _declare(monkeypatch: pytest.MonkeyPatch, schema: type[Any], defaults: Any) -> None:
    """Make `schema` declare the fields of `defaults` as its field defaults."""
    for item in dataclasses.fields(schema):
        if item.default is not dataclasses.MISSING:
            monkeypatch.setattr(item, "default", getattr(defaults, item.name))


def test_every_left_out_key_follows_what_the_schema_declares(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shipped = loads_config(MINIMAL)
    irc = _changed("irc", shipped.networks[0].irc)
    model = _changed("model", ModelConfig())
    other_net = NetworkConfig(
        irc=irc,
        reply=_changed("reply", ReplyConfig()),
        policy=_changed("policy", PolicyConfig()),
        operators=_changed("operators", OperatorConfig()),
        moderation=_changed("moderation", ModerationConfig()),
    )
    other = Config(
        networks=(other_net,),
        model=model,
        log=_changed("log", LogConfig()),
        state=_changed("state", StateConfig()),
        metrics=_changed("metrics", MetricsConfig()),
    )
    _declare(monkeypatch, IrcConfig, irc)
    _declare(monkeypatch, NetworkConfig, other_net)
    _declare(monkeypatch, Config, other)

    for text in (MINIMAL, _with_empty_tables()):
        config = loads_config(text)
        assert config.networks[0].irc == irc
        assert config.model == model
        # policy.max_concurrent still follows model.max_batch, not PolicyConfig's default.
        assert config.networks[0].policy == dataclasses.replace(
            other_net.policy, max_concurrent=model.max_batch
        )
        net = dataclasses.replace(other_net, policy=config.networks[0].policy)
        assert config == dataclasses.replace(other, networks=(net,))
        assert config != shipped
