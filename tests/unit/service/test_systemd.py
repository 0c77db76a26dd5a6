"""systemd integration: the sd_notify client against a real AF_UNIX datagram socket, the bot's
READY/STATUS/WATCHDOG/RELOADING/STOPPING wiring (in-process on a scripted server, and as a real
`relaybot` process on miniircd), and `systemd-analyze verify` on the shipped unit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog.testing

import relaybot.service.readiness
from relaybot.config.schema import Config
from relaybot.service.systemd import MAX_STATUS_CHARS, Notifier, sanitize_status
from tests.support.botrunner import BotRunner
from tests.support.fakes import FixedEngine
from tests.support.ircservers import RawClient, RunningServer, parse_line
from tests.support.notify import NotifyListener
from tests.support.paths import REPO
from tests.support.scripted import ScriptedServer

VERIFY_SCRIPT = REPO / "scripts" / "verify-unit.sh"
UNIT = REPO / "systemd" / "relaybot.service"


def notifier_for(path: Path, **extra: str) -> Notifier:
    return Notifier.from_environment({"NOTIFY_SOCKET": str(path), **extra})


# --- the client ---------------------------------------------------------------------------


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier.from_environment({"WATCHDOG_USEC": "3000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert not notifier.ready("up")
    assert not notifier.status("x")
    assert not notifier.watchdog()
    assert not notifier.reloading()
    assert not notifier.ready_again()
    assert not notifier.stopping()
    assert Notifier.from_environment({"NOTIFY_SOCKET": ""}).enabled is False


def test_messages_on_a_filesystem_socket(socket_dir: Path, listener: NotifyListener) -> None:
    notifier = notifier_for(socket_dir / "notify.sock", WATCHDOG_USEC="3000000")
    assert notifier.enabled and notifier.watchdog_interval == 3.0

    assert notifier.status("connecting to irc.example:6697")
    assert listener.next(2) == {"STATUS": "connecting to irc.example:6697"}
    assert notifier.ready("connected to irc.example:6697 as relaybot; in #a, #b")
    assert listener.next(2) == {
        "READY": "1",
        "STATUS": "connected to irc.example:6697 as relaybot; in #a, #b",
    }
    assert notifier.is_ready
    assert notifier.watchdog()
    assert listener.next(2) == {"WATCHDOG": "1"}

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading = listener.next(2)
    assert reloading is not None and reloading["RELOADING"] == "1"
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after
    assert reloading["STATUS"] == "reloading configuration"
    assert notifier.ready_again("connected; in #a")
    assert listener.next(2) == {"READY": "1", "STATUS": "connected; in #a"}

    assert notifier.extend_timeout(2.5)
    assert listener.next(2) == {"EXTEND_TIMEOUT_USEC": "2500000"}
    assert notifier.stopping()
    assert listener.next(2) == {"STOPPING": "1", "STATUS": "shutting down"}
    assert not notifier.stopping()  # once only
    assert listener.next(0.3) is None
    notifier.close()
    assert not notifier.status("closed")


def test_abstract_socket(socket_dir: Path) -> None:
    name = f"relaybot-test-{uuid.uuid4().hex}"
    notify = NotifyListener("\0" + name)
    try:
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": "@" + name})
        assert notifier.enabled
        assert notifier.ready("up")
        assert notify.next(2) == {"READY": "1", "STATUS": "up"}
    finally:
        notify.close()
    assert not (socket_dir / name).exists()  # abstract: nothing in the file system


def test_unusable_addresses_disable_the_notifier() -> None:
    for address in ("relative/notify.sock", "@", "vsock:2:1234"):
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": address})
        assert not notifier.enabled, address
        assert not notifier.ready()


def test_a_vanished_socket_never_raises_and_is_logged_once(
    socket_dir: Path, listener: NotifyListener
) -> None:
    path = socket_dir / "notify.sock"
    notifier = notifier_for(path, WATCHDOG_USEC="1000000")
    assert notifier.ready("up")
    listener.close()  # bound file still there, nobody listening: ECONNREFUSED
    with structlog.testing.capture_logs() as logs:
        assert not notifier.watchdog()
        path.unlink()  # and now gone: ENOENT
        assert not notifier.status("still here")
        assert not notifier.stopping()
    failures = [entry for entry in logs if entry["event"] == "systemd_notify_failed"]
    assert len(failures) == 1, logs
    assert failures[0]["address"] == str(path) and failures[0]["message"] == "WATCHDOG=1"


def test_watchdog_environment(socket_dir: Path, listener: NotifyListener) -> None:
    path = socket_dir / "notify.sock"
    mine = notifier_for(path, WATCHDOG_USEC="20000000", WATCHDOG_PID=str(os.getpid()))
    assert mine.watchdog_interval == 20.0
    # WATCHDOG_PID names another process (we inherited the variables): no watchdog for us.
    other = notifier_for(path, WATCHDOG_USEC="20000000", WATCHDOG_PID=str(os.getpid() + 1))
    assert other.enabled and other.watchdog_interval is None
    assert not other.watchdog()
    assert other.status("still notifies")  # only the watchdog is someone else's
    assert listener.next(2) == {"STATUS": "still notifies"}
    for bad in ({"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "soon"}, {"WATCHDOG_PID": "x"}):
        env = {"WATCHDOG_USEC": "1000000", **bad}
        assert notifier_for(path, **env).watchdog_interval is None, bad
    assert notifier_for(path).watchdog_interval is None
    assert listener.next(0.3) is None


def test_status_is_one_sanitized_line(socket_dir: Path, listener: NotifyListener) -> None:
    notifier = notifier_for(socket_dir / "notify.sock")
    assert notifier.status("in #a\nREADY=1\r\n\x00\tand\u2028#b  ")
    assert listener.next(2) == {"STATUS": "in #a READY=1 and #b"}
    assert listener.raw[-1] == b"STATUS=in #a READY=1 and #b"  # one line: no READY=1 smuggled
    assert len(sanitize_status("x" * 5000)) == MAX_STATUS_CHARS
    assert sanitize_status("caf\u00e9 \U0001f916") == "caf\u00e9 \U0001f916"
    assert not notifier.status("\n\r")  # nothing left to say: nothing sent
    with pytest.raises(ValueError):
        notifier.send("READY=1\nSTATUS=x")


def test_reload_before_ready_does_not_declare_the_service_started(
    socket_dir: Path, listener: NotifyListener
) -> None:
    notifier = notifier_for(socket_dir / "notify.sock")
    assert not notifier.reloading()
    assert notifier.ready_again("connecting")
    assert listener.next(2) == {"STATUS": "connecting"}
    assert not notifier.is_ready


# --- the bot, in-process, on a scripted server ----------------------------------------------


@pytest.fixture
def systemd_env(
    socket_dir: Path, listener: NotifyListener, monkeypatch: pytest.MonkeyPatch
) -> NotifyListener:
    monkeypatch.setenv("NOTIFY_SOCKET", str(socket_dir / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "600000")  # pings every 0.2 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    return listener


@pytest.mark.integration
def test_bot_is_ready_once_in_every_channel_or_refused(
    config_factory: Callable[[str], Config], systemd_env: NotifyListener
) -> None:
    listener = systemd_env
    server = ScriptedServer()
    config = config_factory(f"""
