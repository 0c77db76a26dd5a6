"""IRCv3 draft/multiline against a scripted server (none of the servers installed here offers
it): where the server offers it, an answer of several lines goes as one client batch, wrapped
lines concatenated, threaded on the opening BATCH; where it does not, or the answer is over its
limits, or has a /me, the lines go one by one as before. Either way the context holds the
answer as one turn."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from relaybot.config.schema import Config
from tests.support.botrunner import BotRunner
from tests.support.fakes import FixedEngine
from tests.support.scripted import ScriptedServer

pytestmark = pytest.mark.integration

LONG_LINE = " ".join(f"word{i}" for i in range(90))  # ~600 bytes: wraps into two lines
ANSWER = f"The first line.\n{LONG_LINE}"


def config_for(config_factory: Callable[[str], Config], port: int, tmp: str) -> Config:
    return config_factory(f"""
[irc]
host = "127.0.0.1"
port = {port}
nick = "relaybot"
channels = ["#relay"]
[policy]
cooldown = 0.0
[reply]
max_lines = 5
[state]
dir = "{tmp}"
""")


def converse(server: ScriptedServer, offer: bytes) -> list[str]:
    """Register offering `offer`, join, ask; the lines the bot sent."""
    server.accept()
    server.wait_for(b"CAP LS 302", 10)
    server.send(b":irc.test CAP * LS :" + offer + b"\r\n")
    request = server.wait_for(b"CAP REQ", 10)
    server.send(b":irc.test CAP relaybot ACK :" + request.split(b":", 1)[1] + b"\r\n")
    server.wait_for(b"CAP END", 10)
    server.send(b":irc.test 001 relaybot :Welcome\r\n")
    server.wait_for(b"JOIN #relay", 10)
    server.send(b":relaybot!r@127.0.0.1 JOIN #relay\r\n")
    server.send(b":irc.test 353 relaybot = #relay :relaybot alice\r\n")
    server.send(b":irc.test 366 relaybot #relay :End of /NAMES list.\r\n")
    server.send(b"@msgid=q1 :alice!a@127.0.0.1 PRIVMSG #relay :relaybot: tell me\r\n")
    return [line.decode() for line in server.received]


def said(runner: BotRunner) -> list[str]:
    turns = runner.turns("#relay") or []
    return [t.content for t in turns if t.role == "relaybot" and not t.content.startswith("/join")]


def test_an_answer_of_several_lines_goes_as_one_multiline_batch(
    config_factory: Callable[[str], Config], tmp_path: object
) -> None:
    server = ScriptedServer()
    offer = b"message-tags batch draft/multiline=max-bytes=4096,max-lines=24"
    config = config_for(config_factory, server.port, str(tmp_path))
    with BotRunner(config, FixedEngine(ANSWER)) as runner:  # type: ignore[arg-type]
        converse(server, offer)
        server.wait_for(b"BATCH -", 20)
        lines = [line.decode() for line in server.received]
        runner.wait_until(lambda: said(runner) != [], 10, "the answer in the context")
        assert said(runner) == [ANSWER]
    server.close()
    request = next(line for line in lines if line.startswith("CAP REQ"))
    assert {"batch", "draft/multiline", "message-tags"} <= set(request.split(":", 1)[1].split())
    start = next(i for i, line in enumerate(lines) if " BATCH +" in line)
    end = next(i for i, line in enumerate(lines) if line.startswith("BATCH -"))
    opening = lines[start].split(" ")
    assert opening[0] == "@+draft/reply=q1" and opening[1] == "BATCH"
    ref = opening[2][1:]
    assert opening[3:] == ["draft/multiline", "#relay"]
    assert lines[end] == f"BATCH -{ref}"
    inner = lines[start + 1 : end]
    assert len(inner) == 3
    assert inner[0] == f"@batch={ref} PRIVMSG #relay :The first line."
    assert inner[1].startswith(f"@batch={ref} PRIVMSG #relay :word0 ")
    assert inner[2].startswith(f"@batch={ref};draft/multiline-concat PRIVMSG #relay : word")
    # The concatenated lines are the model's long line exactly.
    texts = [line.split(" :", 1)[1] for line in inner[1:]]
    assert "".join(texts) == LONG_LINE
    assert not any("PRIVMSG" in line and "batch=" not in line for line in lines)


@pytest.mark.parametrize(
    ("offer", "answer"),
    [
        (b"message-tags", ANSWER),  # no multiline offered
        (b"message-tags batch draft/multiline=max-bytes=100", ANSWER),  # over its max-bytes
        (b"message-tags batch draft/multiline=max-bytes=4096", f"/me nods\n{LONG_LINE}"),
    ],
)
def test_otherwise_the_lines_go_one_by_one(
    offer: bytes, answer: str, config_factory: Callable[[str], Config], tmp_path: object
) -> None:
    server = ScriptedServer()
    config = config_for(config_factory, server.port, str(tmp_path))
    with BotRunner(config, FixedEngine(answer)):  # type: ignore[arg-type]
        converse(server, offer)
        server.wait_for(LONG_LINE[-20:].encode(), 20)
        lines = [line.decode() for line in server.received]
    server.close()
    assert not any("BATCH" in line for line in lines)
    privmsgs = [line for line in lines if " PRIVMSG #relay :" in line]
    assert len(privmsgs) == 3
    assert all(line.startswith("@+draft/reply=q1 PRIVMSG") for line in privmsgs)
    if b"draft/multiline" not in offer:
        request = next(line for line in lines if line.startswith("CAP REQ"))
        assert "batch" not in request.split(":", 1)[1].split()
