"""GPU decode benchmark on a randomly initialised Mistral-Nemo-shaped model (bf16 and nf4).

Mistral-Nemo's published shape: 40 layers, hidden 5120, 32 heads of 128, 8 KV heads, MLP 14336,
vocab 131072 (about 12.2 B parameters). Random weights: the speed of a decode step does not
depend on the values, and no weights can be downloaded here.

Reported, in one run, per precision:
- single-stream decode tokens/s, and the memory-bandwidth limit for it: bytes read per step
  (all weights, plus the KV cache so far) / the GPU's bandwidth (measured with a device copy,
  and the datasheet figure when the GPU is known), as a fraction;
- aggregate tokens/s at 1/4/16/32 concurrent requests for: the naive baseline (`generate` once
  per request, one after another, as the reference client does), a padded batch (`generate` on
  all requests at once), relaybot's own decode loop (`relaybot.inference.local.decode`, what
  the worker runs, prefill included) and transformers' continuous batching (`generate_batch`),
  with the speed-up over the baseline.

    python bench/gpu_decode.py                         # on a CUDA machine
    python bench/gpu_decode.py --tiny --device cpu     # a scaled-down smoke run anywhere

Writes bench/results/gpu_decode.json and .png. Not yet run on a GPU by this project (no CUDA
machine was lent); the CPU smoke mode is tested.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

NEMO_SHAPE = {
    "num_hidden_layers": 40,
    "hidden_size": 5120,
    "num_attention_heads": 32,
    "head_dim": 128,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "vocab_size": 131072,
    "max_position_embeddings": 8192,
    "rope_theta": 1_000_000.0,
    "sliding_window": None,  # Nemo attends over the whole context
}
TINY_SHAPE = {
    "num_hidden_layers": 2,
    "hidden_size": 256,
    "num_attention_heads": 4,
    "head_dim": 64,
    "num_key_value_heads": 2,
    "intermediate_size": 512,
    "vocab_size": 1024,
    "max_position_embeddings": 2048,
    "rope_theta": 10_000.0,
    "sliding_window": None,
}
# Datasheet HBM bandwidth, bytes/s.
DATASHEET_BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12, "L4": 0.3e12}


def build_model(shape: dict[str, Any], device: str, precision: str, workdir: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, MistralConfig

    config = MistralConfig(**shape, torch_dtype="bfloat16")
    if precision == "bf16":
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        return model.eval()
    # nf4: bitsandbytes quantises while loading, so the random bf16 model goes through disk.
    saved = workdir / "random-nemo"
    if not (saved / "config.json").is_file():
        with torch.device("cpu"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(saved)
        del model
        gc.collect()
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )
    return AutoModelForCausalLM.from_pretrained(
        saved, quantization_config=quantization, device_map=device, dtype=torch.bfloat16
    ).eval()


def weight_bytes(model: Any) -> int:
    total = 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        total += tensor.numel() * tensor.element_size()
    return total


def kv_bytes_per_token(shape: dict[str, Any]) -> int:
    # K and V, per layer, per KV head, bf16.
    return 2 * shape["num_hidden_layers"] * shape["num_key_value_heads"] * shape["head_dim"] * 2


def measured_bandwidth(device: str) -> float:
    """Bytes/s of a large device-to-device copy (read + write), best of 5."""
    import torch

    if device != "cuda":
        return float("nan")
    size = 1 << 30
    source = torch.empty(size, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(5):
        torch.cuda.synchronize()
        started = time.perf_counter()
        target.copy_(source)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    del source, target
    torch.cuda.empty_cache()
    return 2 * size / best


def prompts(count: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    import random

    generator = random.Random(seed)
    return [[generator.randrange(10, vocab) for _ in range(length)] for _ in range(count)]


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def generate_padded(model: Any, batch: list[list[int]], new_tokens: int, device: str) -> float:
    import torch

    width = max(len(ids) for ids in batch)
    input_ids = torch.zeros((len(batch), width), dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        attention[row, width - len(ids) :] = 1
    _sync(device)
    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
    _sync(device)
    return time.perf_counter() - started


def single_stream(model: Any, prompt: list[int], new_tokens: int, device: str) -> dict[str, float]:
    """Decode tokens/s with the prefill (a 1-token generate) subtracted."""
    generate_padded(model, [prompt], 2, device)  # warm-up
    prefill = statistics.median(generate_padded(model, [prompt], 1, device) for _ in range(3))
    total = statistics.median(
        generate_padded(model, [prompt], new_tokens, device) for _ in range(3)
    )
    decode_seconds = max(total - prefill, 1e-9)
    return {
        "prefill_seconds": prefill,
        "decode_tokens_per_second": (new_tokens - 1) / decode_seconds,
    }


def continuous(model: Any, batch: list[list[int]], new_tokens: int, device: str) -> float | None:
    """transformers' continuous batching; None where this version or device cannot run it."""
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, eos_token_id=-1
    )
    try:
        model.generate_batch(inputs=batch[:1], generation_config=config)  # warm-up
        _sync(device)
        started = time.perf_counter()
        model.generate_batch(inputs=batch, generation_config=config)
        _sync(device)
    except Exception as exc:  # an unsupported attention backend or device
        print(f"continuous batching unavailable: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    return time.perf_counter() - started


def relaybot_decoder(
    model: Any, batch: list[list[int]], new_tokens: int, device: str
) -> float | None:
    """relaybot's own decode loop (relaybot.inference.local.decode, what the local engine and the
    worker run): each prompt prefilled alone, then all rows decoded together in the KV
    buffer. None where the model's cache layout needs `generate`."""
    import threading

    import torch
    from transformers import DynamicCache

    from relaybot.conversation.formats import Prompt
    from relaybot.inference.engine import SamplingParams
    from relaybot.inference.local.decode import Decoder, Row, StepModel, stepwise_support

    support = stepwise_support(model)
    if not support.available:
        print(f"relaybot decode loop unavailable: {support.reason}")
        return None

    def forward(**inputs: Any) -> Any:
        return model(**inputs).logits[:, -1, :]

    step_model = StepModel(
        forward=forward,
        layer_count=support.layer_count,
        cache_argument=support.cache_argument,
        stop_ids=(-1,),  # random weights: decode every one of the new tokens
        device=torch.device(device),
        interrupted=threading.Event(),
        decode_tail=lambda tokens: "",
    )
    params = SamplingParams(temperature=0.0, repetition_penalty=1.0, max_new_tokens=new_tokens)
    finished: list[Row] = []
    _sync(device)
    started = time.perf_counter()
    with torch.inference_mode():
        rows = []
        for index, ids in enumerate(batch):
            cache = DynamicCache()
            model(
                input_ids=torch.tensor([ids[:-1]], device=device),
                use_cache=True,
                logits_to_keep=1,
                **{support.cache_argument: cache},
            )
            rows.append(Row(index, Prompt((), ()), list(ids), None, cache=cache))
        decoder = Decoder(
            step_model, params, lambda row, state: finished.append(row), max_rows=len(batch)
        )
        decoder.run(rows)
    _sync(device)
    assert all(len(row.output) == new_tokens for row in finished)
    return time.perf_counter() - started


def run_precision(args: argparse.Namespace, precision: str, workdir: Path) -> dict[str, Any]:
    import torch

    shape = TINY_SHAPE if args.tiny else NEMO_SHAPE
    model = build_model(shape, args.device, precision, workdir)
    weights = weight_bytes(model)
    prompt = prompts(1, args.prompt_tokens, shape["vocab_size"], 0)[0]
    stream = single_stream(model, prompt, args.new_tokens, args.device)
    # Bytes read per decode step: every weight once, plus the KV cache so far (on average the
    # prompt plus half the new tokens).
    context = args.prompt_tokens + args.new_tokens / 2
    bytes_per_step = weights + kv_bytes_per_token(shape) * context
    result: dict[str, Any] = {
        "weights_bytes": weights,
        "bytes_per_step": bytes_per_step,
        **stream,
    }
    for name, bandwidth in (("measured", args.bandwidth_measured), ("datasheet", args.datasheet)):
        if bandwidth and bandwidth == bandwidth:
            limit = bandwidth / bytes_per_step
            result[f"bandwidth_limit_tokens_per_second_{name}"] = limit
            result[f"fraction_of_limit_{name}"] = stream["decode_tokens_per_second"] / limit
    relaybot_decoder(model, [prompt], 2, args.device)  # warm-up: its first call pays setup
    concurrency = []
    for count in args.concurrency:
        batch = prompts(count, args.prompt_tokens, shape["vocab_size"], count)
        produced = count * args.new_tokens
        naive = sum(generate_padded(model, [ids], args.new_tokens, args.device) for ids in batch)
        padded = generate_padded(model, batch, args.new_tokens, args.device)
        cb = continuous(model, batch, args.new_tokens, args.device)
        ours = relaybot_decoder(model, batch, args.new_tokens, args.device)
        row = {
            "concurrent": count,
            "naive_tokens_per_second": produced / naive,
            "padded_tokens_per_second": produced / padded,
            "padded_speedup": naive / padded,
            "relaybot_tokens_per_second": None if ours is None else produced / ours,
            "relaybot_speedup": None if ours is None else naive / ours,
            "continuous_tokens_per_second": None if cb is None else produced / cb,
            "continuous_speedup": None if cb is None else naive / cb,
        }
        concurrency.append(row)
        print(json.dumps({"precision": precision, **row}), flush=True)
    result["concurrency"] = concurrency
    if args.device == "cuda":
        result["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    del model
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return result


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    precisions = list(result["precisions"])
    figure, axes = plt.subplots(1, len(precisions), figsize=(6 * len(precisions), 4), squeeze=False)
    for axis, precision in zip(axes[0], precisions, strict=True):
        rows = result["precisions"][precision]["concurrency"]
        counts = [row["concurrent"] for row in rows]
        for key, label in (
            ("naive_tokens_per_second", "naive generate, one by one"),
            ("padded_tokens_per_second", "padded batch (generate)"),
            ("relaybot_tokens_per_second", "relaybot decode loop"),
            ("continuous_tokens_per_second", "continuous batching"),
        ):
            values = [row[key] for row in rows]
            if all(value is not None for value in values):
                axis.plot(counts, values, marker="o", label=label)
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent requests")
        axis.set_ylabel("aggregate tokens/s")
        axis.set_title(precision)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(result["model"], fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a small model (smoke runs)")
    parser.add_argument("--precisions", nargs="+", default=["bf16", "nf4"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--name", default="gpu_decode")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("CUDA is not available (use --tiny --device cpu for a smoke run)")
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    args.bandwidth_measured = measured_bandwidth(args.device)
    args.datasheet = next(
        (value for key, value in DATASHEET_BANDWIDTH.items() if key in gpu), float("nan")
    )
    result: dict[str, Any] = {
        "benchmark": "gpu_decode",
        "model": "random Mistral-Nemo shape" + (" (tiny)" if args.tiny else ""),
        "device": gpu,
        "torch": torch.__version__,
        "bandwidth_measured_bytes_per_second": args.bandwidth_measured,
        "bandwidth_datasheet_bytes_per_second": args.datasheet,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "precisions": {},
    }
    with tempfile.TemporaryDirectory(prefix="relaybot-gpu-bench-") as workdir:
        for precision in args.precisions:
            if precision == "nf4" and args.device != "cuda":
                print("nf4 needs CUDA (bitsandbytes); skipped", file=sys.stderr)
                continue
            result["precisions"][precision] = run_precision(args, precision, Path(workdir))
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{args.name}.json"
    json_path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    chart(result, args.out / f"{args.name}.png")
    print(f"wrote {json_path} and {json_path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
