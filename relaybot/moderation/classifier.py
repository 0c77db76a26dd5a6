"""The `classifier` built-in: a local transformers text-classification model whose chosen
labels mean "unsafe". transformers is imported only when such a hook is built, so importing
relaybot.moderation stays cheap; the model comes from a local directory and is never
downloaded."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relaybot.log import route_library_logs
from relaybot.moderation.builtins import (
    APPLY_TO,
    DirectionalModerator,
    choice,
    hook_name,
    normalize,
    number,
    str_list,
)
from relaybot.moderation.core import ModerationContext, ModeratorOptionError, Verdict


def _device(value: object) -> str:
    if not isinstance(value, str) or not (
        value == "cpu" or value == "cuda" or (value.startswith("cuda:") and value[5:].isdigit())
    ):
        raise ModeratorOptionError("device", f"must be cpu, cuda or cuda:N, got {value!r}")
    if value != "cpu":
        import torch

        if not torch.cuda.is_available():
            raise ModeratorOptionError("device", f"{value} requested but CUDA is not available")
    return value


class ClassifierModerator(DirectionalModerator):
    """Blocks a line when any of `block_labels` scores at least `threshold`."""

    def __init__(
        self,
        *,
        model: str | None = None,
        block_labels: Sequence[str] | None = None,
        threshold: float = 0.5,
        apply_to: str = "both",
        device: str = "cpu",
        name: str = "classifier",
    ) -> None:
        super().__init__(
            name=hook_name(name), directions=APPLY_TO[choice("apply_to", apply_to, list(APPLY_TO))]
        )
        if model is None:
            raise ModeratorOptionError("model", "missing (a local model directory is required)")
        if not isinstance(model, str) or not model.strip():
            raise ModeratorOptionError("model", "expected a directory path")
        path = Path(model).expanduser()
        if not path.is_dir():
            raise ModeratorOptionError(
                "model", f"{str(path)!r} is not a directory (models are never downloaded)"
            )
        if block_labels is None:
            raise ModeratorOptionError("block_labels", "missing (the labels that mean unsafe)")
        wanted = str_list("block_labels", block_labels)
        if not wanted:
            raise ModeratorOptionError("block_labels", "give at least one label")
        self.threshold = number("threshold", threshold, 0.0, 1.0)
        self.device = _device(device)

        from transformers import (
            AutoModelForSequenceClassification,
            AutoTokenizer,
            pipeline,
        )

        route_library_logs()
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            network = AutoModelForSequenceClassification.from_pretrained(
                str(path), local_files_only=True
            )
        except (OSError, ValueError) as error:
            raise ModeratorOptionError(
                "model", f"cannot load a text-classification model from {str(path)!r}: {error}"
            ) from None
        network.eval()
        labels = {str(label).lower(): str(label) for label in network.config.id2label.values()}
        for index, label in enumerate(wanted):
            if label.lower() not in labels:
                known = ", ".join(labels.values())
                raise ModeratorOptionError(
                    f"block_labels[{index}]", f"{label!r} is not a label of this model ({known})"
                )
        self.block_labels = frozenset(label.lower() for label in wanted)
        self._pipeline: Any = pipeline(
            "text-classification", model=network, tokenizer=tokenizer, device=self.device
        )
        # A call that timed out may still be running when the next one arrives.
        self._lock = threading.Lock()

    def scores(self, text: str) -> dict[str, float]:
        with self._lock:
            result = self._pipeline(text, top_k=None, truncation=True)
        if result and isinstance(result[0], list):
            result = result[0]
        return {str(item["label"]).lower(): float(item["score"]) for item in result}

    def check(self, text: str, context: ModerationContext) -> Verdict:
        clean = normalize(text).strip()
        if not clean:
            return Verdict.allow()
        scores = self.scores(clean)
        hits = [(scores[label], label) for label in self.block_labels if label in scores]
        score, label = max(hits, default=(0.0, ""))
        if label and score >= self.threshold:
            return Verdict.block(
                f"classified {label!r} with score {score:.2f} (threshold {self.threshold:g})"
            )
        return Verdict.allow()
