"""Loading the configuration: TOML in, a `Config` out (or a ConfigError naming the key path),
every key left out taking the default its schema dataclass declares; and the plain-data views
back out (`dump_config`, `redacted`)."""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import tomli_w

from relaybot.config.irc_table import read_irc
from relaybot.config.metrics_table import read_metrics
from relaybot.config.model_table import read_model
from relaybot.config.schema import (
    Config,
    ConfigError,
    IrcConfig,
    LogConfig,
    ModerationConfig,
    ModerationHookConfig,
    NetworkConfig,
    OperatorConfig,
    PolicyConfig,
    ReplyConfig,
    Secret,
    StateConfig,
)
from relaybot.config.section import Section, declared_defaults, describe, overridden_bounds


def parse_config(data: Mapping[str, Any], base_dir: Path) -> Config:
    root = Section(data, "", base_dir, declared_defaults(Config))
    # A table left out reads as an empty one: every key its default.
    model = read_model(root.sub_or_empty("model"))
    config = Config(
        networks=_networks(root, model.max_batch),
        model=model,
        log=_log(root.sub_or_empty("log")),
        state=_state(root.sub_or_empty("state")),
        metrics=read_metrics(root.sub_or_empty("metrics")),
    )
    root.finish()
    return config


# The tables a network may set for itself; at the top level they are every network's defaults.
_PER_NETWORK = ("reply", "policy", "operators", "moderation")


def _networks(root: Section, max_batch: int) -> tuple[NetworkConfig, ...]:
    """`[irc]` (one network) or `[[networks]]` (several), never both."""
    defaults = {name: root.raw(name) for name in _PER_NETWORK}
    for name, table in defaults.items():
        if table is not None and not isinstance(table, dict):
            raise root.fail(name, f"expected a table, got {describe(table)}")
    raw_networks = root.raw("networks")
    irc_section = root.sub("irc", IrcConfig)
    if raw_networks is None:
        if irc_section is None:
            raise ConfigError(
                "irc: missing (required table with at least host and nick; or one"
                " [[networks]] table per network)"
            )
        return (_network(root, irc_section, defaults, {}, max_batch),)
    if irc_section is not None:
        raise ConfigError(
            "irc: give either [irc] (one network) or [[networks]] tables (several), not both;"
            " move [irc] into a [[networks]] table as [networks.irc]"
        )
    if not isinstance(raw_networks, list) or not raw_networks:
        raise root.fail("networks", "expected an array of tables ([[networks]])")
    _validate_defaults(root, defaults, max_batch)
    operators = defaults["operators"]
    for key in ("accounts", "hostmasks"):
        if isinstance(operators, dict) and key in operators:
            # Accounts and hostmasks name people on one network; the same name elsewhere
            # may be somebody else.
            raise root.fail(
                f"operators.{key}",
                "with [[networks]], operators are per network (an account on one network is"
                " not the same person on another): move it to [networks.operators]",
            )
    networks: list[NetworkConfig] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(raw_networks):
        where = root.key(f"networks[{index}]")
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a table, got {describe(item)}")
        entry = Section(item, where, root.base_dir, {})
        name = entry.required("name", str)
        if not _valid_network_name(name):
            raise entry.fail(
                "name", f"{name!r} must be letters, digits, '.', '_' or '-' (it names a folder)"
            )
        if name.casefold() in seen:
            raise entry.fail("name", f"{name!r} is also networks[{seen[name.casefold()]}]'s name")
        seen[name.casefold()] = index
        irc = entry.sub("irc", IrcConfig)
        if irc is None:
            raise entry.fail("irc", "missing (required table with at least host and nick)")
        given = irc.table.get("network")
        if given not in (None, "", name):
            raise irc.fail(
                "network", f"{given!r} differs from networks[{index}].name; leave it out"
            )
        irc.used.add("network")
        irc.derive(network=name)
        overrides = {}
        for table in _PER_NETWORK:
            own = entry.raw(table)
            if own is not None and not isinstance(own, dict):
                raise entry.fail(table, f"expected a table, got {describe(own)}")
            overrides[table] = own
        networks.append(_network(entry, irc, defaults, overrides, max_batch))
        entry.finish()
    return tuple(networks)


def _network(
    parent: Section,
    irc: Section,
    defaults: Mapping[str, object],
    overrides: Mapping[str, object],
    max_batch: int,
) -> NetworkConfig:
    def merged(name: str) -> Section:
        base = defaults.get(name)
        own = overrides.get(name)
        table = {
            **(base if isinstance(base, dict) else {}),
            **(own if isinstance(own, dict) else {}),
        }
        # Errors name the network's table where it has one, else the top-level table the
        # keys came from (moderation hooks keep this path for the errors they raise later).
        path = parent.key(name) if own is not None else name
        return Section(table, path, parent.base_dir, _table_defaults(name))

    return NetworkConfig(
        irc=read_irc(irc),
        reply=_reply(merged("reply")),
        policy=_policy(merged("policy"), max_batch),
        operators=_operators(merged("operators")),
        moderation=_moderation(merged("moderation")),
    )


