"""Real IRC servers on loopback for integration tests, plus a raw socket test client.

This module owns starting and stopping throwaway inspircd, ngircd and miniircd
processes (each with its own generated config, pid and log files inside a given
work directory, bound to 127.0.0.1 only, running in the foreground) and
`RawClient`, a tiny synchronous IRC client over a plain socket used to drive and
observe those servers from tests. Standard library only.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
SERVER_NAME = "irc.test"
SERVER_KINDS = ("inspircd", "ngircd", "miniircd")
STARTUP_TIMEOUT = 15.0
INSPIRCD_BIN = "/usr/sbin/inspircd"
INSPIRCD_MODULE_DIR = "/usr/lib/inspircd/modules"
NGIRCD_BIN = "/usr/sbin/ngircd"
INSPIRCD_MODULES = (
    "cap", "ircv3", "ircv3_accounttag", "ircv3_capnotify", "ircv3_ctctags",
    "ircv3_echomessage", "ircv3_invitenotify", "ircv3_msgid", "ircv3_servertime",
    "botmode",
)  # fmt: skip


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class RunningServer:
    """A server process started by this module; stop it (or use `with`) when done."""

    kind: str
    host: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s) and reap it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "<missing>"


def _launch(
    kind: str, argv: list[str], workdir: Path, port: int, logs: list[Path]
) -> RunningServer:
    """Start argv with output to workdir/<kind>.out and wait until the port accepts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
        try:  # a listener there would fool the readiness probe below
            probe.bind((HOST, port))
        except OSError as error:
            raise RuntimeError(f"{kind}: port {port} on {HOST} is not free: {error}") from None
    out_path = workdir / f"{kind}.out"
    with out_path.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    server = RunningServer(kind, HOST, port, process, workdir)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    problem = f"port {port} did not accept connections within {STARTUP_TIMEOUT:.0f} s"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            problem = f"exited early with status {process.returncode}"
            break
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    details = "\n".join(f"--- {p.name} ---\n{_tail(p)}" for p in [out_path, *logs])
    raise RuntimeError(f"{kind} failed to start: {problem}\n{details}")


