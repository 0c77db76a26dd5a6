"""Configuration: frozen dataclasses loaded from TOML with errors that name the key path.

Secrets are never written inline: they come from files (systemd credentials) or the
environment, and are wrapped so that logging a config never prints them.
"""

from __future__ import annotations

import math
import os
import tomllib
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from relaybot.config.channel_settings import spec_for
from relaybot.conversation.instruct import FORMAT_NAMES
from relaybot.inference.presets import preset_named
from relaybot.irc.text import is_channel_name

T = TypeVar("T")


class ConfigError(ValueError):
    """A config problem, phrased as `key.path: what is wrong`."""


@dataclass(frozen=True, slots=True)
class Secret:
    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    name: str
    key: Secret | None = None


@dataclass(frozen=True, slots=True)
class SaslConfig:
    username: str
    password: Secret | None  # None for EXTERNAL (the client certificate is the credential)
    mechanism: str = "PLAIN"  # PLAIN | EXTERNAL


@dataclass(frozen=True, slots=True)
class FloodConfig:
    """Outgoing pacing: a burst, then one line per `interval` plus a cost per byte."""

    # Measured (bench/flood_probe.py): InspIRCd 3's defaults take 10 lines at once, then
    # 1 line/s, and kill a client holding more than 4096 unread bytes; ngIRCd only delays.
    burst: int = 5
    interval: float = 1.1
    bytes_per_second: int = 2048
    max_queued: int = 1000


@dataclass(frozen=True, slots=True)
class IrcConfig:
    host: str
    nick: str
    network: str = "default"
    port: int = 6667
    tls: bool = False
    tls_verify: bool = True
    ca_file: str | None = None
    password: Secret | None = None
    alt_nicks: tuple[str, ...] = ()
    username: str | None = None
    realname: str = "relaybot"
    channels: tuple[ChannelConfig, ...] = ()
    invite_from: tuple[str, ...] = ()  # hostmask globs allowed to invite the bot
    invite_accounts: tuple[str, ...] = ()  # services accounts allowed to invite the bot
    rejoin_on_kick: bool = False
    rejoin_delay: float = 10.0
    connect_timeout: float = 15.0
    sasl: SaslConfig | None = None
    flood: FloodConfig = FloodConfig()
    set_bot_mode: bool = True
    fallback_servers: tuple[tuple[str, int], ...] = ()  # tried in turn after host:port
    client_cert_file: str | None = None  # TLS client certificate (SASL EXTERNAL, CertFP)
    client_key_file: str | None = None
    tls_fingerprints: tuple[str, ...] = ()  # accepted server certificate SHA-256 pins (hex)
    ping_interval: float = 60.0  # seconds of silence before the bot PINGs the server
    ping_timeout: float = 60.0  # seconds to wait for the answer before reconnecting
    reconnect_min: float = 5.0
    reconnect_max: float = 300.0
    stable_after: float = 60.0  # a connection up this long resets the backoff


