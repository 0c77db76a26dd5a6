"""Tests for relaybot.moderation.classifier, on tiny models built here."""

from __future__ import annotations

from pathlib import Path

import pytest

from relaybot.config.loader import loads_config
from relaybot.moderation import build_chain
from tests.support.moderators import CHANNEL, config_error, load


def _tiny_classifier(directory: Path, favour: str) -> Path:
    """A 1-layer BERT whose classifier ignores the text and prefers `favour`."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "you", "are", "nice"]
    backend = tokenizers.Tokenizer(
        tokenizers.models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="[UNK]")
    )
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=32,
    )
    labels = {0: "ok", 1: "toxic"}
    config = transformers.BertConfig(
        vocab_size=len(words),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=2,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        bias = [-6.0, 6.0] if favour == "toxic" else [6.0, -6.0]
        model.classifier.bias.copy_(torch.tensor(bias))
    directory.mkdir()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("classifiers")
    return {favour: _tiny_classifier(root / favour, favour) for favour in ("toxic", "ok")}


def test_classifier_blocks_when_a_block_label_wins(tiny_models: dict[str, Path]) -> None:
    moderator = load("classifier", model=str(tiny_models["toxic"]), block_labels=["toxic"])
    verdict = moderator.check_input("you are nice", CHANNEL)
    assert verdict.blocked and "toxic" in verdict.reason
    assert moderator.check_output("hello world", CHANNEL).blocked
    assert moderator.check_output("  ", CHANNEL).allowed  # nothing to classify


def test_classifier_allows_when_the_safe_label_wins(tiny_models: dict[str, Path]) -> None:
    moderator = load("classifier", model=str(tiny_models["ok"]), block_labels=["TOXIC"])
    assert moderator.check_input("you are nice", CHANNEL).allowed
    assert moderator.check_output("hello world " * 50, CHANNEL).allowed  # truncated, not an error
    # A threshold the winning "ok" label reaches blocks when "ok" is a block label.
    strict = load("classifier", model=str(tiny_models["ok"]), block_labels=["ok"], threshold=0.9)
    assert strict.check_input("hello", CHANNEL).blocked


def test_classifier_in_a_chain(tiny_models: dict[str, Path]) -> None:
    config = loads_config(
        f'[irc]\nhost = "h"\nnick = "n"\n[[moderation.hooks]]\nuse = "classifier"\n'
        f'model = "{tiny_models["toxic"]}"\nblock_labels = ["toxic"]\napply_to = "output"\n'
    )
    chain = build_chain(config.networks[0].moderation)
    assert chain.check_input("hello", CHANNEL).allowed
    verdict = chain.check_output("hello", CHANNEL)
    assert verdict.blocked and verdict.hook == "classifier"
    chain.close()


def test_classifier_options_are_checked(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    assert config_error("classifier", block_labels=["toxic"]).startswith(
        "moderation.hooks[0].model: missing"
    )
    assert config_error("classifier", model=str(tmp_path / "nope"), block_labels=["x"]).startswith(
        "moderation.hooks[0].model: "
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert config_error("classifier", model=str(empty), block_labels=["toxic"]).startswith(
        "moderation.hooks[0].model: cannot load"
    )
    model = str(tiny_models["ok"])
    assert config_error("classifier", model=model).startswith(
        "moderation.hooks[0].block_labels: missing"
    )
    assert config_error("classifier", model=model, block_labels=["toxic", "rude"]) == (
        "moderation.hooks[0].block_labels[1]: 'rude' is not a label of this model (ok, toxic)"
    )
    assert config_error(
        "classifier", model=model, block_labels=["toxic"], threshold=1.5
    ).startswith("moderation.hooks[0].threshold: must be between 0 and 1")
    assert config_error("classifier", model=model, block_labels=["toxic"], device="tpu").startswith(
        "moderation.hooks[0].device:"
    )
