"""Unit tests for relaybot.service.state_format: documents <-> values and the validation errors,
with no file system involved."""

from __future__ import annotations

import tomllib

import pytest

from relaybot.bridge.state import RuntimeState, SavedContext
from relaybot.config.channel_settings import ChannelSettings
from relaybot.conversation.formats import Turn
from relaybot.service.state_format import (
    FORMAT_VERSION,
    StateFormatError,
    decode,
    encode_context,
    encode_runtime,
    parse_context,
    parse_runtime,
)

RUNTIME = RuntimeState(
    joined=("#a", "#b"),
    parted=("#c",),
    mutes={"#a": 1_700_000_600.0},
    casts={"#b": "a pirate"},
    settings={"#a": ChannelSettings()},
    ignores=("*!*@spam.example",),
)


def test_runtime_encodes_and_parses_back() -> None:
    doc = decode(encode_runtime(RUNTIME))
    assert doc["version"] == FORMAT_VERSION
    assert parse_runtime(doc) == RUNTIME


def test_context_encodes_and_parses_back_without_a_topic() -> None:
    ctx = SavedContext(
        name="#chan",
        header=(Turn("relaybot", "/join #chan"),),
        turns=(Turn("alice", 'say "hi"\n<|im_end|>'),),
        saved_at=1_700_000_000.0,
    )
    doc = decode(encode_context(ctx))
    assert "topic" not in doc
    assert parse_context(doc) == ctx


def test_decode_names_what_is_wrong() -> None:
    with pytest.raises(StateFormatError, match="not valid UTF-8"):
        decode(b"version = 1\n\xff")
    with pytest.raises(StateFormatError, match="not valid TOML"):
        decode(b"version = ")


def _runtime_doc(**changes: object) -> dict[str, object]:
    doc = tomllib.loads(encode_runtime(RuntimeState()).decode("utf-8"))
    doc.update(changes)
    return doc


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"version": FORMAT_VERSION + 1}, "newer than this relaybot understands"),
        ({"version": 0}, "not a valid version"),
        ({"version": "1"}, "version must be an integer"),
        ({"extra": 1}, "unknown key"),
        ({"joined": ["#a b"]}, "contains a character IRC cannot carry"),
        ({"mutes": {"#a": True}}, "must be a number"),
        ({"settings": {"#a": {"nonsense": 1}}}, "unknown key"),
    ],
)
def test_invalid_runtime_documents_are_refused(changes: dict[str, object], problem: str) -> None:
    with pytest.raises(StateFormatError, match=problem):
        parse_runtime(_runtime_doc(**changes))


def test_missing_runtime_key_is_refused() -> None:
    doc = _runtime_doc()
    del doc["casts"]
    with pytest.raises(StateFormatError, match="missing key 'casts'"):
        parse_runtime(doc)


def test_encoding_refuses_values_that_would_not_load_back() -> None:
    with pytest.raises(ValueError, match="would not load back"):
        encode_runtime(RuntimeState(joined=("#has space",)))
    with pytest.raises(ValueError, match="would not load back"):
        encode_context(SavedContext(name="#chan", saved_at=float("inf")))
    with pytest.raises(ValueError, match="TOML cannot hold"):
        encode_context(SavedContext(name="#chan", turns=(Turn("a", "\ud800"),)))


def test_chosen_models_encode_and_parse_back() -> None:
    state = RuntimeState(model="org/net-wide:7b", models={"#a": "chan-only", "#b": "other"})
    raw = encode_runtime(state)
    assert parse_runtime(decode(raw)) == state
    assert 'model = "org/net-wide:7b"' in raw.decode()


def test_a_file_without_chosen_models_is_one_with_none_chosen() -> None:
    # What releases before model choices wrote, and what is written when nothing is chosen.
    raw = encode_runtime(RUNTIME)
    assert "model" not in decode(raw)
    assert parse_runtime(decode(raw)) == RUNTIME
    assert parse_runtime(decode(raw)).model is None


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"model": 3}, "model must be a string"),
        ({"model": ""}, "model must not be empty"),
        ({"model": "two words"}, "contains a character"),
        ({"models": ["#a"]}, "models must be a table"),
        ({"models": {"#a": "x\ny"}}, r"models\['#a'\] 'x\\ny' contains a character"),
        ({"models": {"#a b": "x"}}, "models key"),
    ],
)
def test_bad_chosen_models_are_refused(changes: dict[str, object], problem: str) -> None:
    with pytest.raises(StateFormatError, match=problem):
        parse_runtime(_runtime_doc(**changes))
