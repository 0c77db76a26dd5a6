"""Sampling for the local engine's decode loop: the reference client's logits processors,
applied to a batch's next-token logits (greedy when the temperature is 0)."""

from __future__ import annotations

from typing import Any

from relaybot.inference.engine import SamplingParams


class Sampler:
    """The reference client's sampling, in `generate`'s order: repetition penalty, then
    temperature, top-k, top-p, min-p. Top-p and min-p run on the top-k candidates only, which
    gives the same distribution without sorting the whole vocabulary on every step."""

    def __init__(self, params: SamplingParams) -> None:
        from transformers import (
            LogitsProcessorList,
            MinPLogitsWarper,
            RepetitionPenaltyLogitsProcessor,
            TopPLogitsWarper,
        )

        self.penalty = (
            RepetitionPenaltyLogitsProcessor(params.repetition_penalty)
            if params.repetition_penalty != 1.0
            else None
        )
        self.temperature = params.temperature
        self.top_k = params.top_k
        self.warpers = LogitsProcessorList()
        if params.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(params.top_p))
        if params.min_p:
            self.warpers.append(MinPLogitsWarper(params.min_p))

    def candidates(self, history: Any, logits: Any) -> tuple[Any, Any | None]:
        """(scores, token ids) of the tokens sampling may pick, scores -inf where filtered
        out; token ids None when the scores cover the whole vocabulary."""
        scores = logits.float()
        if self.penalty is not None:
            scores = self.penalty(history, scores)
        if self.temperature != 1.0:
            scores = scores / self.temperature
        candidates = None
        if 0 < self.top_k < scores.shape[-1]:
            scores, candidates = scores.topk(self.top_k, dim=-1)
        scores = self.warpers(history, scores)  # the warpers read the scores only
        return scores, candidates

    def __call__(self, history: Any, logits: Any) -> Any:
        import torch

        if self.temperature <= 0:
            scores = logits.float()
            if self.penalty is not None:
                scores = self.penalty(history, scores)
            return scores.argmax(dim=-1)
        scores, candidates = self.candidates(history, logits)
        picked = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1)
        if candidates is not None:
            picked = candidates.gather(-1, picked)
        return picked[:, 0]
