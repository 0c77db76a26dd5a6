"""Loading a local model: the transformers model and tokenizer for a ModelChoice, on CUDA
(bf16, or bitsandbytes 8/4-bit) or CPU, and the safetensors copy of a GGUF model in the cache
(dequantising GGUF on every start costs tens of seconds).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from relaybot.inference.selection import ModelChoice, ModelUnavailable
from relaybot.log import get_logger, route_library_logs

log = get_logger(component="engine")


def default_cache_dir() -> Path:
    explicit = os.environ.get("RELAYBOT_CACHE_DIR") or os.environ.get("CACHE_DIRECTORY")
    if explicit:
        return Path(explicit.split(":")[0])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "relaybot"


def cuda_free_bytes() -> int | None:
    import torch

    if not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info()
    return int(free)


# Per-conversation KV prefixes kept between replies. At these bounds the embedded model


def torch_dtype(name: str) -> Any:
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def gguf_cache_path(cache: Path, gguf_path: Path) -> Path:
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return cache / "models" / f"{gguf_path.stem}-{key.hexdigest()[:12]}"


def attention_implementation(requested: str, device: str) -> str:
    """What `model.attention` asks transformers for. `auto` is SDPA everywhere: it runs on
    CPU and CUDA and takes the padding mask of a mixed batch; flash attention 2 only when
    asked for and installed, because it needs fp16/bf16 on CUDA."""
    if requested == "auto":
        return "sdpa"
    if requested == "flash_attention_2":
        if device != "cuda":
            raise ModelUnavailable("model.attention = flash_attention_2 needs model.device cuda")
        try:
            import flash_attn  # type: ignore[import-not-found]  # noqa: F401
        except ImportError as exc:
            raise ModelUnavailable(
                "model.attention = flash_attention_2 needs the flash-attn package"
            ) from exc
    return requested


def placement(choice: ModelChoice) -> dict[str, Any]:
    """Where `from_pretrained` puts the weights: all on the GPU, or (`offload`) spread over GPU
    and CPU memory by accelerate, as relaylm.py loads the full model on a small GPU; on the
    CPU, the default."""
    if choice.offload:
        return {"device_map": "auto"}
    if choice.device == "cuda":
        return {"device_map": "cuda"}
    return {}


def load_model(
    choice: ModelChoice, cache: Path, *, allow_download: bool, attention: str = "auto"
) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    # Their records through relaybot's root handler, not their own plain-text one.
    route_library_logs()
    # Progress bars would land in the journal as garbage lines.
    transformers_logging.disable_progress_bar()

    dtype = torch_dtype(choice.dtype)
    local_only = not allow_download
    if choice.gguf_file:
        gguf_path = Path(choice.source) / choice.gguf_file
        converted = gguf_cache_path(cache, gguf_path) if gguf_path.is_file() else None
        if converted is not None and (converted / "config.json").is_file():
            source, kwargs = str(converted), {}
        else:
            source, kwargs = choice.source, {"gguf_file": choice.gguf_file}
    else:
        source, kwargs, converted = choice.source, {}, None
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only, **kwargs)
        load_kwargs: dict[str, Any] = {
            "dtype": dtype,
            "local_files_only": local_only,
            "attn_implementation": attention_implementation(attention, choice.device),
            **kwargs,
        }
        if choice.quantization != "none":
            load_kwargs["quantization_config"] = _bitsandbytes_config(choice, source, local_only)
        load_kwargs.update(placement(choice))
        model = AutoModelForCausalLM.from_pretrained(source, **load_kwargs)
    except (OSError, ValueError, ImportError) as exc:
        hint = "" if allow_download else " (downloads are off: set model.allow_download = true)"
        raise ModelUnavailable(f"cannot load model {source!r}: {exc}{hint}") from exc
    model.eval()
    if converted is not None and "gguf_file" in kwargs:
        _save_converted(model, tokenizer, converted)
    return model, tokenizer


def _bitsandbytes_config(choice: ModelChoice, source: str, local_only: bool) -> Any:
    from transformers import AutoConfig, BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ModelUnavailable(
            f"quantization '{choice.quantization}' needs bitsandbytes: pip install 'relaybot[cuda]'"
        ) from exc
    existing = getattr(
        AutoConfig.from_pretrained(source, local_files_only=local_only), "quantization_config", None
    )
    if existing is not None:
        return existing  # a pre-quantised checkpoint (the Relay 8-bit and 4-bit repos)
    if choice.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch_dtype(choice.dtype),
        bnb_4bit_use_double_quant=True,
    )


def _save_converted(model: Any, tokenizer: Any, target: Path) -> None:
    """Copy GGUF-loaded weights into a plain model and save it as safetensors, once."""
    from transformers import AutoModelForCausalLM

    try:
        config = model.config.__class__.from_dict(model.config.to_dict())
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.architectures = [type(model).__name__]
        plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
        plain.load_state_dict(model.state_dict())
        partial = target.with_name(target.name + ".partial")
        plain.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        partial.replace(target)
        log.info("model_cache_written", path=str(target))
    except (OSError, RuntimeError, ValueError) as exc:
        # The cache only saves start-up time; the bot runs the same without it.
        log.warning("model_cache_failed", path=str(target), error=str(exc))
