"""Memory planning for the local engine: what the configured caches need, what the device has
free once the weights are loaded, and the refusal to start (with the keys to lower) when the
first is more than the second.

Everything here is pure arithmetic on plain values except `available_memory_bytes`, which
reads CUDA, /proc and the cgroup files; torch is only imported there, for CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relaybot.inference.selection import GiB, ModelUnavailable

MiB = 1024**2

# Scores are copied a few times per decode step in float32 whatever the model's dtype: the
# logits themselves, their float copy, the repetition-penalised scores and the softmax.
LOGIT_COPIES = 4
# Fixed room on top of the caches: one prompt's prefill activations (each row is prefilled
# alone, so this does not grow with the batch) and allocator fragmentation.
WORKING_HEADROOM_BYTES = 256 * MiB

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

PROC_MEMINFO = Path("/proc/meminfo")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def text_config(model_config: Any) -> Any:
    """The language-model part of a transformers config (multimodal configs nest it)."""
    get_text_config = getattr(model_config, "get_text_config", None)
    if callable(get_text_config):
        return get_text_config()
    return getattr(model_config, "text_config", None) or model_config


def dtype_bytes(dtype: str) -> int:
    """Bytes per KV element for a `ModelChoice.dtype`. Quantised weights still keep their KV
    cache in the compute dtype, so this is the configured dtype, not the weights' storage."""
    try:
        return _DTYPE_BYTES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r} (bfloat16, float16 or float32)") from None


def kv_bytes_per_token(model_config: Any, element_size: int) -> int:
    """Bytes of KV cache one token costs across all layers: K and V, each kv_heads * head_dim.

    Raises ValueError when the config does not describe a standard attention layout."""
    config = text_config(model_config)
    layers = getattr(config, "num_hidden_layers", None)
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None)
    if not head_dim:
        hidden = getattr(config, "hidden_size", None)
        head_dim = hidden // heads if hidden and heads else None
    if not (layers and kv_heads and head_dim):
        raise ValueError(
            f"cannot tell the KV cache size of a {type(config).__name__}: it needs "
            "num_hidden_layers, num_attention_heads (or num_key_value_heads) and head_dim "
            "(or hidden_size)"
        )
    return 2 * int(layers) * int(kv_heads) * int(head_dim) * element_size


def vocab_size_of(model_config: Any) -> int:
    """The output vocabulary size, which sizes the logits of every decode step."""
    return int(getattr(text_config(model_config), "vocab_size", 0) or 0)


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """What the engine's caches will take at their configured bounds, and what is free.

    `available_bytes` is measured after the weights are loaded, so weights are not counted in
    `needed_bytes`; None means it could not be measured, and then nothing is refused."""

    device: str  # cuda | cpu
    kv_per_token: int
    max_batch: int
    context_tokens: int
    vocab_size: int
    decode_cache_bytes: int  # the decode loop's KV buffer at its largest
    prefix_cache_bytes: int  # conversations' KV prefixes kept between replies
    working_bytes: int  # logits and activations, plus fixed headroom
    available_bytes: int | None

    @property
    def needed_bytes(self) -> int:
        return self.decode_cache_bytes + self.prefix_cache_bytes + self.working_bytes

    @property
    def fits(self) -> bool:
        return self.available_bytes is None or self.needed_bytes <= self.available_bytes


def working_memory_bytes(max_batch: int, vocab_size: int) -> int:
    return max_batch * vocab_size * 4 * LOGIT_COPIES + WORKING_HEADROOM_BYTES


def plan_memory(
    *,
    device: str,
    kv_per_token: int,
    max_batch: int,
    context_tokens: int,
    prefix_cache_bytes: int,
    vocab_size: int,
    available_bytes: int | None,
) -> MemoryPlan:
    """The plan for a configuration. `context_tokens` is the context after clamping to the
    model's window: a decode batch's buffer is `max_batch` rows of prompt plus new tokens, and
    prompts are cut to leave room for the new tokens, so a row never exceeds it. The rows'
    prefill caches are handed to that buffer layer by layer, so they replace, not double, it.
    `prefix_cache_bytes` is 0 where prefixes are not kept (no entries, or no stepwise decode)."""
    return MemoryPlan(
        device=device,
        kv_per_token=kv_per_token,
        max_batch=max_batch,
        context_tokens=context_tokens,
        vocab_size=vocab_size,
        decode_cache_bytes=max_batch * context_tokens * kv_per_token,
        prefix_cache_bytes=prefix_cache_bytes,
        working_bytes=working_memory_bytes(max_batch, vocab_size),
        available_bytes=available_bytes,
    )