[irc]
host = "127.0.0.1"
port = {server.port}
nick = "relaybot"
channels = ["#a", "#b"]
""")
    with BotRunner(config, FixedEngine("ok")) as runner:  # type: ignore[arg-type]
        server.accept()
        server.wait_for(b"USER ", 10)
        server.send(b":irc.test 001 relaybot :Welcome\r\n")
        server.wait_for(b"JOIN #b", 10)
        server.send(b":relaybot!bot@10.0.0.1 JOIN #a\r\n")
        waiting = listener.wait_for(lambda m: "joining #b" in m.get("STATUS", ""), 10)
        assert waiting["STATUS"] == (
            f"connected to 127.0.0.1:{server.port} as relaybot; in #a; joining #b"
        )
        server.send(b":irc.test 474 relaybot #b :Cannot join channel (+b)\r\n")
        ready = listener.wait_for(lambda m: m.get("READY") == "1", 10)
        assert ready["STATUS"] == f"connected to 127.0.0.1:{server.port} as relaybot; in #a"
        first = listener.received.index(ready)
        assert not any("READY" in m for m in listener.received[:first])
        assert listener.received[0] == {"STATUS": f"connecting to 127.0.0.1:{server.port}"}

        pings = [m for m in listener.collect(1.5) if m == {"WATCHDOG": "1"}]
        assert len(pings) >= 4, pings

        runner.bot._on_hangup(signal.SIGHUP, None)
        listener.wait_for(lambda m: m.get("RELOADING") == "1" and "MONOTONIC_USEC" in m, 10)
        again = listener.wait_for(lambda m: m.get("READY") == "1", 10)
        assert again["STATUS"].endswith("; in #a")

        server.send(b":relaybot!bot@10.0.0.1 JOIN #c\r\n")  # joined later (an invite, say)
        listener.wait_for(lambda m: m.get("STATUS", "").endswith("in #a, #c"), 10)
    listener.wait_for(lambda m: m.get("STOPPING") == "1", 10)
    server.close()


@pytest.mark.integration
def test_bot_is_ready_after_a_while_when_a_channel_never_answers(
    config_factory: Callable[[str], Config],
    systemd_env: NotifyListener,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(relaybot.service.readiness, "READY_TIMEOUT", 0.5)
    listener = systemd_env
    server = ScriptedServer()
    config = config_factory(f"""