@dataclass(frozen=True, slots=True)
class ReplyConfig:
    on_mention: bool = True
    in_query: bool = True
    chance: float = 0.0
    max_lines: int = 3


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Incoming budgets, loop guards and ignore lists."""

    user_burst: int = 3  # replies to one person before the budget bites
    user_per_minute: float = 4.0
    channel_burst: int = 5
    channel_per_minute: float = 10.0
    cooldown: float = 2.0  # seconds between two replies in one conversation
    # Replies being generated at once, all conversations together. A file that leaves it out
    # gets model.max_batch, so that every reply that may run can share one decode batch.
    max_concurrent: int = 8
    max_waiting: int = 64  # conversations waiting for a generation slot
    ignore_bots: bool = True  # ignore lines tagged `bot` and users in bot mode
    loop_limit: int = 10  # replies in a row to one nick with nobody else speaking
    loop_reset: float = 120.0  # a pause this long ends such a streak
    repeat_window: float = 300.0  # the same line from one nick within this is not answered
    ignore: tuple[str, ...] = ()  # nick globs, nick!user@host globs, or $a:account


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    prefix: str = "!relay"
    accounts: tuple[str, ...] = ()  # services accounts that are bot operators
    hostmasks: tuple[str, ...] = ()  # nick!user@host globs that are bot operators
    channel_ops: bool = False  # channel operators may use channel-scoped commands there


@dataclass(frozen=True, slots=True)
class ModerationHookConfig:
    use: str  # a built-in or entry point name, or a dotted path `package.module:Name`
    options: Mapping[str, Any] = field(default_factory=dict)
    where: str = "moderation.hooks[0]"  # the config key path, for error messages


@dataclass(frozen=True, slots=True)
class ModerationConfig:
    hooks: tuple[ModerationHookConfig, ...] = ()
    timeout: float = 2.0  # seconds per hook call; longer fails closed


@dataclass(frozen=True, slots=True)
class StateConfig:
    dir: str | None = None  # default: $STATE_DIRECTORY, else ~/.local/state/relaybot
    flush_interval: float = 10.0  # seconds between context saves (settings save at once)


@dataclass(frozen=True, slots=True)
class RemoteConfig:
    """A remote inference server: OpenAI-compatible `/v1/completions` or TGI `/generate`."""

    url: str = "http://127.0.0.1:8000"
    model: str | None = None  # the model name sent to an OpenAI-compatible server
    api_key: Secret | None = None
    timeout: float = 60.0  # seconds for one whole request
    connect_timeout: float = 5.0
    retries: int = 2  # further attempts after a connection failure or a 5xx/429
    retry_backoff: float = 0.5  # seconds before the first retry; doubles each time
    max_in_flight: int = 4  # requests open at once against the server
    stream: bool = False
    tls_verify: bool = True
    ca_file: str | None = None


@dataclass(frozen=True, slots=True)
class ModelConfig:
    engine: str = "local"  # local (transformers in this process) | openai | tgi
    remote: RemoteConfig = RemoteConfig()
    name: str = "auto"  # auto | embedded | a model id | a local directory
    gguf_file: str | None = None
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32
    quantization: str = "auto"  # auto | none | 8bit | 4bit
    allow_download: bool = False
    cache_dir: str | None = None
    context_tokens: int = 2048
    max_new_tokens: int = 128
    temperature: float = 0.3
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repetition_penalty: float = 1.1
    max_batch: int = 8
    seed: int | None = None
    format: str = "relay"  # prompt format: relay (native), chatml, llama2, mistral, llama3, ...
    stop: tuple[str, ...] = ()  # stop strings on top of the format's own
    qa: bool = False  # the model knows closed-context QA (BEGININPUT…): enables `ask`
    prefix_cache_entries: int = 32  # conversations whose KV prefix is kept (0: no reuse)
    prefix_cache_mib: int = 1024  # memory bound for those caches
    attention: str = "auto"  # auto (sdpa) | sdpa | eager | flash_attention_2
    warmup: bool = True  # one small batch before joining channels: the first user waits less


ATTENTION_CHOICES = ("auto", "sdpa", "eager", "flash_attention_2")


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: str = "auto"  # auto | console | json


@dataclass(frozen=True, slots=True)
class Config:
    irc: IrcConfig
    reply: ReplyConfig = ReplyConfig()
    model: ModelConfig = ModelConfig()
    log: LogConfig = LogConfig()
    policy: PolicyConfig = PolicyConfig()
    operators: OperatorConfig = OperatorConfig()
    moderation: ModerationConfig = ModerationConfig()
    state: StateConfig = StateConfig()


# --- loading -------------------------------------------------------------------------------

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def _describe(value: object) -> str:
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "array",
        dict: "table",
    }.get(type(value), type(value).__name__)


class _Section:
    """Typed, path-aware reads from one TOML table; leftover keys are an error."""

    def __init__(self, table: Mapping[str, Any], path: str, base_dir: Path) -> None:
        self.table = dict(table)
        self.path = path
        self.base_dir = base_dir
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.key(name)}: {problem}")

    def resolve(self, value: str) -> Path:
        """A path as written in the config: `$VAR` and `~` expanded, relative to the file."""
        path = Path(os.path.expandvars(value)).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def has(self, name: str) -> bool:
        return name in self.table

    def get(self, name: str, kind: type[T], default: T) -> T:
        self.used.add(name)
        if name not in self.table:
            return default
        value = self.table[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(name, f"expected {_TYPE_NAMES[kind]}, got {_describe(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            # TOML has nan and inf literals; no key means either (nan even passes range checks).
            raise self.fail(name, f"must be a finite number, got {value}")
        return value

    def required(self, name: str, kind: type[T]) -> T:
        if name not in self.table:
            raise self.fail(name, "missing (required)")
        value = self.get(name, kind, kind())
        if isinstance(value, str) and not value.strip():
            raise self.fail(name, "must not be empty")
        return value

    def optional_str(self, name: str) -> str | None:
        value = self.get(name, str, "")
        return value or None

    def choice(self, name: str, default: str, options: tuple[str, ...]) -> str:
        value = self.get(name, str, default)
        if value not in options:
            raise self.fail(name, f"must be one of {', '.join(options)}, got {value!r}")
        return value

    def number(
        self, name: str, kind: type[T], default: T, low: float, high: float | None = None
    ) -> T:
        value = self.get(name, kind, default)
        assert isinstance(value, int | float)
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise self.fail(name, f"must be {bound}, got {value}")
        return value

    def str_list(self, name: str) -> tuple[str, ...]:
        self.used.add(name)
        value = self.table.get(name, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise self.fail(name, f"expected an array of strings, got {_describe(value)}")
        return tuple(value)

    def sub(self, name: str) -> _Section | None:
        self.used.add(name)
        if name not in self.table:
            return None
        value = self.table[name]
        if not isinstance(value, dict):
            raise self.fail(name, f"expected a table, got {_describe(value)}")
        return _Section(value, self.key(name), self.base_dir)

    def secret(self, name: str, required: bool = False) -> Secret | None:
        """A secret from `<name>_file` or `<name>_env`; an inline value is refused."""
        file_key, env_key = f"{name}_file", f"{name}_env"
        self.used.update({name, file_key, env_key})
        if name in self.table:
            raise self.fail(name, f"secrets are not accepted inline; use {file_key} or {env_key}")
        file_name = self.get(file_key, str, "")
        env_name = self.get(env_key, str, "")
        if file_name and env_name:
            raise self.fail(file_key, f"give either {file_key} or {env_key}, not both")
        if file_name:
            path = self.resolve(file_name)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise self.fail(file_key, f"cannot read {path}: {exc}") from None
            value = text.strip("\r\n")
            if not value:
                raise self.fail(file_key, f"{path} is empty")
            return Secret(value)
        if env_name:
            if not os.environ.get(env_name):
                raise self.fail(env_key, f"environment variable {env_name} is not set")
            return Secret(os.environ[env_name])
        if required:
            raise self.fail(file_key, f"missing (give {file_key} or {env_key})")
        return None

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.fail(unknown[0], "unknown key")


def _channels(section: _Section) -> tuple[ChannelConfig, ...]:
    section.used.add("channels")
    raw = section.table.get("channels", [])
    if not isinstance(raw, list):
        raise section.fail("channels", f"expected an array, got {_describe(raw)}")
    result = []
    for index, item in enumerate(raw):
        where = f"channels[{index}]"
        if isinstance(item, str):
            name, key = item, None
        elif isinstance(item, dict):
            entry = _Section(item, section.key(where), section.base_dir)
            name = entry.required("name", str)
            key = entry.secret("key")
            entry.finish()
        else:
            raise section.fail(where, f"expected a string or a table, got {_describe(item)}")
        if not is_channel_name(name):
            raise section.fail(where, f"{name!r} is not a valid channel name")
        result.append(ChannelConfig(name, key))
    return tuple(result)


def _valid_nick(section: _Section, key: str, nick: str) -> str:
    if not nick or nick[0].isdigit() or nick[0] == "-" or any(c in nick for c in " ,*?!@#:\0"):
        raise section.fail(key, f"{nick!r} is not a valid nick")
    return nick


def _irc(section: _Section) -> IrcConfig:
    host = section.required("host", str)
    nick = _valid_nick(section, "nick", section.required("nick", str))
    alt_nicks = section.str_list("alt_nicks")
    for index, alt in enumerate(alt_nicks):
        _valid_nick(section, f"alt_nicks[{index}]", alt)
    tls = section.get("tls", bool, False)
    sasl_section = section.sub("sasl")
    sasl = None
    if sasl_section is not None:
        mechanism = sasl_section.choice("mechanism", "PLAIN", ("PLAIN", "EXTERNAL"))
        if mechanism == "PLAIN":
            sasl = SaslConfig(
                username=sasl_section.required("username", str),
                password=sasl_section.secret("password", required=True) or Secret(""),
            )
        else:
            sasl = SaslConfig(
                username=sasl_section.get("username", str, ""),
                password=sasl_section.secret("password"),
                mechanism=mechanism,
            )
        sasl_section.finish()
    config = IrcConfig(
        host=host,
        nick=nick,
        network=section.get("network", str, "default") or "default",
        port=section.number("port", int, 6697 if tls else 6667, 1, 65535),
        tls=tls,
        tls_verify=section.get("tls_verify", bool, True),
        ca_file=_path(section, "ca_file"),
        password=section.secret("password"),
        alt_nicks=alt_nicks,
        username=section.optional_str("username"),
        realname=section.get("realname", str, "relaybot") or nick,
        channels=_channels(section),
        invite_from=section.str_list("invite_from"),
        invite_accounts=section.str_list("invite_accounts"),
        rejoin_on_kick=section.get("rejoin_on_kick", bool, False),
        rejoin_delay=section.number("rejoin_delay", float, 10.0, 0.0),
        connect_timeout=section.number("connect_timeout", float, 15.0, 1.0),
        sasl=sasl,
        flood=_flood(section.sub("flood")),
        set_bot_mode=section.get("set_bot_mode", bool, True),
        fallback_servers=_servers(section, "fallback_servers"),
        client_cert_file=_path(section, "client_cert_file"),
        client_key_file=_path(section, "client_key_file"),
        tls_fingerprints=_fingerprints(section),
        ping_interval=section.number("ping_interval", float, 60.0, 5.0, 3600.0),
        ping_timeout=section.number("ping_timeout", float, 60.0, 5.0, 3600.0),
        reconnect_min=section.number("reconnect_min", float, 5.0, 0.1, 3600.0),
        reconnect_max=section.number("reconnect_max", float, 300.0, 0.1, 86400.0),
        stable_after=section.number("stable_after", float, 60.0, 0.0, 86400.0),
    )
    if config.reconnect_max < config.reconnect_min:
        raise section.fail("reconnect_max", "must not be smaller than irc.reconnect_min")
    external = config.sasl is not None and config.sasl.mechanism == "EXTERNAL"
    if external and not (config.tls and config.client_cert_file):
        raise section.fail("sasl.mechanism", "EXTERNAL needs irc.tls and irc.client_cert_file")
    section.finish()
    return config


def _servers(section: _Section, name: str) -> tuple[tuple[str, int], ...]:
    result = []
    for index, item in enumerate(section.str_list(name)):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise section.fail(f"{name}[{index}]", f"{item!r} must be host:port")
        result.append((host.strip("[]"), int(port)))
    return tuple(result)


def _path(section: _Section, name: str) -> str | None:
    """An optional file (CA bundle, certificate, key) that must exist and be readable."""
    value = section.optional_str(name)
    if value is None:
        return None
    path = section.resolve(value)
    if not path.is_file() or not os.access(path, os.R_OK):
        raise section.fail(name, f"{path} is not a readable file")
    return str(path)


def _fingerprints(section: _Section) -> tuple[str, ...]:
    pins = []
    for index, item in enumerate(section.str_list("tls_fingerprints")):
        pin = item.replace(":", "").strip().lower()
        if len(pin) != 64 or any(c not in "0123456789abcdef" for c in pin):
            raise section.fail(
                f"tls_fingerprints[{index}]", "must be a SHA-256 fingerprint (64 hex digits)"
            )
        pins.append(pin)
    return tuple(pins)


def _flood(section: _Section | None) -> FloodConfig:
    if section is None:
        return FloodConfig()
    d = FloodConfig()
    config = FloodConfig(
        burst=section.number("burst", int, d.burst, 1, 100),
        interval=section.number("interval", float, d.interval, 0.0, 60.0),
        bytes_per_second=section.number("bytes_per_second", int, d.bytes_per_second, 1),
        max_queued=section.number("max_queued", int, d.max_queued, 1),
    )
    section.finish()
    return config


def matches_anyone(glob: str, separators: str = "") -> bool:
    """True when `glob` is nothing but IRC wildcards (`*`, `?`) and `separators`: it names
    nobody in particular, so as an operator entry it would trust whoever comes along."""
    return not glob.strip().translate(dict.fromkeys(map(ord, "*?" + separators)))


def _masks(section: _Section, name: str) -> tuple[str, ...]:
    masks = section.str_list(name)
    for index, mask in enumerate(masks):
        if not mask.strip() or any(c in mask for c in " \r\n\0"):
            raise section.fail(f"{name}[{index}]", f"{mask!r} is not a valid mask")
        if mask.startswith("$a:") and len(mask) == 3:
            raise section.fail(f"{name}[{index}]", "$a: needs an account name")
    return masks


def _policy(section: _Section | None, batch: int) -> PolicyConfig:
    """`batch`: model.max_batch, the default for max_concurrent."""
    if section is None:
        return PolicyConfig(max_concurrent=batch)
    d = PolicyConfig(max_concurrent=batch)
    config = PolicyConfig(
        user_burst=section.number("user_burst", int, d.user_burst, 1),
        user_per_minute=section.number("user_per_minute", float, d.user_per_minute, 0.0),
        channel_burst=section.number("channel_burst", int, d.channel_burst, 1),
        channel_per_minute=section.number("channel_per_minute", float, d.channel_per_minute, 0.0),
        cooldown=section.number("cooldown", float, d.cooldown, 0.0),
        max_concurrent=section.number("max_concurrent", int, d.max_concurrent, 1, 1024),
        max_waiting=section.number("max_waiting", int, d.max_waiting, 1),
        ignore_bots=section.get("ignore_bots", bool, d.ignore_bots),
        loop_limit=section.number("loop_limit", int, d.loop_limit, 1),
        loop_reset=section.number("loop_reset", float, d.loop_reset, 0.0),
        repeat_window=section.number("repeat_window", float, d.repeat_window, 0.0),
        ignore=_masks(section, "ignore"),
    )
    section.finish()
    return config


def _operators(section: _Section | None) -> OperatorConfig:
    if section is None:
        return OperatorConfig()
    prefix = section.get("prefix", str, "!relay")
    if not prefix.strip() or any(c in prefix for c in " \r\n\0"):
        raise section.fail("prefix", f"{prefix!r} must be a non-empty word without spaces")
    config = OperatorConfig(
        prefix=prefix,
        accounts=_masks(section, "accounts"),
        hostmasks=_masks(section, "hostmasks"),
        channel_ops=section.get("channel_ops", bool, False),
    )
    for index, account in enumerate(config.accounts):
        if matches_anyone(account.removeprefix("$a:")):
            raise section.fail(
                f"accounts[{index}]",
                f"{account!r} matches any account, so it would make every logged-in user "
                "an operator",
            )
    for index, mask in enumerate(config.hostmasks):
        if "!" not in mask or "@" not in mask:
            raise section.fail(
                f"hostmasks[{index}]", f"{mask!r} must be a full nick!user@host glob"
            )
        if matches_anyone(mask.split("!", 1)[1], separators="@"):
            raise section.fail(
                f"hostmasks[{index}]",
                f"{mask!r} matches any user@host, so it would trust a nick alone",
            )
    section.finish()
    return config


def _moderation(section: _Section | None) -> ModerationConfig:
    if section is None:
        return ModerationConfig()
    section.used.add("hooks")
    raw = section.table.get("hooks", [])
    if not isinstance(raw, list):
        raise section.fail("hooks", f"expected an array of tables, got {_describe(raw)}")
    hooks = []
    for index, item in enumerate(raw):
        where = section.key(f"hooks[{index}]")
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a table, got {_describe(item)}")
        use = item.get("use")
        if not isinstance(use, str) or not use.strip():
            raise ConfigError(f"{where}.use: missing (a built-in name or module:Name)")
        options = {k: v for k, v in item.items() if k != "use"}
        model = options.get("model")
        if use.strip() == "classifier" and isinstance(model, str) and model:
            # A local model directory is relative to the config file, like every other path.
            options["model"] = str(section.resolve(model))
        hooks.append(ModerationHookConfig(use.strip(), options, where))
    config = ModerationConfig(
        hooks=tuple(hooks), timeout=section.number("timeout", float, 2.0, 0.01, 600.0)
    )
    section.finish()
    return config


def _state(section: _Section | None) -> StateConfig:
    if section is None:
        return StateConfig()
    directory = section.optional_str("dir")
    if directory is not None:
        directory = str(section.resolve(directory))
    config = StateConfig(
        dir=directory,
        flush_interval=section.number("flush_interval", float, 10.0, 0.1, 3600.0),
    )
    section.finish()
    return config


def _overridden_bounds(key: str) -> tuple[float, float | None]:
    """The bounds of a key a per-channel setting overrides: declared once, with the setting."""
    spec = spec_for(key)
    assert spec is not None and spec.low is not None, key
    return spec.low, spec.high


def _reply(section: _Section | None) -> ReplyConfig:
    if section is None:
        return ReplyConfig()
    config = ReplyConfig(
        on_mention=section.get("on_mention", bool, True),
        in_query=section.get("in_query", bool, True),
        chance=section.number("chance", float, 0.0, *_overridden_bounds("reply.chance")),
        max_lines=section.number("max_lines", int, 3, *_overridden_bounds("reply.max_lines")),
    )
    section.finish()
    return config


def _remote_url(section: _Section, default: str) -> str:
    """The server's base URL, checked as the HTTP client will read it (remote_http.Target)."""
    url = section.get("url", str, default).rstrip("/")
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