def largest_fitting_batch(plan: MemoryPlan) -> int:
    """The largest `max_batch` that fits with the plan's other settings (0: not even one)."""
    if plan.available_bytes is None:
        return plan.max_batch
    fixed = plan.prefix_cache_bytes + WORKING_HEADROOM_BYTES
    per_row = plan.context_tokens * plan.kv_per_token + plan.vocab_size * 4 * LOGIT_COPIES
    if per_row <= 0:
        return plan.max_batch
    return max(0, (plan.available_bytes - fixed) // per_row)


def check_fit(plan: MemoryPlan) -> None:
    """Raise ModelUnavailable, naming the numbers and the keys to lower, when the plan does
    not fit."""
    if plan.fits or plan.available_bytes is None:
        return
    kib_per_token = plan.kv_per_token / 1024
    parts = [
        f"decode cache {_gib(plan.decode_cache_bytes)} GiB ({plan.max_batch} sequences of "
        f"{plan.context_tokens} tokens, {kib_per_token:.1f} KiB a token)",
        f"prefix cache {_gib(plan.prefix_cache_bytes)} GiB",
        f"working memory {_gib(plan.working_bytes)} GiB",
    ]
    where = "free VRAM" if plan.device == "cuda" else "available memory"
    advice = "lower model.max_batch, model.context_tokens or model.prefix_cache_mib"
    batch = largest_fitting_batch(plan)
    if 0 < batch < plan.max_batch:
        advice += f" (model.max_batch = {batch} fits with the rest unchanged)"
    if plan.device == "cuda":
        # Smaller weights leave more VRAM free for the caches.
        advice += ", or set model.quantization = '8bit' or '4bit'"
    raise ModelUnavailable(
        f"the model's caches need {_gib(plan.needed_bytes)} GiB but only "
        f"{_gib(plan.available_bytes)} GiB of {where} is left after loading the weights on "
        f"{plan.device}: {', '.join(parts)}; {advice}"
    )


def fit_summary(plan: MemoryPlan) -> dict[str, float]:
    """GiB figures for a log line."""
    summary = {
        "decode_cache_gib": _gib_value(plan.decode_cache_bytes),
        "prefix_cache_gib": _gib_value(plan.prefix_cache_bytes),
        "working_gib": _gib_value(plan.working_bytes),
        "needed_gib": _gib_value(plan.needed_bytes),
    }
    if plan.available_bytes is not None:
        summary["available_gib"] = _gib_value(plan.available_bytes)
    return summary


def _gib_value(size: int) -> float:
    return round(size / GiB, 2)


def _gib(size: int) -> str:
    return f"{size / GiB:.2f}"


# --- measuring ------------------------------------------------------------------------------


def available_memory_bytes(
    device: str,
    *,
    meminfo: Path = PROC_MEMINFO,
    proc_cgroup: Path = PROC_SELF_CGROUP,
    cgroup_root: Path = CGROUP_ROOT,
) -> int | None:
    """Memory the caches may use, measured after the weights are loaded: free VRAM on CUDA; on
    the CPU MemAvailable, or the cgroup's headroom (systemd MemoryMax) where that is lower.
    None when it cannot be read."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return None
        free, _total = torch.cuda.mem_get_info()
        return int(free)
    candidates = [
        value
        for value in (
            _read_meminfo_available(meminfo),
            cgroup_headroom(proc_cgroup=proc_cgroup, cgroup_root=cgroup_root),
        )
        if value is not None
    ]
    return min(candidates) if candidates else None


def parse_meminfo_available(text: str) -> int | None:
    """MemAvailable from /proc/meminfo text, in bytes (the kernel's kB are KiB)."""
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name == "MemAvailable":
            fields = rest.split()
            if fields and fields[0].isdigit():
                return int(fields[0]) * 1024
    return None


def parse_cgroup_v2_path(text: str) -> str | None:
    """The process's cgroup v2 path from /proc/self/cgroup text (the `0::` line)."""
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:].strip() or "/"
    return None


def cgroup_headroom(
    *, proc_cgroup: Path = PROC_SELF_CGROUP, cgroup_root: Path = CGROUP_ROOT
) -> int | None:
    """Bytes left under the tightest cgroup v2 memory.max on the way from this process's
    cgroup up to the root; None when no level sets one (or cgroup v2 is not there)."""
    path = parse_cgroup_v2_path(_read(proc_cgroup) or "")
    if path is None:
        return None
    directory = cgroup_root / path.strip("/")
    headrooms: list[int] = []
    while True:
        headroom = _level_headroom(directory)
        if headroom is not None:
            headrooms.append(headroom)
        if directory == cgroup_root or cgroup_root not in directory.parents:
            break
        directory = directory.parent
    return min(headrooms) if headrooms else None


def _level_headroom(directory: Path) -> int | None:
    limit = (_read(directory / "memory.max") or "").strip()
    current = (_read(directory / "memory.current") or "").strip()
    if not limit.isdigit() or not current.isdigit():
        return None  # "max" (no limit), or not a memory-controlled level
    # Inactive page cache (the weights file just read, for one) is reclaimed before the
    # limit kills anything, so it does not count as used.
    reclaimable = _stat_value(_read(directory / "memory.stat") or "", "inactive_file")
    used = max(0, int(current) - reclaimable)
    return max(0, int(limit) - used)


def _stat_value(text: str, key: str) -> int:
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == key and fields[1].isdigit():
            return int(fields[1])
    return 0


def _read_meminfo_available(meminfo: Path) -> int | None:
    text = _read(meminfo)
    return None if text is None else parse_meminfo_available(text)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
