"""Command line: `relaybot --config bot.toml` runs the bot; also check-config, demo and chat."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from relaybot.config.loader import load_config, redacted
from relaybot.config.schema import Config, ConfigError


def _load(path: str) -> Config:
    return load_config(Path(path))


def cmd_check_config(args: argparse.Namespace) -> int:
    from relaybot.irc.tls import TlsSetupError, client_context
    from relaybot.moderation import build_chain

    try:
        config = _load(args.config_path)
        for net in config.networks:
            build_chain(net.moderation)  # hooks resolve and accept their options
            client_context(net.irc)  # certificate, key and CA files load
    except (ConfigError, TlsSetupError) as exc:
        print(f"relaybot: config error: {exc}", file=sys.stderr)
        return 2
    for net in config.networks:
        irc = net.irc
        channels = ", ".join(channel.name for channel in irc.channels) or "(none)"
        print(
            f"{args.config_path}: OK: {net.name}: {irc.nick} on {irc.host}:{irc.port}"
            f"{' (TLS)' if irc.tls else ''}, channels {channels}"
        )
    print(f"{args.config_path}: model {config.model.name}, shared by every network")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from relaybot.log import configure_logging, get_logger

    try:
        config = _load(args.config)
    except ConfigError as exc:
        print(f"relaybot: config error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log.level, config.log.format)
    log = get_logger(component="cli", networks=[net.name for net in config.networks])
    log.info("starting", config=redacted(config))
    from relaybot.inference.factory import load_engine
    from relaybot.inference.selection import ModelUnavailable
    from relaybot.moderation import ModerationChain, build_chain
    from relaybot.service.bot import Bot

    moderation: dict[str, ModerationChain] = {}
    try:
        for net in config.networks:
            moderation[net.name] = build_chain(net.moderation)
    except ConfigError as exc:
        log.error("config_error", error=str(exc))
        print(f"relaybot: config error: {exc}", file=sys.stderr)
        return 2
    try:
        engine = load_engine(config.model)
    except ModelUnavailable as exc:
        log.error("model_load_failed", error=str(exc))
        print(f"relaybot: cannot load the model: {exc}", file=sys.stderr)
        return 3
    from relaybot.irc.tls import TlsSetupError

    try:
        bot = Bot(config, engine, config_path=Path(args.config), moderation=moderation)
    except (TlsSetupError, ConfigError) as exc:
        log.error("config_error", error=str(exc))
        print(f"relaybot: config error: {exc}", file=sys.stderr)
        return 2
    return bot.run()


def cmd_demo(args: argparse.Namespace) -> int:
    from relaybot.cli.demo import run_demo

    return run_demo(port=args.port, channel=args.channel, interactive=not args.no_client)


def cmd_chat(args: argparse.Namespace) -> int:
    from relaybot.cli.chat import main_chat

    return main_chat(
        config_path=args.config, nick=args.nick, you=args.you, channel=args.channel, seed=args.seed
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relaybot", description="An IRC bot that speaks through a local language model."
    )
    parser.add_argument("--config", help="run the bot with this TOML config")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the bot")
    run.add_argument("--config", required=True, help="TOML config file")
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config_path", help="TOML config file")
    check.set_defaults(func=cmd_check_config)
    demo = sub.add_parser(
        "demo", help="start a local IRC server, the bot on the embedded model, and a chat client"
    )
    demo.add_argument("--port", type=int, default=6667, help="port for the local IRC server")
    demo.add_argument("--channel", default="#relay", help="channel the bot joins")
    demo.add_argument(
        "--no-client", action="store_true", help="do not start the terminal client; just serve"
    )
    demo.set_defaults(func=cmd_demo)
    chat = sub.add_parser(
        "chat", help="talk to the model in this terminal (no IRC), with Relay's /commands"
    )
    chat.add_argument(
        "--config", help="take [model] from this TOML file (default: the embedded model on CPU)"
    )
    chat.add_argument("--nick", default="user", help="the model's role/nick (default: user)")
    chat.add_argument("--you", default="anon", help="your role/nick (default: anon)")
    chat.add_argument("--channel", default="#random", help="starting channel (default: #random)")
    chat.add_argument("--seed", type=int, help="sampling seed, for a reproducible session")
    chat.set_defaults(func=cmd_chat)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        if not args.config:
            parser.print_help(sys.stderr)
            return 2
        args.func = cmd_run
    result: int = args.func(args)
    return result