def _remote(section: _Section | None) -> RemoteConfig:
    if section is None:
        return RemoteConfig()
    defaults = RemoteConfig()
    config = RemoteConfig(
        url=_remote_url(section, defaults.url),
        model=section.optional_str("model"),
        api_key=section.secret("api_key"),
        timeout=section.number("timeout", float, defaults.timeout, 0.1, 3600.0),
        connect_timeout=section.number(
            "connect_timeout", float, defaults.connect_timeout, 0.1, 600.0
        ),
        retries=section.number("retries", int, defaults.retries, 0, 20),
        retry_backoff=section.number("retry_backoff", float, defaults.retry_backoff, 0.0, 60.0),
        max_in_flight=section.number("max_in_flight", int, defaults.max_in_flight, 1, 1024),
        stream=section.get("stream", bool, defaults.stream),
        tls_verify=section.get("tls_verify", bool, defaults.tls_verify),
        ca_file=_path(section, "ca_file"),
    )
    section.finish()
    return config


def _model(section: _Section | None) -> ModelConfig:
    if section is None:
        return ModelConfig()
    name = section.get("name", str, "auto") or "auto"
    defaults = _preset_defaults(name)
    seed_value = section.get("seed", int, -1)
    engine = section.choice("engine", defaults.engine, ("local", "openai", "tgi"))
    remote = _remote(section.sub("remote"))
    config = ModelConfig(
        engine=engine,
        remote=remote,
        name=name,
        gguf_file=section.optional_str("gguf_file"),
        device=section.choice("device", defaults.device, ("auto", "cpu", "cuda")),
        dtype=section.choice("dtype", defaults.dtype, ("auto", "bfloat16", "float16", "float32")),
        quantization=section.choice(
            "quantization", defaults.quantization, ("auto", "none", "8bit", "4bit")
        ),
        allow_download=section.get("allow_download", bool, False),
        cache_dir=section.optional_str("cache_dir"),
        context_tokens=section.number("context_tokens", int, defaults.context_tokens, 256),
        max_new_tokens=section.number(
            "max_new_tokens",
            int,
            defaults.max_new_tokens,
            *_overridden_bounds("model.max_new_tokens"),
        ),
        temperature=section.number(
            "temperature", float, defaults.temperature, *_overridden_bounds("model.temperature")
        ),
        top_k=section.number("top_k", int, defaults.top_k, *_overridden_bounds("model.top_k")),
        top_p=section.number("top_p", float, defaults.top_p, *_overridden_bounds("model.top_p")),
        min_p=section.number("min_p", float, defaults.min_p, 0.0, 1.0),
        repetition_penalty=section.number(
            "repetition_penalty", float, defaults.repetition_penalty, 0.5, 5.0
        ),
        max_batch=section.number("max_batch", int, defaults.max_batch, 1, 256),
        seed=None if seed_value < 0 else seed_value,
        format=section.choice("format", defaults.format, FORMAT_NAMES),
        stop=section.str_list("stop") if section.has("stop") else defaults.stop,
        qa=section.get("qa", bool, defaults.qa),
        prefix_cache_entries=section.number(
            "prefix_cache_entries", int, defaults.prefix_cache_entries, 0, 100_000
        ),
        prefix_cache_mib=section.number("prefix_cache_mib", int, defaults.prefix_cache_mib, 1),
        attention=section.choice("attention", defaults.attention, ATTENTION_CHOICES),
        warmup=section.get("warmup", bool, defaults.warmup),
    )
    if any(not stop for stop in config.stop):
        raise section.fail("stop", "stop strings must not be empty")
    if config.max_new_tokens >= config.context_tokens:
        raise section.fail("max_new_tokens", "must be smaller than model.context_tokens")
    section.finish()
    return config


