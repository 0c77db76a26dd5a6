"""Memory planning: KV bytes per token from real transformers configs (no weights), plans that
fit and plans refused with the keys to lower, and reading available memory from /proc and
cgroup v2 files (real ones on this box, fake ones for the limits)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from relaybot.config.schema import ModelConfig
from relaybot.inference.local.memory import (
    LOGIT_COPIES,
    WORKING_HEADROOM_BYTES,
    MiB,
    available_memory_bytes,
    cgroup_headroom,
    check_fit,
    dtype_bytes,
    fit_summary,
    kv_bytes_per_token,
    largest_fitting_batch,
    parse_cgroup_v2_path,
    parse_meminfo_available,
    plan_memory,
    vocab_size_of,
)
from relaybot.inference.selection import GiB, ModelUnavailable, choose_model

# Mistral-Nemo 12B (the Relay model): 40 layers, 8 KV heads of 128, a 131072-token vocabulary.
NEMO_KV_BF16 = 163_840
SMOLLM2_KV_FP32 = 46_080


def auto_config(model_type: str, **kwargs: Any) -> Any:
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **kwargs)


def nemo_config() -> Any:
    return auto_config(
        "mistral",
        num_hidden_layers=40,
        num_attention_heads=32,
        num_key_value_heads=8,
        hidden_size=5120,  # 5120 / 32 = 160: head_dim must be read, not derived
        head_dim=128,
        vocab_size=131072,
    )


def nemo_plan(max_batch: int = 8, available: int | None = 6 * GiB) -> Any:
    return plan_memory(
        device="cuda",
        kv_per_token=NEMO_KV_BF16,
        max_batch=max_batch,
        context_tokens=8192,
        prefix_cache_bytes=1 * GiB,
        vocab_size=131072,
        available_bytes=available,
    )


# --- KV bytes per token ---------------------------------------------------------------------


def test_kv_bytes_of_the_smollm2_shape_in_float32() -> None:
    config = auto_config(
        "llama", num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, hidden_size=576
    )
    assert kv_bytes_per_token(config, dtype_bytes("float32")) == SMOLLM2_KV_FP32


def test_kv_bytes_of_the_mistral_nemo_shape_in_bfloat16() -> None:
    assert kv_bytes_per_token(nemo_config(), dtype_bytes("bfloat16")) == NEMO_KV_BF16
    assert vocab_size_of(nemo_config()) == 131072


def test_kv_bytes_fall_back_to_attention_heads_and_hidden_size() -> None:
    # No num_key_value_heads (plain multi-head attention) and no head_dim.
    config = SimpleNamespace(num_hidden_layers=2, num_attention_heads=4, hidden_size=256)
    assert kv_bytes_per_token(config, 2) == 2 * 2 * 4 * 64 * 2


def test_kv_bytes_of_a_multimodal_config_come_from_its_text_config() -> None:
    config = auto_config("llava")  # a default Llama 7B text config: 32 layers, 32 heads of 128
    assert kv_bytes_per_token(config, 2) == 2 * 32 * 32 * 128 * 2
    assert vocab_size_of(config) == config.get_text_config().vocab_size


def test_a_config_without_an_attention_layout_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="num_hidden_layers"):
        kv_bytes_per_token(SimpleNamespace(model_type="mamba", hidden_size=64), 4)
    with pytest.raises(ValueError, match="dtype"):
        dtype_bytes("int8")


# --- plans ----------------------------------------------------------------------------------


def test_the_embedded_defaults_fit_in_two_gib() -> None:
    defaults = ModelConfig()
    plan = plan_memory(
        device="cpu",
        kv_per_token=SMOLLM2_KV_FP32,
        max_batch=defaults.max_batch,
        context_tokens=defaults.context_tokens,
        prefix_cache_bytes=defaults.prefix_cache_mib * MiB,
        vocab_size=49152,
        available_bytes=2 * GiB,
    )
    assert plan.decode_cache_bytes == 8 * 2048 * SMOLLM2_KV_FP32
    assert plan.prefix_cache_bytes == GiB
    assert plan.working_bytes == 8 * 49152 * 4 * LOGIT_COPIES + WORKING_HEADROOM_BYTES
    assert plan.needed_bytes == plan.decode_cache_bytes + GiB + plan.working_bytes
    assert plan.fits
    check_fit(plan)  # does not raise
    summary = fit_summary(plan)
    assert summary["available_gib"] == 2.0
    assert summary["prefix_cache_gib"] == 1.0
    assert 1.9 < summary["needed_gib"] < 2.0


def test_a_plan_over_the_available_memory_is_refused_with_the_numbers_and_keys() -> None:
    plan = nemo_plan()
    assert not plan.fits
    with pytest.raises(ModelUnavailable) as raised:
        check_fit(plan)
    message = str(raised.value)
    # 8 * 8192 * 160 KiB = 10 GiB of decode cache, 1 GiB of prefixes, 16 MiB of logits
    # plus the headroom.
    assert "need 11.27 GiB" in message
    assert "6.00 GiB of free VRAM" in message
    assert "decode cache 10.00 GiB (8 sequences of 8192 tokens, 160.0 KiB a token)" in message
    assert "prefix cache 1.00 GiB" in message
    assert "working memory 0.27 GiB" in message
    for key in ("model.max_batch", "model.context_tokens", "model.prefix_cache_mib"):
        assert key in message
    assert "model.quantization" in message  # smaller weights free VRAM on CUDA
    assert "model.max_batch = 3 fits" in message


def test_the_suggested_batch_is_the_largest_that_fits() -> None:
    assert largest_fitting_batch(nemo_plan()) == 3
    assert nemo_plan(max_batch=3).fits
    assert not nemo_plan(max_batch=4).fits
    # Not even one sequence: no batch to suggest.
    tiny = nemo_plan(available=2 * GiB)
    assert largest_fitting_batch(tiny) == 0
    with pytest.raises(ModelUnavailable) as raised:
        check_fit(tiny)
    assert "fits with the rest unchanged" not in str(raised.value)


def test_on_the_cpu_quantization_is_not_suggested() -> None:
    plan = plan_memory(
        device="cpu",
        kv_per_token=SMOLLM2_KV_FP32,
        max_batch=8,
        context_tokens=2048,
        prefix_cache_bytes=GiB,
        vocab_size=49152,
        available_bytes=GiB,
    )
    with pytest.raises(ModelUnavailable) as raised:
        check_fit(plan)
    message = str(raised.value)
    assert "1.00 GiB of available memory" in message
    assert "model.prefix_cache_mib" in message
    assert "quantization" not in message


def test_unknown_available_memory_refuses_nothing() -> None:
    plan = nemo_plan(available=None)
    assert plan.fits
    check_fit(plan)
    assert "available_gib" not in fit_summary(plan)


# --- measuring ------------------------------------------------------------------------------


def test_available_cpu_memory_is_read_on_this_box() -> None:
    available = available_memory_bytes("cpu")
    assert isinstance(available, int)
    meminfo = Path("/proc/meminfo").read_text()
    total_kib = next(int(line.split()[1]) for line in meminfo.splitlines() if "MemTotal" in line)
    assert 0 < available <= total_kib * 1024


def test_meminfo_parsing() -> None:
    text = "MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:    2048 kB\n"
    assert parse_meminfo_available(text) == 2048 * 1024
    assert parse_meminfo_available("MemTotal: 5 kB\n") is None


def write_cgroup(directory: Path, limit: str, current: int, inactive_file: int = 0) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "memory.max").write_text(f"{limit}\n")
    (directory / "memory.current").write_text(f"{current}\n")
    (directory / "memory.stat").write_text(
        f"anon 1\ninactive_file {inactive_file}\nactive_file 7\n"
    )


@pytest.fixture
def fake_system(tmp_path: Path) -> SimpleNamespace:
    """A systemd service's cgroup v2 tree, /proc/self/cgroup naming it, and 8 GiB available
    according to /proc/meminfo."""
    root = tmp_path / "cgroup"
    proc_cgroup = tmp_path / "proc-self-cgroup"
    proc_cgroup.write_text("0::/system.slice/relaybot.service\n")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal: {16 * GiB // 1024} kB\nMemAvailable: {8 * GiB // 1024} kB\n")
    write_cgroup(root / "system.slice", "max", 3 * GiB)
    return SimpleNamespace(
        root=root,
        service=root / "system.slice" / "relaybot.service",
        proc_cgroup=proc_cgroup,
        meminfo=meminfo,
    )


def cpu_available(system: SimpleNamespace) -> int | None:
    return available_memory_bytes(
        "cpu", meminfo=system.meminfo, proc_cgroup=system.proc_cgroup, cgroup_root=system.root
    )


def test_a_systemd_memory_max_lowers_the_available_memory(fake_system: SimpleNamespace) -> None:
    # MemoryMax=2G with 1.5 GiB charged, a quarter of it reclaimable page cache.
    write_cgroup(fake_system.service, str(2 * GiB), 3 * GiB // 2, inactive_file=GiB // 4)
    assert cpu_available(fake_system) == 3 * GiB // 4


def test_the_tightest_level_on_the_way_up_wins(fake_system: SimpleNamespace) -> None:
    write_cgroup(fake_system.service, str(2 * GiB), GiB)
    write_cgroup(fake_system.root / "system.slice", str(3 * GiB + 100 * MiB), 3 * GiB)
    assert cgroup_headroom(proc_cgroup=fake_system.proc_cgroup, cgroup_root=fake_system.root) == (
        100 * MiB
    )


def test_no_cgroup_limit_leaves_meminfo(fake_system: SimpleNamespace) -> None:
    write_cgroup(fake_system.service, "max", GiB)
    assert cpu_available(fake_system) == 8 * GiB
    # A limit above MemAvailable does not raise it.
    write_cgroup(fake_system.service, str(64 * GiB), GiB)
    assert cpu_available(fake_system) == 8 * GiB


def test_cgroup_v1_or_unreadable_files_give_no_limit(fake_system: SimpleNamespace) -> None:
    fake_system.proc_cgroup.write_text("4:memory:/docker/abc\n1:cpu:/\n")
    assert cpu_available(fake_system) == 8 * GiB
    assert parse_cgroup_v2_path("0::/\n") == "/"
    missing = fake_system.root / "nothing"
    assert (
        available_memory_bytes(
            "cpu", meminfo=missing, proc_cgroup=missing, cgroup_root=fake_system.root
        )
        is None
    )


def test_a_container_namespace_reads_the_root_level(tmp_path: Path) -> None:
    # With a private cgroup namespace the process sits at "/", and the limit is on the root.
    proc_cgroup = tmp_path / "cgroup-file"
    proc_cgroup.write_text("0::/\n")
    write_cgroup(tmp_path / "root", str(GiB), GiB // 2)
    assert cgroup_headroom(proc_cgroup=proc_cgroup, cgroup_root=tmp_path / "root") == GiB // 2


# --- the embedded model's own config --------------------------------------------------------


def embedded_model_config() -> Any:
    """The embedded model's config: the engine's safetensors copy when it has been written,
    else read from the GGUF (slower: the whole metadata is parsed)."""
    from transformers import AutoConfig

    from relaybot.inference.local.loading import default_cache_dir, gguf_cache_path
    from relaybot.inference.selection import EMBEDDED_GGUF, embedded_model_dir

    try:
        directory = embedded_model_dir()
    except ModelUnavailable as exc:
        pytest.skip(str(exc))
    converted = gguf_cache_path(default_cache_dir(), directory / EMBEDDED_GGUF)
    if (converted / "config.json").is_file():
        return AutoConfig.from_pretrained(converted, local_files_only=True)
    return AutoConfig.from_pretrained(directory, gguf_file=EMBEDDED_GGUF, local_files_only=True)


def test_the_embedded_models_real_config() -> None:
    config = embedded_model_config()
    dtype = choose_model(ModelConfig(name="embedded", device="cpu"), None).dtype
    kv = kv_bytes_per_token(config, dtype_bytes(dtype))
    assert kv == SMOLLM2_KV_FP32
    assert vocab_size_of(config) == 49152
    defaults = ModelConfig()
    window = min(int(config.max_position_embeddings), defaults.context_tokens)
    plan = plan_memory(
        device="cpu",
        kv_per_token=kv,
        max_batch=defaults.max_batch,
        context_tokens=window,
        prefix_cache_bytes=defaults.prefix_cache_mib * MiB,
        vocab_size=vocab_size_of(config),
        available_bytes=None,
    )
    # The default configuration runs the embedded model in under 2 GiB besides its weights.
    assert plan.needed_bytes < 2 * GiB
