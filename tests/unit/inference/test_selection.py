"""`model.name = "auto"` as relaylm.py's `suggest_relay_model`: strictly more than 24e9, 15e9
and 11e9 bytes of free VRAM for bf16, 8-bit and 4-bit; below, the full model offloaded
(device_map auto) when its weights are here; without CUDA, the embedded model."""

from __future__ import annotations

import pytest

from relaybot.config.schema import ModelConfig
from relaybot.inference.local.loading import placement
from relaybot.inference.presets import GiB
from relaybot.inference.selection import (
    RELAY_4BIT,
    RELAY_8BIT,
    RELAY_BF16,
    ModelChoice,
    ModelUnavailable,
    choose_model,
)

AUTO = ModelConfig()


def absent(repo: str) -> bool:
    return False


def present(repo: str) -> bool:
    return repo == RELAY_BF16


def not_asked(repo: str) -> bool:
    raise AssertionError(f"the cache was consulted for {repo}")


@pytest.mark.parametrize(
    ("free", "source", "quantization", "dtype"),
    [
        (24_000_000_001, RELAY_BF16, "none", "bfloat16"),
        (24_000_000_000, RELAY_8BIT, "8bit", "float16"),  # not strictly more: not bf16
        (15_000_000_001, RELAY_8BIT, "8bit", "float16"),
        (15_000_000_000, RELAY_4BIT, "4bit", "float16"),
        (11_000_000_001, RELAY_4BIT, "4bit", "float16"),
        (24 * GiB, RELAY_BF16, "none", "bfloat16"),  # a 24 GB card: bf16, as the reference
        (16 * GiB, RELAY_8BIT, "8bit", "float16"),
        (12 * GiB, RELAY_4BIT, "4bit", "float16"),
    ],
)
def test_thresholds_are_the_references_strict_decimal_bytes(
    free: int, source: str, quantization: str, dtype: str
) -> None:
    choice = choose_model(AUTO, free, cached=not_asked)
    assert (choice.source, choice.quantization, choice.dtype) == (source, quantization, dtype)
    assert (choice.device, choice.offload, choice.gguf_file) == ("cuda", False, None)
    assert "relaylm.py" in choice.reason and "\n" not in choice.reason


def test_below_the_4bit_threshold_the_full_model_is_offloaded_when_its_weights_are_here() -> None:
    choice = choose_model(AUTO, 11_000_000_000, cached=present)
    assert choice == ModelChoice(
        RELAY_BF16, None, "cuda", "float16", "none", choice.reason, offload=True
    )
    assert choice.reason == (
        "free VRAM 11.00 GB, not more than 11 GB: the full model in float16, offloaded to CPU "
        "memory (device_map auto, relaylm.py's choice)"
    )
    # Downloads on: the reference downloads it, so does relaybot (the cache is not asked).
    download = ModelConfig(allow_download=True)
    assert choose_model(download, 4 * GiB, cached=not_asked).offload


def test_below_the_4bit_threshold_without_the_weights_the_embedded_model_runs_on_the_gpu() -> None:
    choice = choose_model(AUTO, 11_000_000_000, cached=absent)
    assert choice.gguf_file is not None and not choice.offload
    assert (choice.device, choice.quantization) == ("cuda", "none")
    assert choice.reason == (
        f"free VRAM 11.00 GB, not more than 11 GB, and {RELAY_BF16} is not in the Hugging Face "
        "cache (downloads off): the embedded small model"
    )


def test_without_cuda_the_embedded_model_and_the_cache_is_not_asked() -> None:
    choice = choose_model(AUTO, None, cached=not_asked)
    assert (choice.device, choice.dtype, choice.offload) == ("cpu", "float32", False)
    assert choice.gguf_file is not None
    assert choice.reason.startswith("no CUDA device: the embedded small model")
    on_cpu = choose_model(ModelConfig(device="cpu"), 80 * GiB, cached=not_asked)
    assert on_cpu.device == "cpu" and on_cpu.reason.startswith("model.device = 'cpu'")


def test_a_configured_dtype_wins() -> None:
    config = ModelConfig(dtype="bfloat16")
    assert choose_model(config, 16 * GiB).dtype == "bfloat16"
    assert choose_model(config, 8 * GiB, cached=present).dtype == "bfloat16"


def test_the_relay_preset_uses_the_same_strict_thresholds() -> None:
    relay = ModelConfig(name="relay")
    assert choose_model(relay, 24_000_000_001).source == RELAY_BF16
    assert choose_model(relay, 24_000_000_000).source == RELAY_8BIT
    assert choose_model(relay, 11_000_000_001).source == RELAY_4BIT
    with pytest.raises(ModelUnavailable, match="needs more than 11 GB of free VRAM"):
        choose_model(relay, 11_000_000_000)


def test_placement_is_the_device_map_given_to_from_pretrained() -> None:
    offloaded = choose_model(AUTO, 8 * GiB, cached=present)
    assert placement(offloaded) == {"device_map": "auto"}
    assert placement(choose_model(AUTO, 40 * GiB)) == {"device_map": "cuda"}
    assert placement(choose_model(AUTO, None)) == {}