def _preset_defaults(name: str) -> ModelConfig:
    """The defaults a preset brings; keys written in the config still win."""
    preset = preset_named(name)
    if preset is None:
        return ModelConfig()
    sampling = preset.sampling
    return ModelConfig(
        name=name,
        format=preset.format,
        stop=preset.stop,
        qa=preset.closed_context_qa,
        context_tokens=preset.context_tokens,
        max_new_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        min_p=sampling.min_p,
        repetition_penalty=sampling.repetition_penalty,
    )


def _log(section: _Section | None) -> LogConfig:
    if section is None:
        return LogConfig()
    config = LogConfig(
        level=section.choice("level", "info", ("debug", "info", "warning", "error")),
        format=section.choice("format", "auto", ("auto", "console", "json")),
    )
    section.finish()
    return config


def parse_config(data: Mapping[str, Any], base_dir: Path) -> Config:
    root = _Section(data, "", base_dir)
    irc_section = root.sub("irc")
    if irc_section is None:
        raise ConfigError("irc: missing (required table with at least host and nick)")
    model = _model(root.sub("model"))
    config = Config(
        irc=_irc(irc_section),
        reply=_reply(root.sub("reply")),
        model=model,
        log=_log(root.sub("log")),
        policy=_policy(root.sub("policy"), model.max_batch),
        operators=_operators(root.sub("operators")),
        moderation=_moderation(root.sub("moderation")),
        state=_state(root.sub("state")),
    )
    root.finish()
    return config


def load_config(path: Path) -> Config:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, path.resolve().parent)


def loads_config(text: str, base_dir: Path | None = None) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from None
    return parse_config(data, base_dir or Path.cwd())


def dump_config(data: Mapping[str, Any]) -> str:
    """Write a plain-data config (used by `relaybot demo` to write its config file)."""
    return tomli_w.dumps(dict(data))


def redacted(obj: object) -> object:
    """A plain-data view of a config value for logging, secrets masked."""
    if isinstance(obj, Secret):
        return "***"
    if is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: redacted(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple | list):
        return [redacted(item) for item in obj]
    return obj


ConfigFactory = Callable[[str], Config]