def start_inspircd(
    workdir: Path, *, port: int | None = None, relaxed_flood: bool = True
) -> RunningServer:
    """Start InspIRCd 3 with IRCv3 modules; relaxed_flood=False keeps its default flood limits.

    Note: InspIRCd 3 completes client registration on its 1 s background tick, so
    each client needs about 1 s from NICK/USER to 001 (connect clients in parallel).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    flood = (
        ' threshold="1000" commandrate="1000000" fakelag="yes"'
        ' softsendq="1M" hardsendq="16M" recvq="64K"'
        if relaxed_flood else ""
    )  # fmt: skip
    modules = "".join(f'<module name="{name}">\n' for name in INSPIRCD_MODULES)
    config = workdir / "inspircd.conf"
    config.write_text(
        f'<path configdir="{workdir}" datadir="{workdir}" logdir="{workdir}"'
        f' moduledir="{INSPIRCD_MODULE_DIR}">\n'
        f'<server name="{SERVER_NAME}" description="relaybot test server" network="TestNet">\n'
        f'<admin name="Test" nick="test" email="test@{SERVER_NAME}">\n'
        f'<bind address="{HOST}" port="{port}" type="clients">\n'
        '<connect name="main" allow="*" timeout="20" pingfreq="2m" localmax="10000"'
        ' globalmax="10000" maxconnwarn="no" resolvehostnames="no" useident="no"'
        f' limit="10000" maxchans="100"{flood}>\n'
        f'<pid file="{workdir / "inspircd.pid"}">\n'
        f'<log method="file" type="* -USERINPUT -USEROUTPUT" level="default"'
        f' target="{workdir / "inspircd.log"}">\n'
        '<dns server="127.0.0.1" timeout="1">\n'  # never query the real resolver
        '<options prefixquit="Quit: " syntaxhints="no" casemapping="rfc1459">\n'
        '<performance clonesonconnect="no" quietbursts="yes">\n'
        '<security hideserver="" userstats="Pu" maxtargets="20">\n' + modules
    )
    argv = [INSPIRCD_BIN, "--config", str(config), "--nofork"]
    if os.geteuid() == 0:
        argv.append("--runasroot")  # InspIRCd 3 refuses to run as root otherwise
    return _launch("inspircd", argv, workdir, port, [workdir / "inspircd.log"])


def start_ngircd(
    workdir: Path, *, port: int | None = None, relaxed_flood: bool = True
) -> RunningServer:
    """Start ngIRCd without chroot, PAM, ident or DNS; relaxed_flood disables penalties."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    include_dir = workdir / "ngircd.conf.d"  # empty: keeps /etc/ngircd/ngircd.conf.d out
    include_dir.mkdir(exist_ok=True)
    config = workdir / "ngircd.conf"
    config.write_text(
        f"[Global]\nName = {SERVER_NAME}\nInfo = relaybot test server\n"
        "AdminInfo1 = relaybot tests\nAdminInfo2 = loopback\n"
        f"AdminEMail = test@{SERVER_NAME}\nListen = {HOST}\nPorts = {port}\n"
        'MotdPhrase = "relaybot test server"\nHelpFile =\nPidFile =\n'
        "[Limits]\nMaxConnections = 0\nMaxConnectionsIP = 0\nMaxJoins = 0\n"
        "MaxNickLength = 30\n"
        + ("MaxPenaltyTime = 0\n" if relaxed_flood else "")
        + f"[Options]\nPAM = no\nIdent = no\nDNS = no\nIncludeDir = {include_dir}\n"
    )
    # As root, ngIRCd drops to "nobody" by itself (ServerUID may not be 0); it only
    # needs to read its config before that, and writes nothing afterwards.
    argv = [NGIRCD_BIN, "--nodaemon", "--passive", "--config", str(config)]
    return _launch("ngircd", argv, workdir, port, [])


# miniircd names itself after socket.getfqdn(listen address) ("localhost"); patch it
# so every server kind reports SERVER_NAME. "--setuid root" is its documented opt-in
# for running as root.
_MINIIRCD_BOOT = (
    f"import socket, miniircd; socket.getfqdn = lambda *a: {SERVER_NAME!r}; miniircd.main()"
)


