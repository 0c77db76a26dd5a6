"""Model presets: `model.name = "<preset>"` brings the card's format, stops and sampling;
explicit keys win; the variant is chosen by free VRAM, and refused clearly when none fits."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from relaybot.config.schema import Config, ConfigError, ModelConfig
from relaybot.conversation.instruct import FORMAT_NAMES
from relaybot.inference.presets import PRESETS, GiB
from relaybot.inference.selection import ModelUnavailable, choose_model

IRC = '[irc]\nhost = "127.0.0.1"\nnick = "bot"\n'

SEED_MODELS = {
    "relay",
    "airoboros-mpt-30b-gpt4-1p4",
    "mistral-7b-remax-v0.1",
    "llama3-iterative-dpo-final",
    "bagel-8x7b-v0.2",
}


def test_every_seed_model_has_a_preset_with_a_known_format() -> None:
    assert set(PRESETS) == SEED_MODELS
    for preset in PRESETS.values():
        assert preset.format in FORMAT_NAMES
        assert all(preset.stop)
        # Variants are ordered best first, so each needs less VRAM than the one before.
        needs = [variant.min_free_vram_gib for variant in preset.variants]
        assert needs == sorted(needs, reverse=True)
        assert any(variant.quantization == "none" for variant in preset.variants)


def test_preset_brings_format_sampling_stops_and_qa(
    config_factory: Callable[[str], Config],
) -> None:
    config = config_factory(IRC + '[model]\nname = "bagel-8x7b-v0.2"\n')
    model = config.model
    assert (model.format, model.temperature, model.top_k, model.top_p) == ("llama2", 0.7, 20, 0.9)
    assert (model.repetition_penalty, model.max_new_tokens) == (1.15, 100)
    assert model.stop == ("</s>",)
    assert model.qa is True
    assert config_factory(IRC + '[model]\nname = "mistral-7b-remax-v0.1"\n').model.qa is False


def test_explicit_keys_win_over_the_preset(config_factory: Callable[[str], Config]) -> None:
    model = config_factory(
        IRC + '[model]\nname = "airoboros-mpt-30b-gpt4-1p4"\nformat = "chatml"\n'
        'temperature = 0.1\nqa = false\nstop = ["###"]\n'
    ).model
    assert (model.format, model.temperature, model.qa, model.stop) == (
        "chatml",
        0.1,
        False,
        ("###",),
    )
    assert model.context_tokens == 8192  # not written, so the preset's


def test_a_plain_model_id_keeps_the_reference_defaults(
    config_factory: Callable[[str], Config],
) -> None:
    model = config_factory(IRC + '[model]\nname = "someone/some-model"\n').model
    assert model == ModelConfig(name="someone/some-model")


def test_empty_stop_string_is_refused(config_factory: Callable[[str], Config]) -> None:
    with pytest.raises(ConfigError, match=r"model\.stop"):
        config_factory(IRC + '[model]\nstop = [""]\n')


@pytest.mark.parametrize(
    ("name", "free_gib", "source", "quantization"),
    [
        ("relay", 40, "danlou/relay-v0.1-Mistral-Nemo-2407", "none"),
        ("relay", 13, "danlou/relay-v0.1-Mistral-Nemo-2407-4bit", "4bit"),
        ("bagel-8x7b-v0.2", 80, "jondurbin/bagel-8x7b-v0.2", "8bit"),
        ("bagel-8x7b-v0.2", 30, "jondurbin/bagel-8x7b-v0.2", "4bit"),
        ("mistral-7b-remax-v0.1", 24, "ziniuli/Mistral-7B-ReMax-v0.1", "none"),
        ("llama3-iterative-dpo-final", 12, "RLHFlow/LLaMA3-iterative-DPO-final", "8bit"),
        (
            "airoboros-mpt-30b-gpt4-1p4",
            24,
            "jondurbin/airoboros-mpt-30b-gpt4-1p4-five-epochs",
            "4bit",
        ),
    ],
)
def test_variant_by_free_vram(name: str, free_gib: int, source: str, quantization: str) -> None:
    choice = choose_model(ModelConfig(name=name), free_gib * GiB)
    assert (choice.source, choice.quantization, choice.device) == (source, quantization, "cuda")
    assert choice.dtype == "bfloat16"


def test_too_little_vram_is_a_clear_refusal() -> None:
    with pytest.raises(ModelUnavailable, match=r"needs at least 28 GiB of free VRAM, 8\.0 GiB"):
        choose_model(ModelConfig(name="bagel-8x7b-v0.2"), 8 * GiB)


def test_cpu_takes_the_full_precision_repository() -> None:
    choice = choose_model(ModelConfig(name="mistral-7b-remax-v0.1", device="cpu"), None)
    assert (choice.source, choice.quantization, choice.dtype) == (
        "ziniuli/Mistral-7B-ReMax-v0.1",
        "none",
        "float32",
    )


def test_quantization_key_picks_the_variant() -> None:
    config = ModelConfig(name="llama3-iterative-dpo-final", quantization="4bit")
    assert choose_model(config, 80 * GiB).quantization == "4bit"
    with pytest.raises(ModelUnavailable, match="needs a CUDA device"):
        choose_model(ModelConfig(name="relay", quantization="8bit", device="cpu"), None)