def _validate_defaults(root: Section, defaults: Mapping[str, object], max_batch: int) -> None:
    """Read the top-level tables on their own first, so that a mistake in one is reported
    where it was written, not under the first network that inherits it."""
    readers: dict[str, Callable[[Section], object]] = {
        "reply": _reply,
        "policy": lambda section: _policy(section, max_batch),
        "moderation": _moderation,
    }
    for name, read in readers.items():
        table = defaults.get(name)
        if isinstance(table, dict):
            read(Section(table, name, root.base_dir, _table_defaults(name)))
    operators = defaults.get("operators")
    if isinstance(operators, dict):
        table = {k: v for k, v in operators.items() if k not in ("accounts", "hostmasks")}
        values = {
            item.name: getattr(OperatorConfig(), item.name) for item in fields(OperatorConfig)
        }
        _operators(Section(table, "operators", root.base_dir, values))


def _table_defaults(name: str) -> dict[str, object]:
    """The keys of a per-network table and the defaults NetworkConfig declares for them."""
    default = declared_defaults(NetworkConfig)[name]
    return {item.name: getattr(default, item.name) for item in fields(default)}


def _valid_network_name(name: str) -> bool:
    return (
        name not in (".", "..")
        and len(name) <= 64
        and all(c.isascii() and (c.isalnum() or c in "._-") for c in name)
    )


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


ConfigFactory = Callable[[str], Config]


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


# --- the smaller tables --------------------------------------------------------------------


def _reply(section: Section) -> ReplyConfig:
    config = ReplyConfig(
        on_mention=section.get("on_mention", bool),
        in_query=section.get("in_query", bool),
        chance=section.number("chance", float, *overridden_bounds("reply.chance")),
        max_lines=section.number("max_lines", int, *overridden_bounds("reply.max_lines")),
        max_age=section.number("max_age", float, 5.0, 3600.0),
    )
    section.finish()
    return config


def _log(section: Section) -> LogConfig:
    config = LogConfig(
        level=section.choice("level", ("debug", "info", "warning", "error")),
        format=section.choice("format", ("auto", "console", "json")),
    )
    section.finish()
    return config


def _policy(section: Section, max_batch: int) -> PolicyConfig:
    # policy.max_concurrent follows model.max_batch, so that every reply that may run at once
    # can share one decode batch.
    section.derive(max_concurrent=max_batch)
    config = PolicyConfig(
        user_burst=section.number("user_burst", int, 1),
        user_per_minute=section.number("user_per_minute", float, 0.0),
        channel_burst=section.number("channel_burst", int, 1),
        channel_per_minute=section.number("channel_per_minute", float, 0.0),
        cooldown=section.number("cooldown", float, 0.0),
        max_concurrent=section.number("max_concurrent", int, 1, 1024),
        max_waiting=section.number("max_waiting", int, 1),
        ignore_bots=section.get("ignore_bots", bool),
        loop_limit=section.number("loop_limit", int, 1),
        loop_reset=section.number("loop_reset", float, 0.0),
        repeat_window=section.number("repeat_window", float, 0.0),
        ignore=_masks(section, "ignore"),
    )
    section.finish()
    return config


def matches_anyone(glob: str, separators: str = "") -> bool:
    """True when `glob` is nothing but IRC wildcards (`*`, `?`) and `separators`: it names
    nobody in particular, so as an operator entry it would trust whoever comes along."""
    return not glob.strip().translate(dict.fromkeys(map(ord, "*?" + separators)))


def _masks(section: Section, name: str) -> tuple[str, ...]:
    masks = section.str_list(name)
    for index, mask in enumerate(masks):
        if not mask.strip() or any(c in mask for c in " \r\n\0"):
            raise section.fail(f"{name}[{index}]", f"{mask!r} is not a valid mask")
        if mask.startswith("$a:") and len(mask) == 3:
            raise section.fail(f"{name}[{index}]", "$a: needs an account name")
    return masks


def _operators(section: Section) -> OperatorConfig:
    prefix = section.get("prefix", str)
    if not prefix.strip() or any(c in prefix for c in " \r\n\0"):
        raise section.fail("prefix", f"{prefix!r} must be a non-empty word without spaces")
    config = OperatorConfig(
        prefix=prefix,
        accounts=_masks(section, "accounts"),
        hostmasks=_masks(section, "hostmasks"),
        channel_ops=section.get("channel_ops", bool),
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


def _moderation(section: Section) -> ModerationConfig:
    config = ModerationConfig(
        hooks=_hooks(section),
        timeout=section.number("timeout", float, 0.01, 600.0),
    )
    section.finish()
    return config


def _hooks(section: Section) -> tuple[ModerationHookConfig, ...]:
    raw = section.raw("hooks")
    if raw is None:
        return section.default("hooks", tuple)
    if not isinstance(raw, list):
        raise section.fail("hooks", f"expected an array of tables, got {describe(raw)}")
    hooks = []
    for index, item in enumerate(raw):
        where = section.key(f"hooks[{index}]")
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a table, got {describe(item)}")
        use = item.get("use")
        if not isinstance(use, str) or not use.strip():
            raise ConfigError(f"{where}.use: missing (a built-in name or module:Name)")
        options = {k: v for k, v in item.items() if k != "use"}
        model = options.get("model")
        if use.strip() == "classifier" and isinstance(model, str) and model:
            # A local model directory is relative to the config file, like every other path.
            options["model"] = str(section.resolve(model))
        hooks.append(ModerationHookConfig(use.strip(), options, where))
    return tuple(hooks)


def _state(section: Section) -> StateConfig:
    directory = section.optional_str("dir")
    if directory is not None:
        directory = str(section.resolve(directory))
    config = StateConfig(
        dir=directory,
        flush_interval=section.number("flush_interval", float, 0.1, 3600.0),
    )
    section.finish()
    return config
