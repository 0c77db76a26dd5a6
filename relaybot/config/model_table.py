"""Reads the `[model]` table and its `[model.remote]` server, with the defaults a preset
brings."""

from __future__ import annotations

import urllib.parse
from typing import Any

from relaybot.config.schema import ATTENTION_CHOICES, ModelConfig, RemoteConfig
from relaybot.config.section import Section, overridden_bounds
from relaybot.conversation.instruct import FORMAT_NAMES
from relaybot.inference.presets import preset_named


def read_model(section: Section) -> ModelConfig:
    name = section.get("name", str) or section.default("name", str)  # "" reads as the default
    # A preset's format, stops and sampling become those keys' defaults (before any is read);
    # keys written in the config still win.
    section.derive(**preset_defaults(name))
    seed = section.optional("seed", int)
    engine = section.choice("engine", ("local", "openai", "tgi"))
    remote = _remote(section.sub_or_empty("remote"))
    config = ModelConfig(
        engine=engine,
        remote=remote,
        name=name,
        gguf_file=section.optional_str("gguf_file"),
        device=section.choice("device", ("auto", "cpu", "cuda")),
        dtype=section.choice("dtype", ("auto", "bfloat16", "float16", "float32")),
        quantization=section.choice("quantization", ("auto", "none", "8bit", "4bit")),
        allow_download=section.get("allow_download", bool),
        cache_dir=section.optional_str("cache_dir"),
        context_tokens=section.number("context_tokens", int, 256),
        max_new_tokens=section.number(
            "max_new_tokens", int, *overridden_bounds("model.max_new_tokens")
        ),
        temperature=section.number("temperature", float, *overridden_bounds("model.temperature")),
        top_k=section.number("top_k", int, *overridden_bounds("model.top_k")),
        top_p=section.number("top_p", float, *overridden_bounds("model.top_p")),
        min_p=section.number("min_p", float, 0.0, 1.0),
        repetition_penalty=section.number("repetition_penalty", float, 0.5, 5.0),
        max_batch=section.number("max_batch", int, 1, 256),
        seed=None if seed is not None and seed < 0 else seed,  # negative: no fixed seed
        format=section.choice("format", FORMAT_NAMES),
        stop=section.str_list("stop"),
        qa=section.get("qa", bool),
        prefix_cache_entries=section.number("prefix_cache_entries", int, 0, 100_000),
        prefix_cache_mib=section.number("prefix_cache_mib", int, 1),
        attention=section.choice("attention", ATTENTION_CHOICES),
        warmup=section.get("warmup", bool),
    )
    if any(not stop for stop in config.stop):
        raise section.fail("stop", "stop strings must not be empty")
    if config.max_new_tokens >= config.context_tokens:
        raise section.fail("max_new_tokens", "must be smaller than model.context_tokens")
    section.finish()
    return config


def preset_defaults(name: str) -> dict[str, Any]:
    """The defaults a preset brings, by ModelConfig field; none when `name` is no preset."""
    preset = preset_named(name)
    if preset is None:
        return {}
    sampling = preset.sampling
    return {
        "format": preset.format,
        "stop": preset.stop,
        "qa": preset.closed_context_qa,
        "context_tokens": preset.context_tokens,
        "max_new_tokens": sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "top_k": sampling.top_k,
        "top_p": sampling.top_p,
        "min_p": sampling.min_p,
        "repetition_penalty": sampling.repetition_penalty,
    }


def _remote_url(section: Section) -> str:
    """The server's base URL, checked as the HTTP client will read it (remote_http.Target)."""
    url = section.get("url", str).rstrip("/")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise section.fail("url", f"must not contain spaces or control characters, got {url!r}")
    try:
        parsed = urllib.parse.urlsplit(url)
        usable = parsed.scheme in ("http", "https") and bool(parsed.hostname)
    except ValueError:  # such as an unclosed [IPv6 address
        usable = False
    if not usable:
        raise section.fail("url", f"expected an http:// or https:// URL, got {url!r}")
    try:
        port = parsed.port  # None when the URL gives none (80 or 443 then)
    except ValueError:  # not a number, or above 65535
        port = 0
    if port is not None and not 1 <= port <= 65535:
        raise section.fail("url", f"the port must be a number from 1 to 65535, got {url!r}")
    if parsed.query or parsed.fragment or url.endswith(("?", "#")):
        raise section.fail("url", f"must not have a query or fragment, got {url!r}")
    return url


def _model_names(section: Section) -> tuple[str, ...]:
    """`models`: names as a request body and an IRC command carry them, each once."""
    names = section.str_list("models")
    for name in names:
        if not name or any(c.isspace() or not c.isprintable() for c in name):
            raise section.fail("models", f"a model name must be one word, got {name!r}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise section.fail("models", f"names {', '.join(map(repr, duplicates))} more than once")
    return names


def _remote(section: Section) -> RemoteConfig:
    config = RemoteConfig(
        url=_remote_url(section),
        model=section.optional_str("model"),
        models=_model_names(section),
        api_key=section.secret("api_key"),
        timeout=section.number("timeout", float, 0.1, 3600.0),
        connect_timeout=section.number("connect_timeout", float, 0.1, 600.0),
        retries=section.number("retries", int, 0, 20),
        retry_backoff=section.number("retry_backoff", float, 0.0, 60.0),
        max_in_flight=section.number("max_in_flight", int, 1, 1024),
        stream=section.get("stream", bool),
        tls_verify=section.get("tls_verify", bool),
        ca_file=section.file("ca_file"),
    )
    section.finish()
    return config
