"""`relaybot chat` as the reference client (relaylm.py's `chat` loop and `_parse_input`): the
line is stripped, the command runs to the first space, the rest keeps its inner whitespace;
an empty line is `...`; a command it has no rule for becomes `/command arg` plus
`* anon used /command arg`, and the model answers. The prompt texts are golden (no BOS: the
engine adds it as a token)."""

from __future__ import annotations

import io

from relaybot.cli.chat import ChatSession, Command, parse_line
from relaybot.conversation.api import Conversation
from relaybot.conversation.formats import Turn
from tests.support.fakes import ScriptedEngine

JOINED_TEXT = (
    "<|im_start|>user\n/join #random<|im_end|>\n"
    "<|im_start|>system\n* Now talking in #random<|im_end|>\n"
    "<|im_start|>system\n* anon has joined #random<|im_end|>\n"
)


def session(*replies: str) -> tuple[ChatSession, io.StringIO, ScriptedEngine]:
    engine = ScriptedEngine(*replies)
    out = io.StringIO()
    chat = ChatSession(Conversation(engine), out)
    chat.start()
    out.seek(0)
    out.truncate()
    return chat, out, engine


def test_parsing_keeps_inner_whitespace_and_the_typed_command() -> None:
    command = parse_line("  /Dance  with  the\tstars \t")
    assert command == Command("dance", "with  the\tstars")
    assert command.typed == "/Dance"
    assert parse_line("/topic   a  \t b  ") == Command("topic", "a  \t b")


def test_an_unknown_command_is_written_as_the_reference_writes_it_and_answered() -> None:
    chat, out, engine = session("*dances*")
    assert chat.handle("  /dance with  the\tstars  ")
    assert out.getvalue().splitlines() == [
        "<anon> /dance with  the\tstars",
        "* anon used /dance with  the\tstars",
        "<user> *dances*",
    ]
    [request] = engine.requests
    assert request.prompt.text == (
        JOINED_TEXT + "<|im_start|>anon\n/dance with  the\tstars<|im_end|>\n"
        "<|im_start|>system\n* anon used /dance with  the\tstars<|im_end|>\n"
        "<|im_start|>user\n"
    )


def test_an_unknown_command_keeps_its_spelling_and_the_references_trailing_space() -> None:
    chat, _, engine = session("ok")
    chat.handle("/Wave")
    assert chat.conversation.turns[-3:] == (
        Turn("anon", "/Wave "),
        Turn("system", "* anon used /Wave "),
        Turn("user", "ok"),
    )
    assert engine.requests[0].prompt.text.endswith(
        "<|im_start|>anon\n/Wave <|im_end|>\n"
        "<|im_start|>system\n* anon used /Wave <|im_end|>\n<|im_start|>user\n"
    )


def test_topic_keeps_spaces_and_tabs_and_the_model_does_not_answer() -> None:
    chat, out, engine = session("meow")
    chat.handle("/topic   cats  and \t dogs  ")
    assert out.getvalue().splitlines() == [
        "<anon> /topic cats  and \t dogs",
        "* Topic for #random is: cats  and \t dogs",
    ]
    assert engine.requests == []
    chat.handle("hi")
    assert engine.requests[0].prompt.text == (
        JOINED_TEXT + "<|im_start|>anon\n/topic cats  and \t dogs<|im_end|>\n"
        "<|im_start|>system\n* Topic for #random is: cats  and \t dogs<|im_end|>\n"
        "<|im_start|>anon\nhi<|im_end|>\n<|im_start|>user\n"
    )


def test_an_empty_line_is_the_silence_marker() -> None:
    chat, out, engine = session("hello?")
    chat.handle("   ")
    assert out.getvalue().splitlines() == ["<anon> ...", "<user> hello?"]
    assert engine.requests[0].prompt.text == (
        JOINED_TEXT + "<|im_start|>anon\n...<|im_end|>\n<|im_start|>user\n"
    )


def test_message_command_says_its_text_and_alone_is_an_empty_turn() -> None:
    # relaylm.py's parser turns a plain line into ("/message", line), so typing /message works.
    chat, _, engine = session("a", "b")
    chat.handle("/message  hi  there ")
    chat.handle("/message")
    assert chat.conversation.turns[3:] == (
        Turn("anon", "hi  there"),
        Turn("user", "a"),
        Turn("anon", ""),
        Turn("user", "b"),
    )
    assert engine.requests[1].prompt.text.endswith(
        "<|im_start|>anon\n<|im_end|>\n<|im_start|>user\n"
    )


def test_me_stays_relaybots_action() -> None:
    # relaylm.py has no /me (it would write `/me waves` and `* anon used /me waves`); relaybot
    # keeps the IRC action.
    chat, out, _ = session("waves back")
    chat.handle("/me waves")
    assert out.getvalue().splitlines() == ["* anon waves", "<user> waves back"]


def test_cast_in_the_chat_describes_the_model() -> None:
    chat, out, engine = session()
    chat.handle("/cast I'm  from\tSF.")
    assert out.getvalue().splitlines() == ["<anon> /whois user", "* user's bio: I'm  from\tSF."]
    assert engine.requests == []
