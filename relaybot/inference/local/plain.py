"""The local engine's fallback path: transformers' own `generate` over a left-padded batch,
for models whose cache layout the stepwise decoder does not handle (sliding-window or
recurrent layers). No prefix reuse and no continuous batching: the batch runs to its end.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from relaybot.inference.engine import EngineError, SamplingParams


def sampling_arguments(params: SamplingParams) -> dict[str, Any]:
    """`generate`'s sampling arguments for `params` (greedy at temperature 0)."""
    if params.temperature > 0:
        return {
            "do_sample": True,
            "temperature": params.temperature,
            "top_k": params.top_k or None,
            "top_p": params.top_p,
            "min_p": params.min_p or None,
        }
    return {"do_sample": False}


def until_stop(tokens: Sequence[int], stop_ids: Sequence[int]) -> list[int]:
    """`tokens` up to (without) the first stop token."""
    cut = next((i for i, token in enumerate(tokens) if token in stop_ids), len(tokens))
    return list(tokens[:cut])


def _left_padded(encoded: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """(input ids, attention mask) of the rows, left-padded so that every row's last token
    sits at the same position."""
    import torch

    width = max(len(ids) for ids in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        attention[row, width - len(ids) :] = 1
    return input_ids, attention


def _interruption(interrupted: threading.Event) -> Any:
    """A stopping criterion that ends every row once `interrupted` is set."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Interrupted(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full(
                (input_ids.shape[0],), interrupted.is_set(), dtype=torch.bool,
                device=input_ids.device,
            )  # fmt: skip

    return StoppingCriteriaList([Interrupted()])


def generate_plain(
    model: Any,
    encoded: Sequence[Sequence[int]],
    params: SamplingParams,
    *,
    pad_id: int,
    stop_ids: list[int],
    interrupted: threading.Event,
) -> list[list[int]]:
    """The tokens generated for each prompt in `encoded`, up to (without) its stop token."""
    import torch

    input_ids, attention = _left_padded(encoded, pad_id)
    width = input_ids.shape[1]
    device = model.device
    sampling = sampling_arguments(params)
    if params.seed is not None:
        torch.manual_seed(params.seed)
    try:
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                max_new_tokens=params.max_new_tokens,
                repetition_penalty=params.repetition_penalty,
                eos_token_id=stop_ids,
                pad_token_id=pad_id,
                stopping_criteria=_interruption(interrupted),
                **sampling,
            )
    except torch.cuda.OutOfMemoryError as exc:
        torch.cuda.empty_cache()
        raise EngineError(f"CUDA out of memory for a batch of {len(encoded)}") from exc
    except RuntimeError as exc:
        raise EngineError(f"generation failed: {exc}") from exc
    return [until_stop(output[row, width:].tolist(), stop_ids) for row in range(len(encoded))]
