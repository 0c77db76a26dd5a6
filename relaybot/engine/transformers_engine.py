"""The local engine: a transformers causal LM on CUDA (bf16, or bitsandbytes 8/4-bit) or CPU.

Prompts are tokenised segment by segment so that text typed by people can never become a
structure token. A GGUF model is converted once into a safetensors copy in the cache, because
dequantising GGUF on every start costs tens of seconds.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relaybot.config import ModelConfig
from relaybot.engine import EngineError, GenerationRequest, SamplingParams
from relaybot.engine.selection import ModelChoice, ModelUnavailable, choose_model
from relaybot.formats import Prompt
from relaybot.log import get_logger

log = get_logger(component="engine")

# Tokens that open or close ChatML turns; never useful as a BOS in front of a prompt.
_CHATML_MARKERS = {"<|im_start|>", "<|im_end|>"}


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


class TransformersEngine:
    """Owns one model and tokenizer. `generate` runs on the inference thread only."""

    def __init__(self, model: Any, tokenizer: Any, choice: ModelChoice, context_window: int):
        self.model = model
        self.tokenizer = tokenizer
        self.choice = choice
        self.context_window = context_window
        self.description = (
            f"{choice.source}{'/' + choice.gguf_file if choice.gguf_file else ''} "
            f"on {choice.device} ({choice.dtype}, quantization {choice.quantization})"
        )
        # The fast tokenizer is shared by the reactor thread (token counting) and the
        # inference thread; Rust tokenizers raise "Already borrowed" under concurrent use.
        self._tokenizer_lock = threading.Lock()
        self._interrupted = threading.Event()
        self._bos_ids = self._bos_prefix()
        self._stop_ids = self._stop_token_ids()
        pad = tokenizer.pad_token_id
        self._pad_id = int(pad if pad is not None else self._stop_ids[0])

    # --- construction ------------------------------------------------------------------

    @classmethod
    def load(cls, config: ModelConfig) -> TransformersEngine:
        choice = choose_model(config, cuda_free_bytes() if config.device != "cpu" else None)
        started = time.monotonic()
        log.info(
            "model_loading",
            source=choice.source,
            gguf_file=choice.gguf_file,
            device=choice.device,
            dtype=choice.dtype,
            quantization=choice.quantization,
            reason=choice.reason,
        )
        cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
        model, tokenizer = _load_model(choice, cache, allow_download=config.allow_download)
        window = int(getattr(model.config, "max_position_embeddings", 0) or 0) or 4096
        engine = cls(model, tokenizer, choice, min(window, config.context_tokens))
        log.info(
            "model_loaded",
            description=engine.description,
            seconds=round(time.monotonic() - started, 2),
            context_window=engine.context_window,
        )
        return engine

    def _bos_prefix(self) -> list[int]:
        """Segments are encoded without special tokens, so BOS (Relay's `<s>`) is ours to add;
        tokenizers whose BOS is a ChatML marker (SmolLM2) get none."""
        bos = self.tokenizer.bos_token
        if not bos or bos in _CHATML_MARKERS:
            return []
        return [int(self.tokenizer.bos_token_id)]

    def _stop_token_ids(self) -> list[int]:
        ids: list[int] = []
        for token in ("<|im_end|>", "<|im_start|>"):
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id:
                ids.append(token_id)
        eos = self.tokenizer.eos_token_id
        if isinstance(eos, int) and eos not in ids:
            ids.append(eos)
        if not ids:
            raise ModelUnavailable("the tokenizer has neither ChatML markers nor an EOS token")
        return ids

    # --- tokenising --------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        with self._tokenizer_lock:
            ids = self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)
        return len(ids["input_ids"])

    def encode(self, prompt: Prompt) -> list[int]:
        ids = list(self._bos_ids)
        with self._tokenizer_lock:
            for segment in prompt.segments:
                encoded = self.tokenizer(
                    segment.text, add_special_tokens=False, split_special_tokens=not segment.special
                )["input_ids"]
                ids.extend(int(token) for token in encoded)
        return ids

    # --- generation --------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        results: list[str] = [""] * len(requests)
        groups: dict[SamplingParams, list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(request.params, []).append(index)
        for params, indices in groups.items():
            texts = self._generate_batch([requests[i].prompt for i in indices], params)
            for index, text in zip(indices, texts, strict=True):
                results[index] = text
        return results

    def interrupt(self) -> None:
        """Make a running generate() return at its next step (used at shutdown)."""
        self._interrupted.set()

    def _generate_batch(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[str]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        interrupted = self._interrupted

        class Interrupted(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full(
                    (input_ids.shape[0],), interrupted.is_set(), dtype=torch.bool,
                    device=input_ids.device,
                )  # fmt: skip

        encoded = [self.encode(prompt) for prompt in prompts]
        limit = self.context_window - params.max_new_tokens
        # Keep the newest tokens if a prompt is over budget (the transcript normally prevents it).
        encoded = [ids[-limit:] if len(ids) > limit else ids for ids in encoded]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            # Left padding: every row's last token sits at the same position.
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids) :] = 1
        device = self.model.device
        sampling: dict[str, Any] = {}
        if params.temperature > 0:
            sampling = {
                "do_sample": True,
                "temperature": params.temperature,
                "top_k": params.top_k or None,
                "top_p": params.top_p,
                "min_p": params.min_p or None,
            }
        else:
            sampling = {"do_sample": False}
        if params.seed is not None:
            torch.manual_seed(params.seed)
        try:
            with torch.inference_mode():
                output = self.model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    max_new_tokens=params.max_new_tokens,
                    repetition_penalty=params.repetition_penalty,
                    eos_token_id=self._stop_ids,
                    pad_token_id=self._pad_id,
                    stopping_criteria=StoppingCriteriaList([Interrupted()]),
                    **sampling,
                )
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            raise EngineError(f"CUDA out of memory for a batch of {len(prompts)}") from exc
        except RuntimeError as exc:
            raise EngineError(f"generation failed: {exc}") from exc
        texts = []
        with self._tokenizer_lock:
            for row in range(len(encoded)):
                new_tokens = output[row, width:].tolist()
                cut = next(
                    (i for i, token in enumerate(new_tokens) if token in self._stop_ids),
                    len(new_tokens),
                )
                text = self.tokenizer.decode(new_tokens[:cut], skip_special_tokens=True)
                texts.append(cut_at_stops(text, prompts[row].stop).strip())
        return texts


def _torch_dtype(name: str) -> Any:
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def _gguf_cache_path(cache: Path, gguf_path: Path) -> Path:
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return cache / "models" / f"{gguf_path.stem}-{key.hexdigest()[:12]}"


def _load_model(choice: ModelChoice, cache: Path, *, allow_download: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    # Progress bars would land in the journal as garbage lines.
    transformers_logging.disable_progress_bar()

    dtype = _torch_dtype(choice.dtype)
    local_only = not allow_download
    if choice.gguf_file:
        gguf_path = Path(choice.source) / choice.gguf_file
        converted = _gguf_cache_path(cache, gguf_path) if gguf_path.is_file() else None
        if converted is not None and (converted / "config.json").is_file():
            source, kwargs = str(converted), {}
        else:
            source, kwargs = choice.source, {"gguf_file": choice.gguf_file}
    else:
        source, kwargs, converted = choice.source, {}, None
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only, **kwargs)
        load_kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": local_only, **kwargs}
        if choice.quantization != "none":
            load_kwargs["quantization_config"] = _bitsandbytes_config(choice, source, local_only)
        if choice.device == "cuda":
            load_kwargs["device_map"] = "cuda"
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
        bnb_4bit_compute_dtype=_torch_dtype(choice.dtype),
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


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """The text up to the first stop sequence (formats whose stops are plain text, such as
    `USER:` or a new transcript line, cannot stop on token ids alone)."""
    cut = len(text)
    for stop in stops:
        if stop:
            found = text.find(stop)
            if found >= 0:
                cut = min(cut, found)
    return text[:cut]
