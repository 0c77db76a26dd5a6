"""Reads the `[irc]` table: the server and its fallbacks, nicks, channels, TLS, SASL, the
NickServ fallback and the outgoing flood pacing."""

from __future__ import annotations

import dataclasses

from relaybot.config.schema import (
    ChannelConfig,
    FloodConfig,
    IrcConfig,
    NickservConfig,
    SaslConfig,
    Secret,
)
from relaybot.config.section import Section, declared_defaults, describe
from relaybot.irc.sasl import ECDSA_CHALLENGE, MECHANISMS, SCRAM_SHA_256, load_p256_key
from relaybot.irc.text import is_channel_name


def read_irc(section: Section) -> IrcConfig:
    host = section.required("host", str)
    nick = _valid_nick(section, "nick", section.required("nick", str))
    alt_nicks = section.str_list("alt_nicks")
    for index, alt in enumerate(alt_nicks):
        _valid_nick(section, f"alt_nicks[{index}]", alt)
    tls = section.get("tls", bool)
    if tls:
        # irc.port's default follows irc.tls.
        section.derive(port=IrcConfig.TLS_PORT)
    sasl = _sasl(section.sub("sasl", SaslConfig))
    config = IrcConfig(
        host=host,
        nick=nick,
        network=section.get("network", str) or section.default("network", str),  # "" too
        port=section.number("port", int, 1, 65535),
        tls=tls,
        tls_verify=section.get("tls_verify", bool),
        ca_file=section.file("ca_file"),
        password=section.secret("password"),
        alt_nicks=alt_nicks,
        username=section.optional_str("username"),
        realname=section.get("realname", str) or nick,  # written but empty: the nick
        channels=_channels(section),
        invite_from=section.str_list("invite_from"),
        invite_accounts=section.str_list("invite_accounts"),
        rejoin_on_kick=section.get("rejoin_on_kick", bool),
        rejoin_delay=section.number("rejoin_delay", float, 0.0),
        connect_timeout=section.number("connect_timeout", float, 1.0),
        sasl=sasl,
        nickserv=_nickserv(section.sub("nickserv", NickservConfig), nick),
        flood=_flood(section.sub_or_empty("flood")),
        set_bot_mode=section.get("set_bot_mode", bool),
        fallback_servers=_servers(section, "fallback_servers"),
        client_cert_file=section.file("client_cert_file"),
        client_key_file=section.file("client_key_file"),
        tls_fingerprints=_fingerprints(section),
        ping_interval=section.number("ping_interval", float, 5.0, 3600.0),
        ping_timeout=section.number("ping_timeout", float, 5.0, 3600.0),
        reconnect_min=section.number("reconnect_min", float, 0.1, 3600.0),
        reconnect_max=section.number("reconnect_max", float, 0.1, 86400.0),
        stable_after=section.number("stable_after", float, 0.0, 86400.0),
    )
    if config.reconnect_max < config.reconnect_min:
        raise section.fail("reconnect_max", "must not be smaller than irc.reconnect_min")
    external = config.sasl is not None and config.sasl.mechanism == "EXTERNAL"
    if external and not (config.tls and config.client_cert_file):
        raise section.fail("sasl.mechanism", "EXTERNAL needs irc.tls and irc.client_cert_file")
    section.finish()
    return config


def _valid_nick(section: Section, key: str, nick: str) -> str:
    if not nick or nick[0].isdigit() or nick[0] == "-" or any(c in nick for c in " ,*?!@#:\0"):
        raise section.fail(key, f"{nick!r} is not a valid nick")
    return nick