[irc]
host = "127.0.0.1"
port = {server.port}
nick = "relaybot"
channels = ["#silent"]
""")
    with BotRunner(config, FixedEngine("ok")):  # type: ignore[arg-type]
        server.accept()
        server.wait_for(b"USER ", 10)
        server.send(b":irc.test 001 relaybot :Welcome\r\n")
        server.wait_for(b"JOIN #silent", 10)
        registered_at = time.monotonic()
        ready = listener.wait_for(lambda m: m.get("READY") == "1", 10)
        assert time.monotonic() - registered_at >= 0.3
        assert ready["STATUS"].endswith("as relaybot; in no channels; joining #silent")
    server.close()


# --- a real relaybot process, as systemd would run it ----------------------------------------


def bot_joined(line: str) -> bool:
    source, command, params = parse_line(line)
    return source == "relaybot" and command == "JOIN" and params[:1] == ["#relay"]


def log_events(path: Path) -> list[dict[str, object]]:
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.mark.integration
def test_relaybot_process_under_a_stand_in_systemd(
    tmp_path: Path,
    socket_dir: Path,
    listener: NotifyListener,
    irc_server_factory: Callable[[str], RunningServer],
    real_engine: object,  # warms the converted-model cache, so the process loads in seconds
) -> None:
    server = irc_server_factory("miniircd")
    config = tmp_path / "bot.toml"
    config.write_text(f"""
