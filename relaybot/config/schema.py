"""The configuration's schema: frozen dataclasses whose field defaults are the one place each
key's default is declared (relaybot.config.loader reads TOML into them).

Secrets are never written inline: they come from files (systemd credentials) or the
environment, and are wrapped so that logging a config never prints them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


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
    username: str  # required but for EXTERNAL, which defaults it to "" (the certificate names it)
    password: Secret | None  # PLAIN and SCRAM only (EXTERNAL: the client certificate instead)
    mechanism: str = "PLAIN"  # PLAIN | EXTERNAL | SCRAM-SHA-256 | ECDSA-NIST256P-CHALLENGE
    key: Secret | None = None  # ECDSA-NIST256P-CHALLENGE: the PEM private key (key_file)
    required: bool = False  # never stay connected unauthenticated: a failed SASL reconnects


@dataclass(frozen=True, slots=True)
class NickservConfig:
    """The IDENTIFY fallback for when SASL did not log the bot in (or is not configured)."""

    password: Secret
    account: str  # the file may leave it out: the bot's configured nick
    service: str = "NickServ"  # the services nick IDENTIFY goes to


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
    network: str = "default"  # an empty value reads as this default too
    port: int = 6667  # with tls on, the default is TLS_PORT instead
    tls: bool = False
    tls_verify: bool = True
    ca_file: str | None = None
    password: Secret | None = None
    alt_nicks: tuple[str, ...] = ()
    username: str | None = None
    realname: str = "relaybot"  # an empty value reads as the nick
    channels: tuple[ChannelConfig, ...] = ()
    invite_from: tuple[str, ...] = ()  # hostmask globs allowed to invite the bot
    invite_accounts: tuple[str, ...] = ()  # services accounts allowed to invite the bot
    rejoin_on_kick: bool = False
    rejoin_delay: float = 10.0
    connect_timeout: float = 15.0
    sasl: SaslConfig | None = None
    nickserv: NickservConfig | None = None  # [irc.nickserv]: IDENTIFY when SASL did not log in
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

    TLS_PORT: ClassVar[int] = 6697  # irc.port's default when irc.tls is on


@dataclass(frozen=True, slots=True)
class ReplyConfig:
    on_mention: bool = True
    in_query: bool = True
    chance: float = 0.0
    max_lines: int = 3
    # Seconds from the line that asked to the reply's first line going out; a reply that
    # cannot make it is not generated, or dropped unsent (and unrecorded).
    max_age: float = 60.0


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
    # Other names the same server serves that `!relay model` may switch a network or channel
    # to (`model` is always allowed); empty: only `model`.
    models: tuple[str, ...] = ()
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
    # A preset's name (inference/presets.py) also makes the preset's format, stops and sampling
    # the defaults of those keys; keys the file gives still win.
    name: str = "auto"  # auto | embedded | a model id | a local directory (empty: auto)
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
    seed: int | None = None  # a negative seed reads as None too
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
class MetricsConfig:
    """The Prometheus endpoint (relaybot.service.metrics): off unless enabled."""

    enabled: bool = False
    # Loopback unless the file names another address (which is then logged as a warning):
    # the metrics name channels, so they are not for everyone who can reach the host.
    address: str = "127.0.0.1"
    port: int = 9464  # 0: any free port (the one taken is logged)
    # Distinct `channel` label values per network; later channels count as "other".
    max_channels: int = 50


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """One IRC network's settings: its connection and channels, and the reply, policy,
    operator and moderation settings that apply there (defaults from the file's top-level
    tables, overridden key by key by the network's own)."""

    irc: IrcConfig
    reply: ReplyConfig = ReplyConfig()
    policy: PolicyConfig = PolicyConfig()
    operators: OperatorConfig = OperatorConfig()
    moderation: ModerationConfig = ModerationConfig()

    @property
    def name(self) -> str:
        """The network's name: its key in conversation keys, logs and the state directory."""
        return self.irc.network


@dataclass(frozen=True, slots=True)
class Config:
    """The whole file: the networks the bot is on, and what they share (one model, one log,
    one state directory with a folder per network)."""

    networks: tuple[NetworkConfig, ...]
    model: ModelConfig = ModelConfig()
    log: LogConfig = LogConfig()
    state: StateConfig = StateConfig()
    metrics: MetricsConfig = MetricsConfig()

    def network(self, name: str) -> NetworkConfig:
        for network in self.networks:
            if network.name == name:
                return network
        raise KeyError(name)