def _sasl(section: Section | None) -> SaslConfig | None:
    if section is None:
        return None
    mechanism = section.choice("mechanism", MECHANISMS)
    if mechanism in ("PLAIN", SCRAM_SHA_256):
        sasl = SaslConfig(
            username=section.required("username", str),
            password=section.secret("password", required=True) or Secret(""),
            mechanism=mechanism,
        )
    elif mechanism == ECDSA_CHALLENGE:
        sasl = SaslConfig(
            username=section.required("username", str),
            password=None,
            mechanism=mechanism,
            key=_p256_key(section),
        )
    else:
        # EXTERNAL: the client certificate is the credential and names the account, so the
        # username may be left out (SaslConfig declares no default: PLAIN requires one).
        section.derive(username="")
        sasl = SaslConfig(
            username=section.get("username", str),
            password=section.secret("password"),
            mechanism=mechanism,
        )
    sasl = dataclasses.replace(sasl, required=section.get("required", bool))
    section.finish()
    return sasl


def _nickserv(section: Section | None, nick: str) -> NickservConfig | None:
    if section is None:
        return None
    section.derive(account=nick)  # an account left out is the nick the bot registers
    account = section.get("account", str) or nick
    if any(c in account for c in " \0") or account.startswith(":"):
        raise section.fail("account", f"{account!r} must be one word")
    password = section.secret("password", required=True) or Secret("")
    if any(c in password.value for c in "\r\n\0"):
        raise section.fail("password_file", "the password must be one line (no CR, LF or NUL)")
    # `NickServ@services.example.net` reaches only the real services, even during a split.
    service = section.get("service", str)
    nick, at, server = service.partition("@")
    _valid_nick(section, "service", nick)
    if at and (not server or any(c in server for c in " \0@")):
        raise section.fail("service", f"{service!r} must be a nick or nick@server")
    config = NickservConfig(password=password, account=account, service=service)
    section.finish()
    return config


def _p256_key(section: Section) -> Secret:
    """ECDSA-NIST256P-CHALLENGE's private key, from `key_file` or `key_env` like any secret,
    checked here so that a wrong one is a config error rather than a failed login later."""
    key = section.secret("key", required=True)
    assert key is not None
    try:
        load_p256_key(key.value)
    except ValueError as exc:
        raise section.fail("key_file" if section.has("key_file") else "key_env", str(exc)) from None
    return key


def _channels(section: Section) -> tuple[ChannelConfig, ...]:
    raw = section.raw("channels")
    if raw is None:
        return section.default("channels", tuple)
    if not isinstance(raw, list):
        raise section.fail("channels", f"expected an array, got {describe(raw)}")
    result = []
    for index, item in enumerate(raw):
        where = f"channels[{index}]"
        if isinstance(item, str):
            name, key = item, None
        elif isinstance(item, dict):
            entry = Section(
                item, section.key(where), section.base_dir, declared_defaults(ChannelConfig)
            )
            name = entry.required("name", str)
            key = entry.secret("key")
            entry.finish()
        else:
            raise section.fail(where, f"expected a string or a table, got {describe(item)}")
        if not is_channel_name(name):
            raise section.fail(where, f"{name!r} is not a valid channel name")
        result.append(ChannelConfig(name, key))
    return tuple(result)


def _servers(section: Section, name: str) -> tuple[tuple[str, int], ...]:
    if not section.has(name):
        return section.default(name, tuple)
    result = []
    for index, item in enumerate(section.str_list(name)):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise section.fail(f"{name}[{index}]", f"{item!r} must be host:port")
        result.append((host.strip("[]"), int(port)))
    return tuple(result)


def _fingerprints(section: Section) -> tuple[str, ...]:
    pins = []
    for index, item in enumerate(section.str_list("tls_fingerprints")):
        pin = item.replace(":", "").strip().lower()
        if len(pin) != 64 or any(c not in "0123456789abcdef" for c in pin):
            raise section.fail(
                f"tls_fingerprints[{index}]", "must be a SHA-256 fingerprint (64 hex digits)"
            )
        pins.append(pin)
    return tuple(pins)


def _flood(section: Section) -> FloodConfig:
    config = FloodConfig(
        burst=section.number("burst", int, 1, 100),
        interval=section.number("interval", float, 0.0, 60.0),
        bytes_per_second=section.number("bytes_per_second", int, 1),
        max_queued=section.number("max_queued", int, 1),
    )
    section.finish()
    return config
