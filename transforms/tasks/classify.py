"""``classify``: one label per document from a sequence-classification model.

Scores follow ``transformers``' text-classification pipeline: softmax over labels, sigmoid for multi-label
models (or a single label), raw values for regression. Documents longer than the model's window are
either truncated or cut into consecutive chunks whose probabilities are averaged or maxed; the result says
how many chunks the model read (``n_chunks``) and whether text was left unread (``truncated``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from transforms.batching import Tokenized
from transforms.tasks.base import Loaded, TaskHandler, TaskSettings

LABEL_SCORE = pa.struct([pa.field("label", pa.string()), pa.field("score", pa.float32())])
ARROW_TYPE = pa.struct(
    [
        pa.field("label", pa.string()),
        pa.field("score", pa.float32()),
        pa.field("scores", pa.list_(LABEL_SCORE)),
        # Windows the model read, and whether part of the document was left unread (long_text: truncate).
        pa.field("n_chunks", pa.int32()),
        pa.field("truncated", pa.bool_()),
    ]
)


@dataclasses.dataclass(frozen=True)
class Settings(TaskSettings):
    kind = "classify"
    # truncate: the first window only; chunk-mean / chunk-max: every window, probabilities averaged / maxed.
    long_text: Literal["truncate", "chunk-mean", "chunk-max"] = "chunk-mean"


class Handler(TaskHandler):
    auto_class_name = "AutoModelForSequenceClassification"
    architecture_suffix = "ForSequenceClassification"

    def stride(self) -> int | None:
        return None if self.settings.long_text == "truncate" else 0

    def annotate(self, items: Sequence[Tokenized], model: Loaded) -> list[dict[str, Any]]:
        rows, owners = self.rows(items, model)
        logits = np.stack(self.forward(rows, model)) if rows else np.zeros((0, len(model.id2label)))
        probs = scores_from_logits(logits, model.problem_type, len(model.id2label))
        owners_arr = np.asarray(owners)
        reduce = np.max if self.settings.long_text == "chunk-max" else np.mean
        out = []
        for i, tokenized in enumerate(items):
            chunks = probs[owners_arr == i]
            result = to_result(reduce(chunks, axis=0), model.id2label)
            result["n_chunks"] = len(chunks)
            result["truncated"] = len(tokenized.ids) > len(chunks) * self.body
            out.append(result)
        return out

    def arrow_type(self) -> pa.DataType:
        return ARROW_TYPE


def scores_from_logits(logits: np.ndarray, problem_type: str | None, num_labels: int) -> np.ndarray:
    """As transformers' text-classification pipeline chooses its function for the model's config."""
    logits = logits.astype(np.float32)
    if problem_type == "regression":
        return logits
    if problem_type == "multi_label_classification" or num_labels == 1:
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def to_result(scores: np.ndarray, id2label: dict[int, str]) -> dict[str, Any]:
    best = int(np.argmax(scores))
    return {
        "label": id2label[best],
        "score": float(scores[best]),
        "scores": [{"label": id2label[i], "score": float(s)} for i, s in enumerate(scores)],
    }