def start_miniircd(
    workdir: Path, *, port: int | None = None, relaxed_flood: bool = True
) -> RunningServer:
    """Start miniircd (no flood control, no channel ops, no INVITE); relaxed_flood is moot."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    argv = [
        sys.executable, "-c", _MINIIRCD_BOOT, "--listen", HOST, "--ports", str(port),
        "--verbose", "--log-file", str(workdir / "miniircd.log"),
        "--pid-file", str(workdir / "miniircd.pid"),
    ]  # fmt: skip
    if os.getuid() == 0 or os.getgid() == 0:
        argv += ["--setuid", "root"]
    return _launch("miniircd", argv, workdir, port, [workdir / "miniircd.log"])


def start_server(
    kind: str, workdir: Path, *, port: int | None = None, relaxed_flood: bool = True
) -> RunningServer:
    """Start the server of the given kind ("inspircd", "ngircd" or "miniircd")."""
    starters = {"inspircd": start_inspircd, "ngircd": start_ngircd, "miniircd": start_miniircd}
    if kind not in starters:
        raise ValueError(f"unknown IRC server kind {kind!r}; expected one of {SERVER_KINDS}")
    return starters[kind](workdir, port=port, relaxed_flood=relaxed_flood)


def parse_line(line: str) -> tuple[str, str, list[str]]:
    """Split a raw line into (source nick/server or "", COMMAND, params); tags dropped."""
    if line.startswith("@"):
        line = line.partition(" ")[2]
    source = ""
    if line.startswith(":"):
        prefix, _, line = line.partition(" ")
        source = prefix[1:].split("!", 1)[0]
    head, sep, trailing = line.partition(" :")
    params = head.split()
    if not params:
        return source, "", []
    return source, params[0].upper(), params[1:] + ([trailing] if sep else [])


class RawClient:
    """Synchronous line-based IRC client for tests; answers PING while waiting."""

    def __init__(self, sock: socket.socket, nick: str) -> None:
        self.sock = sock
        self.nick = nick
        self.lines: list[str] = []  # every line received, in order
        self.closed = False  # the server closed the connection
        self._pending: list[str] = []  # received but not yet returned by wait_for
        self._buffer = b""

    @classmethod
    def connect(cls, host: str, port: int, nick: str, *, timeout: float = 10.0) -> RawClient:
        client = cls(socket.create_connection((host, port), timeout=timeout), nick)
        try:
            client.send(f"NICK {nick}")
            client.send(f"USER {nick} 0 * :{nick}")
            client.wait_for(lambda line: parse_line(line)[1] == "001", timeout)
        except BaseException:
            client.sock.close()
            raise
        return client

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, line: str) -> None:
        self.send_bytes(line.encode() + b"\r\n")

    def privmsg(self, target: str, text: str) -> None:
        self.send(f"PRIVMSG {target} :{text}")

    def join(self, channel: str, timeout: float = 10.0) -> str:
        self.send(f"JOIN {channel}")

        def own_join(line: str) -> bool:
            source, command, params = parse_line(line)
            return (command == "JOIN" and source.lower() == self.nick.lower()
                    and bool(params) and params[0].lower() == channel.lower())  # fmt: skip

        return self.wait_for(own_join, timeout)

    def _receive(self, deadline: float) -> None:
        """Read once (up to the deadline), queue complete lines and answer PINGs."""
        self.sock.settimeout(max(0.01, min(0.5, deadline - time.monotonic())))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        except OSError:  # e.g. reset after the server killed us
            data = b""
        if not data:
            self.closed = True
            data = b"\n"  # flush a final unterminated line
        *complete, self._buffer = (self._buffer + data).split(b"\n")
        for raw in complete:
            if not (raw := raw.rstrip(b"\r")):
                continue
            line = raw.decode("utf-8", errors="replace")
            self.lines.append(line)
            self._pending.append(line)
            _, command, params = parse_line(line)
            if command == "PING" and not self.closed:
                try:
                    self.send("PONG :" + (params[-1] if params else SERVER_NAME))
                except OSError:
                    self.closed = True

    def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> str:
        """Return (and consume) the oldest unconsumed received line that matches.

        Raises TimeoutError after `timeout` seconds, or ConnectionError if the
        server closes the connection first; both carry the last 20 lines seen.
        """
        deadline = time.monotonic() + timeout
        while True:
            for index, line in enumerate(self._pending):
                if predicate(line):
                    del self._pending[index]
                    return line
            recent = "\n".join(self.lines[-20:])
            if self.closed:
                raise ConnectionError(f"{self.nick}: connection closed; last lines:\n{recent}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.nick}: no matching line in {timeout} s; last:\n{recent}")
            self._receive(deadline)

    def close(self) -> None:
        try:
            if not self.closed:
                self.send("QUIT :bye")
        except OSError:
            pass
        finally:
            self.sock.close()
            self.closed = True

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def notice_to(nick: str, containing: str = "") -> Callable[[str], bool]:
    """A NOTICE to `nick` whose text contains `containing`."""

    def match(line: str) -> bool:
        _, command, params = parse_line(line)
        return command == "NOTICE" and params[:1] == [nick] and containing in params[-1]

    return match


def privmsg_from(nick: str, target: str) -> Callable[[str], bool]:
    def match(line: str) -> bool:
        source, command, params = parse_line(line)
        return source == nick and command == "PRIVMSG" and params[:1] == [target]

    return match


def joins(nick: str, channel: str) -> Callable[[str], bool]:
    def match(line: str) -> bool:
        source, command, params = parse_line(line)
        return source == nick and command == "JOIN" and params[:1] == [channel]

    return match
