"""The declarative conversation API: the exact turns each call adds, what the engine is asked,
and the exported JSON lines; one test on the real embedded model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from relaybot.config.schema import ModelConfig
from relaybot.conversation.api import Conversation, Roles, clean_reply
from relaybot.conversation.export import jsonl
from relaybot.conversation.formats import RelayFormat, Turn
from relaybot.conversation.instruct import format_by_name
from relaybot.inference.engine import Engine, EngineError, GenerationRequest, SamplingParams
from tests.support.fakes import FixedEngine, ScriptedEngine

S = "system"


class FailingEngine(FixedEngine):
    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        raise EngineError("out of memory")


def joined(engine: Engine, channel: str = "#pets") -> Conversation:
    conversation = Conversation(engine)
    conversation.join("user", channel)
    return conversation


def test_join_starts_over_with_the_reference_clients_three_turns() -> None:
    conversation = joined(FixedEngine())
    conversation.message("anon", "hi")
    added = conversation.join("anon", "cats")  # `#` is added when missing
    expected = (
        Turn("anon", "/join #cats"),
        Turn(S, "* Now talking in #cats"),
        Turn(S, "* user has joined #cats"),
    )
    assert added == expected
    assert conversation.turns == expected
    assert conversation.channel == "#cats"
    with pytest.raises(ValueError, match="channel"):
        conversation.join("anon", " # ")


def test_scene_and_chat_turns_are_written_as_the_reference_client_writes_them() -> None:
    conversation = joined(FixedEngine())
    # As relaylm.py writes them: the text exactly, spaces, tabs and line breaks kept.
    assert conversation.topic("anon", "cats  and\tdogs") == (
        Turn("anon", "/topic cats  and\tdogs"),
        Turn(S, "* Topic for #pets is: cats  and\tdogs"),
    )
    # cast(role, ...) gives `role` the bio; the other party looks it up.
    assert conversation.cast("user", "a vet who loves cats") == (
        Turn("anon", "/whois user"),
        Turn(S, "* user's bio: a vet who loves cats"),
    )
    assert conversation.message("anon", "  hello  ") == (Turn("anon", "  hello  "),)
    assert conversation.message("anon", "") == (Turn("anon", ""),)
    assert conversation.slap("anon") == (
        Turn("anon", "/slap user"),
        Turn(S, "* anon slaps user around a bit with a large trout"),
    )
    assert conversation.slap("user", "bob") == (
        Turn("user", "/slap bob"),
        Turn(S, "* user slaps bob around a bit with a large trout"),
    )
    assert conversation.action("anon", "waves") == (Turn(S, "* anon waves"),)
    assert conversation.last() == Turn(S, "* anon waves")
    assert len(conversation.turns) == 3 + 2 + 2 + 1 + 1 + 2 + 2 + 1
    with pytest.raises(ValueError, match="missing topic"):
        conversation.topic("anon", " ")
    with pytest.raises(ValueError, match="missing description"):
        conversation.cast("user", "")


def test_respond_asks_for_the_speakers_turn_and_appends_the_cleaned_reply() -> None:
    engine = ScriptedEngine("<user>  meow!<|im_end|>junk", "")
    conversation = joined(engine)
    conversation.message("anon", "hello")
    before = conversation.turns

    reply = conversation.respond("user")

    assert reply == Turn("user", "meow!")
    assert conversation.turns == (*before, reply)
    assert conversation.last() == reply
    [request] = engine.requests
    assert request.prompt == RelayFormat().render(before, "user")
    assert request.prompt.text.endswith("<|im_start|>anon\nhello<|im_end|>\n<|im_start|>user\n")
    assert request.params == SamplingParams()
    # The model writing nothing is Relay's silence marker, so the context stays well-formed.
    assert conversation.respond().content == "..."


def test_respond_for_the_human_role_is_the_lazy_turn() -> None:
    engine = ScriptedEngine("what do cats eat?")
    conversation = joined(engine)
    assert conversation.respond("anon") == Turn("anon", "what do cats eat?")
    assert engine.requests[0].prompt.text.endswith("<|im_start|>anon\n")


def test_retry_replaces_the_models_last_reply() -> None:
    engine = ScriptedEngine("first", "second", "third")
    conversation = joined(engine)
    conversation.message("anon", "hello")
    conversation.respond()
    asked_first = engine.requests[0].prompt

    assert conversation.retry() == Turn("user", "second")

    assert [t.content for t in conversation.turns[-2:]] == ["hello", "second"]
    assert engine.requests[1].prompt == asked_first  # the same question again
    # Nothing of the model's to replace: retry just asks for a reply.
    conversation.message("anon", "and?")
    conversation.retry()
    assert [t.content for t in conversation.turns[-3:]] == ["second", "and?", "third"]


def test_a_fixed_seed_steps_per_generation_so_a_retry_can_differ() -> None:
    engine = ScriptedEngine("a", "b", "c")
    conversation = Conversation(engine, params=SamplingParams(seed=7, max_new_tokens=16))
    conversation.respond()
    conversation.retry()
    conversation.respond("anon")
    assert [r.params.seed for r in engine.requests] == [7, 8, 9]
    assert {r.params.max_new_tokens for r in engine.requests} == {16}
    unseeded = ScriptedEngine("a")
    Conversation(unseeded).respond()
    assert unseeded.requests[0].params.seed is None


def test_a_failed_generation_leaves_the_context_as_it_was() -> None:
    conversation = joined(FailingEngine())
    conversation.message("anon", "hello")
    before = conversation.turns
    with pytest.raises(EngineError):
        conversation.respond()
    assert conversation.turns == before


def test_a_failed_retry_keeps_the_reply_it_was_to_replace() -> None:
    engine = ScriptedEngine("first")
    conversation = joined(engine)
    conversation.respond()
    before = conversation.turns
    conversation.engine = FailingEngine()
    with pytest.raises(EngineError):
        conversation.retry()
    assert conversation.turns == before


def test_scene_set_before_anyone_speaks_survives_trimming_and_later_turns_keep_order() -> None:
    # A window of 200 "tokens" (words + 1) minus 128 for the reply: a few turns fit.
    conversation = joined(ScriptedEngine(context_window=200))
    conversation.cast("user", "a pirate")
    scene = conversation.turns
    for n in range(40):
        conversation.message("anon", f"line {n} with a few words in it")
    turns = conversation.turns
    assert turns[: len(scene)] == scene
    assert Turn("anon", "line 0 with a few words in it") not in turns
    assert turns[-1] == Turn("anon", "line 39 with a few words in it")
    # A topic set mid-conversation stays where it happened.
    conversation.topic("anon", "ships")
    assert conversation.turns[-2:] == (
        Turn("anon", "/topic ships"),
        Turn(S, "* Topic for #pets is: ships"),
    )


def test_init_context_forgets_everything() -> None:
    conversation = joined(FixedEngine())
    conversation.init_context()
    assert conversation.turns == ()
    assert conversation.last() is None
    assert conversation.channel == "#pets"


def test_roles_other_and_validation() -> None:
    roles = Roles("relaybot", "alice")
    assert roles.other("relaybot") == "alice"
    assert roles.other("alice") == roles.other("bob") == "relaybot"
    for bad in (("x", "x"), ("system", "anon"), ("two words", "anon"), ("", "anon")):
        with pytest.raises(ValueError):
            Roles(*bad)
    conversation = Conversation(ScriptedEngine("hi"), roles=roles, channel="chan")
    assert conversation.join("relaybot", "#chan")[-1] == Turn(S, "* alice has joined #chan")
    assert conversation.respond() == Turn("relaybot", "hi")


def test_export_writes_the_context_as_json_lines(tmp_path: Path) -> None:
    conversation = joined(ScriptedEngine('café "ok"\u2028done'))
    conversation.message("anon", "héllo")
    conversation.respond()
    path = conversation.export(tmp_path / "chat.jsonl")

    assert path == tmp_path / "chat.jsonl"
    raw = path.read_bytes().decode("utf-8")
    assert raw.splitlines() == [
        '{"role": "user", "content": "/join #pets"}',
        '{"role": "system", "content": "* Now talking in #pets"}',
        '{"role": "system", "content": "* anon has joined #pets"}',
        '{"role": "anon", "content": "héllo"}',
        '{"role": "user", "content": "café \\"ok\\"\\u2028done"}',
    ]
    rows = [json.loads(line) for line in raw.splitlines()]
    assert [Turn(**row) for row in rows] == list(conversation.turns)
    # Exporting again replaces the file; no temporary files are left behind.
    conversation.init_context()
    conversation.export(path)
    assert path.read_bytes() == b""
    assert [p.name for p in tmp_path.iterdir()] == ["chat.jsonl"]


def test_jsonl_keeps_a_lone_surrogate_as_a_json_escape() -> None:
    data = jsonl([Turn("anon", "bad \udcff byte")])
    assert json.loads(data) == {"role": "anon", "content": "bad \udcff byte"}


def test_clean_reply_cuts_at_stops_and_drops_an_echoed_prefix() -> None:
    assert clean_reply(" <bot> hi\n<anon> more", "bot", ("\n<",)) == "hi"
    assert clean_reply("<other> hi", "bot", ()) == "<other> hi"
    assert clean_reply("  \n", "bot", ()) == ""


def test_two_role_formats_render_the_channel_and_the_echo_is_stripped() -> None:
    engine = ScriptedEngine("<user> arr!")
    conversation = Conversation(engine, fmt=format_by_name("chatml"))
    conversation.join("user", "#ships")
    conversation.message("anon", "ahoy")
    assert conversation.respond() == Turn("user", "arr!")
    assert "<anon> ahoy" in engine.requests[0].prompt.text


@pytest.mark.integration
def test_the_embedded_model_responds(real_engine: Engine) -> None:
    # conftest's engine is `model.name = "embedded"` on CPU; from_config (the same loading) runs
    # in the `relaybot chat` terminal tests.
    conversation = Conversation(
        real_engine,
        fmt=format_by_name(ModelConfig().format),
        params=SamplingParams(max_new_tokens=12, seed=5),
    )
    conversation.join("user", "portugal")
    conversation.cast("user", "I'm from Portugal.")
    conversation.message("anon", "What's your favorite holiday?")
    reply = conversation.respond("user")
    assert reply.role == "user"
    assert reply.content.strip()
    assert "<|im_" not in reply.content
    assert conversation.last() == reply
    assert "SmolLM2" in conversation.engine.description
