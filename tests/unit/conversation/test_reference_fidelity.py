"""Golden prompts from the reference client's rules (relaylm.py, danlou/relay).

relaylm.py keeps a list of `{"role", "content"}` entries and renders them with the model's
ChatML chat template (axolotl's `chatml`: `<|im_start|>` role, newline, content, `<|im_end|>`,
newline, for every entry, nothing trimmed), then appends `<|im_start|>{nick}\\n` for the turn to
generate. It also puts the tokenizer's BOS in front, which relaybot's engines add as a token
rather than as text, so the prompt texts here start at the first turn. Its rules:

- `wildcard(role, cmd, arg)`: `{cmd} {arg}` as `role`, then `* {nick} used {cmd} {arg}`;
- `topic(role, text)`: `/topic {text}`, then `* Topic for #{channel} is: {text}`, text as given;
- `message(role, content)`: the content as given, so `""` is an empty turn;
- `cast(role, desc)`: `/whois {other}` as `role`, then `* {other}'s bio: {desc}` (relaybot's
  `cast(role, desc)` describes `role` instead; see `Conversation.cast`).
"""

from __future__ import annotations

import pytest

from relaybot.conversation.api import Conversation, command_name
from relaybot.conversation.formats import Turn
from tests.support.fakes import ScriptedEngine

S = "system"


def chatml(*turns: tuple[str, str], speaker: str) -> str:
    """What relaylm.py's `_generate` builds (without the BOS): every entry, then the prefix."""
    body = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in turns)
    return f"{body}<|im_start|>{speaker}\n"


JOINED = (
    ("user", "/join #random"),
    (S, "* Now talking in #random"),
    (S, "* anon has joined #random"),
)
JOINED_TEXT = (
    "<|im_start|>user\n/join #random<|im_end|>\n"
    "<|im_start|>system\n* Now talking in #random<|im_end|>\n"
    "<|im_start|>system\n* anon has joined #random<|im_end|>\n"
)


def joined(*replies: str) -> Conversation:
    conversation = Conversation(ScriptedEngine(*replies))
    conversation.join("user", "random")
    return conversation


def test_the_joined_context_is_the_reference_clients() -> None:
    assert joined().prompt_for("user").text == JOINED_TEXT + "<|im_start|>user\n"
    assert chatml(*JOINED, speaker="user") == JOINED_TEXT + "<|im_start|>user\n"


def test_any_other_command_is_the_turn_and_a_used_line_then_the_model_answers() -> None:
    conversation = joined("*dances too*")
    added = conversation.command("anon", "dance", "with  the\tstars")
    assert added == (
        Turn("anon", "/dance with  the\tstars"),
        Turn(S, "* anon used /dance with  the\tstars"),
    )
    golden = (
        JOINED_TEXT + "<|im_start|>anon\n/dance with  the\tstars<|im_end|>\n"
        "<|im_start|>system\n* anon used /dance with  the\tstars<|im_end|>\n"
        "<|im_start|>user\n"
    )
    assert conversation.prompt_for("user").text == golden
    assert golden == chatml(
        *JOINED,
        ("anon", "/dance with  the\tstars"),
        (S, "* anon used /dance with  the\tstars"),
        speaker="user",
    )
    assert conversation.respond() == Turn("user", "*dances too*")
    engine = conversation.engine
    assert isinstance(engine, ScriptedEngine)
    assert engine.requests[0].prompt.text == golden


def test_a_command_without_an_argument_keeps_the_references_space() -> None:
    # relaylm.py writes f"{cmd} {arg}" whatever arg is, so "/dance " ends with a space.
    conversation = joined()
    assert conversation.command("user", "/dance") == (
        Turn("user", "/dance "),
        Turn(S, "* user used /dance "),
    )
    assert conversation.prompt_for("anon").text == (
        JOINED_TEXT + "<|im_start|>user\n/dance <|im_end|>\n"
        "<|im_start|>system\n* user used /dance <|im_end|>\n"
        "<|im_start|>anon\n"
    )


def test_command_names_take_an_optional_slash_and_must_be_one_word() -> None:
    assert command_name("dance") == command_name("/dance") == "/dance"
    assert command_name("/Dance") == "/Dance"  # written as given
    for bad in ("", "/", "two words", "/tab\there", "bell\x07"):
        with pytest.raises(ValueError, match="command name"):
            command_name(bad)
    conversation = joined()
    with pytest.raises(ValueError, match="missing command name"):
        conversation.command("anon", "/")
    assert conversation.turns == tuple(Turn(*turn) for turn in JOINED)


def test_a_topic_keeps_runs_of_spaces_and_tabs_exactly() -> None:
    conversation = joined()
    text = "cats  and \t dogs\t\tonly"
    assert conversation.topic("anon", text) == (
        Turn("anon", f"/topic {text}"),
        Turn(S, f"* Topic for #random is: {text}"),
    )
    golden = (
        JOINED_TEXT + "<|im_start|>anon\n/topic cats  and \t dogs\t\tonly<|im_end|>\n"
        "<|im_start|>system\n* Topic for #random is: cats  and \t dogs\t\tonly<|im_end|>\n"
        "<|im_start|>user\n"
    )
    assert conversation.prompt_for("user").text == golden
    assert golden == chatml(
        *JOINED,
        ("anon", f"/topic {text}"),
        (S, f"* Topic for #random is: {text}"),
        speaker="user",
    )
    with pytest.raises(ValueError, match="missing topic text"):
        conversation.topic("anon", " \t ")


def test_an_empty_message_is_an_empty_turn_as_in_the_reference() -> None:
    conversation = joined()
    assert conversation.message("anon", "") == (Turn("anon", ""),)
    golden = JOINED_TEXT + "<|im_start|>anon\n<|im_end|>\n<|im_start|>user\n"
    assert conversation.prompt_for("user").text == golden
    assert golden == chatml(*JOINED, ("anon", ""), speaker="user")


def test_a_message_is_kept_exactly() -> None:
    conversation = joined()
    conversation.message("anon", "  two  spaces\tand a tab ")
    assert conversation.prompt_for("user").text == (
        JOINED_TEXT + "<|im_start|>anon\n  two  spaces\tand a tab <|im_end|>\n<|im_start|>user\n"
    )


def test_cast_describes_the_role_it_names_unlike_the_references_code() -> None:
    # relaybot: cast("user", bio) gives `user` the bio, looked up by anon (the reference's
    # `/cast bio` in its chat). relaylm.py's cast("user", bio) would write `user`'s `/whois anon`
    # and give the bio to anon, against its own docstring.
    conversation = joined()
    assert conversation.cast("user", "I'm  from\tSF.") == (
        Turn("anon", "/whois user"),
        Turn(S, "* user's bio: I'm  from\tSF."),
    )
    assert conversation.prompt_for("user").text == (
        JOINED_TEXT + "<|im_start|>anon\n/whois user<|im_end|>\n"
        "<|im_start|>system\n* user's bio: I'm  from\tSF.<|im_end|>\n"
        "<|im_start|>user\n"
    )
