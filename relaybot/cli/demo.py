"""`relaybot demo`: a local IRC server, the bot on the embedded model, and a terminal client.

Everything runs on 127.0.0.1; nothing is downloaded. Any IRC client can join too.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from relaybot.config.loader import dump_config, load_config

SERVER_START_TIMEOUT = 15.0


def start_local_server(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """miniircd (a pure-Python IRC server from PyPI) on 127.0.0.1:port."""
    command = [
        sys.executable,
        "-c",
        "import sys; from miniircd import main; sys.argv[0] = 'miniircd'; sys.exit(main())",
        "--listen",
        "127.0.0.1",
        "--ports",
        str(port),
    ]
    if os.geteuid() == 0:
        command += ["--setuid", "nobody"]  # miniircd refuses to run as root
    log_file = (workdir / "ircd.log").open("wb")
    process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the IRC server exited: {(workdir / 'ircd.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the IRC server did not listen on 127.0.0.1:{port} in time")


def demo_config(port: int, channel: str) -> dict[str, object]:
    return {
        "irc": {
            "network": "demo",
            "host": "127.0.0.1",
            "port": port,
            "nick": "relaybot",
            "channels": [channel],
            "invite_from": ["*!*@127.0.0.1"],
        },
        # Two people in a demo channel: answer every line, not only when addressed.
        "reply": {"chance": 1.0, "max_lines": 3},
        # One person chatting with the bot: no loop guard or tight budgets in the way.
        "policy": {"user_burst": 20, "user_per_minute": 30.0, "cooldown": 0.0, "loop_limit": 1000},
        # Everyone on this loopback-only server may try the operator commands.
        "operators": {"hostmasks": ["*!*@127.0.0.1"]},
        "state": {"dir": "state"},
        "model": {"name": "auto", "max_new_tokens": 64},
        "log": {"level": "info", "format": "json"},
    }


class TerminalClient:
    """A minimal line client: what you type goes to the channel; the channel is printed."""

    def __init__(self, port: int, nick: str, channel: str) -> None:
        self.channel = channel
        self.nick = nick
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.settimeout(None)
        self._send(f"NICK {nick}")
        self._send(f"USER {nick} 0 * :demo user")
        self._send(f"JOIN {channel}")
        self.closed = threading.Event()
        self.said = 0
        self.heard = 0  # lines from the bot (messages and notices)
        self.last_heard = 0.0

    def _send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def reader(self) -> None:
        buffer = b""
        while not self.closed.is_set():
            try:
                data = self.sock.recv(4096)
            except OSError:
                break
            if not data:
                break
            buffer += data
            *lines, buffer = buffer.split(b"\r\n")
            for raw in lines:
                self._show(raw.decode("utf-8", "replace"))
        self.closed.set()

    def _show(self, line: str) -> None:
        if line.startswith("PING"):
            self._send("PONG" + line[4:])
            return
        parts = line.split(" ", 3)
        if len(parts) >= 4 and parts[1] == "PRIVMSG":
            sender = parts[0][1:].split("!")[0]
            text = parts[3][1:]
            self.heard += 1
            self.last_heard = time.monotonic()
            if text.startswith("\x01ACTION "):
                print(f"* {sender} {text[8:].rstrip(chr(1))}", flush=True)
            else:
                print(f"<{sender}> {text}", flush=True)
        elif len(parts) >= 4 and parts[1] == "NOTICE" and "!" in parts[0]:
            self.heard += 1
            self.last_heard = time.monotonic()
            print(f"-{parts[0][1:].split('!')[0]}- {parts[3][1:]}", flush=True)
        elif len(parts) >= 3 and parts[1] in ("JOIN", "PART", "QUIT"):
            print(f"-- {parts[0][1:].split('!')[0]} {parts[1].lower()} {parts[2]}", flush=True)

    def say(self, text: str) -> None:
        self.said += 1
        self._send(f"PRIVMSG {self.channel} :{text}")

    def close(self) -> None:
        if not self.closed.is_set():
            with contextlib.suppress(OSError):
                self._send("QUIT :bye")
        self.closed.set()
        self.sock.close()


def run_demo(port: int, channel: str, interactive: bool) -> int:
    from relaybot.inference.factory import load_engine
    from relaybot.inference.selection import ModelUnavailable
    from relaybot.log import configure_logging
    from relaybot.service.bot import Bot

    workdir = Path(tempfile.mkdtemp(prefix="relaybot-demo-"))
    config_path = workdir / "bot.toml"
    config_path.write_text(dump_config(demo_config(port, channel)))
    config = load_config(config_path)
    log_path = workdir / "bot.log"
    # The terminal belongs to the chat; the bot's JSON log goes to a file.
    sys.stderr.flush()
    log_stream = log_path.open("a")
    os.dup2(log_stream.fileno(), 2)
    configure_logging(config.log.level, "json")
    print(f"relaybot demo: workdir {workdir} (config bot.toml, log bot.log)", flush=True)
    try:
        server = start_local_server(port, workdir)
    except (RuntimeError, OSError) as exc:
        print(f"relaybot demo: cannot start the IRC server: {exc}", flush=True)
        return 1
    try:
        print(
            "relaybot demo: loading the model (the first start converts it; later ones are fast)",
            flush=True,
        )
        try:
            engine = load_engine(config.model)
        except ModelUnavailable as exc:
            print(f"relaybot demo: cannot load the model: {exc}", flush=True)
            return 3
        bot = Bot(config, engine)
        bot_thread = threading.Thread(
            target=bot.run, kwargs={"install_signal_handlers": False}, daemon=True
        )
        bot_thread.start()
        print(
            f"relaybot demo: IRC server on 127.0.0.1:{port}; the bot is in {channel} "
            f"(model: {engine.description})",
            flush=True,
        )
        print(
            f"relaybot demo: connect any IRC client to 127.0.0.1 port {port} and /join {channel}",
            flush=True,
        )
        if not interactive:
            print("relaybot demo: serving; press Ctrl-C to stop", flush=True)
            try:
                while bot_thread.is_alive():
                    bot_thread.join(1.0)
            except KeyboardInterrupt:
                pass
        else:
            _chat(port, channel)
        bot.stop()
        bot_thread.join(15)
        return 0
    finally:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()


def _chat(port: int, channel: str) -> None:
    time.sleep(0.5)
    client = TerminalClient(port, "you", channel)
    threading.Thread(target=client.reader, daemon=True).start()
    print(
        f"relaybot demo: you are 'you' in {channel}. Type a line and press Enter; "
        "Ctrl-D or /quit leaves.",
        flush=True,
    )
    try:
        for line in sys.stdin:
            text = line.rstrip("\n")
            if text.strip() in ("/quit", "/exit"):
                break
            if text.strip():
                client.say(text)
        else:
            # Input ended (a pipe): give the bot time to answer, then a moment of quiet.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not client.closed.is_set():
                # Every line is answered (a reply, or a notice for a command).
                answered = client.heard >= client.said
                if answered and time.monotonic() - client.last_heard > 3:
                    break
                time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