[irc]
network = "local"
host = "{server.host}"
port = {server.port}
nick = "relaybot"
channels = ["#relay"]
[model]
name = "embedded"
max_new_tokens = 16
[log]
format = "json"
[state]
dir = "state"
""")
    alice = RawClient.connect(server.host, server.port, "alice")
    alice.join("#relay")
    env = {**os.environ, "NOTIFY_SOCKET": str(socket_dir / "notify.sock")}
    env["WATCHDOG_USEC"] = "3000000"
    env.pop("WATCHDOG_PID", None)
    # As systemd does: WATCHDOG_PID names the main process (the shell execs into relaybot).
    argv = ["/bin/sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh"]
    argv += [sys.executable, "-m", "relaybot", "--config", str(config)]
    log_path = tmp_path / "bot.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        ready = listener.wait_for(lambda m: m.get("READY") == "1", 180)
        # READY=1 comes after the bot's own JOIN arrived (the bot logs "joined" first).
        joined = [e for e in log_events(log_path) if e["event"] == "joined"]
        assert [e["channel"] for e in joined] == ["#relay"], log_path.read_text()[-3000:]
        assert ready["STATUS"] == f"connected to {server.host}:{server.port} as relaybot; in #relay"
        alice.wait_for(bot_joined, 10)  # and the channel saw it
        assert not any("READY" in m for m in listener.received[: listener.received.index(ready)])

        pings = [m for m in listener.collect(5.0) if m == {"WATCHDOG": "1"}]
        assert len(pings) >= 3, listener.received[-20:]

        process.send_signal(signal.SIGHUP)
        listener.wait_for(lambda m: m.get("RELOADING") == "1" and "MONOTONIC_USEC" in m, 20)
        again = listener.wait_for(lambda m: m.get("READY") == "1", 20)
        assert again["STATUS"].endswith("in #relay")

        process.send_signal(signal.SIGTERM)
        listener.wait_for(lambda m: m.get("STOPPING") == "1", 20)
        assert process.wait(30) == 0
        alice.wait_for(lambda line: line.startswith(":relaybot!") and " QUIT" in line, 10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        alice.close()
    names = [event["event"] for event in log_events(log_path)]
    assert "systemd_notify_failed" not in names
    assert {"registered", "joined", "config_reloaded", "stopped"} <= set(names)


# --- the unit file ---------------------------------------------------------------------------


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_file_settings() -> None:
    unit = unit_settings(UNIT.read_text())
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "60",
        "Restart": "on-failure",
        "RestartSec": "5",
        "TimeoutStopSec": "30",
        "ExecStart": "/usr/local/bin/relaybot --config /etc/relaybot/bot.toml",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "PrivateDevices": "no",
        "DevicePolicy": "closed",
        "MemoryDenyWriteExecute": "no",
        "CapabilityBoundingSet": "",
        "SystemCallFilter": "@system-service",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "UMask": "0077",
    }
    for key, value in expected.items():
        assert unit.get(key) == [value], key
    assert set(unit["DeviceAllow"]) == {
        f"/dev/{node} rw" for node in ("nvidia0", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")
    }
    for key in ("State", "Cache", "Logs", "Configuration"):
        assert unit[f"{key}Directory"] == ["relaybot"]


def verify(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        ["bash", str(VERIFY_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env=env,
    )


def require_systemd_analyze() -> None:
    if shutil.which("systemd-analyze") is None and os.geteuid() != 0:
        pytest.skip("systemd-analyze is not installed and only root may install it")
    if not (REPO / ".venv" / "bin" / "relaybot").exists():
        pytest.skip("no .venv/bin/relaybot: run scripts/setup.sh")


def test_verify_unit_script_passes_on_the_shipped_unit() -> None:
    require_systemd_analyze()
    result = verify()
    if result.returncode == 77:
        pytest.skip(result.stderr.strip())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(as shipped) OK" in result.stdout
    assert "(with #Key= examples) OK" in result.stdout


def test_verify_unit_script_fails_on_a_broken_unit(tmp_path: Path) -> None:
    require_systemd_analyze()
    broken = tmp_path / "relaybot.service"
    text = UNIT.read_text().replace("WatchdogSec=60", "WatchdogSec=60\nWatchdogSecs=60")
    broken.write_text(text)
    result = verify(str(broken))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Unknown key 'WatchdogSecs'" in result.stderr
    # and a bad example, commented out in the shipped unit, is caught too
    text = UNIT.read_text().replace("#LoadCredential=sasl-password:", "#LoadCredential=bad/name:")
    broken.write_text(text)
    result = verify(str(broken))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "(as shipped) OK" in result.stdout
    assert "(with #Key= examples) FAILED" in result.stderr


def fake_systemd_analyze(directory: Path, verify_output: str) -> str:
    """A PATH whose systemd-analyze prints `verify_output` on stderr and exits 0."""
    directory.mkdir()
    script = directory / "systemd-analyze"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        f"  verify) cat >&2 <<'EOF'\n{verify_output}\nEOF\n  ;;\n"
        "  --version) echo 'systemd 0 (stand-in)' ;;\n"
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return f"{directory}{os.pathsep}{os.environ.get('PATH', '')}"


def test_verify_unit_script_ignores_only_output_about_the_machine(tmp_path: Path) -> None:
    if not (REPO / ".venv" / "bin" / "relaybot").exists():
        pytest.skip("no .venv/bin/relaybot: run scripts/setup.sh")
    machine = (
        "/lib/systemd/system/foo.service:12: Unknown key 'X' in section [Service], ignoring.\n"
        "bar.target: Wants dependency dropped\n"
        "System has not been booted with systemd as init system (PID 1). Can't operate."
    )
    result = verify(path=fake_systemd_analyze(tmp_path / "ok", machine))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.count("ignored, about this machine") == 6  # 3 lines, 2 copies
    about_unit = "relaybot.service:40: Unknown key 'Foo' in section [Service], ignoring."
    for output in (about_unit, "Something nobody expected"):
        result = verify(path=fake_systemd_analyze(tmp_path / str(uuid.uuid4()), output))
        assert result.returncode == 1, (output, result.stdout + result.stderr)
        assert output in result.stderr
