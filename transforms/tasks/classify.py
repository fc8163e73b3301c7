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

from distilbeam.transforms.batching import Tokenized
from distilbeam.transforms.tasks.base import Loaded, TaskHandler, TaskSettings
from distilbeam.transforms.tasks.runs import last_rows, run_means

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
        """Every chunk's scores in one array, reduced per document (each document's chunks are
        consecutive rows), then one result per document."""
        if not items:
            return []
        rows, owners = self.rows(items, model)
        probs = scores_from_logits(
            np.stack(self.forward(rows, model)), model.problem_type, len(model.id2label)
        )
        first = np.flatnonzero(np.diff(owners, prepend=-1))
        last = last_rows(first, len(owners))
        if self.settings.long_text == "chunk-max":
            scores = np.maximum.reduceat(probs, first, axis=0)
        else:
            scores = run_means(probs, first, last)
        n_chunks = last - first + 1
        truncated = [len(t.ids) > n * self.body for t, n in zip(items, n_chunks.tolist(), strict=True)]
        return results(scores, model.id2label, n_chunks, truncated)

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


def results(
    scores: np.ndarray, id2label: dict[int, str], n_chunks: np.ndarray, truncated: Sequence[bool]
) -> list[dict[str, Any]]:
    """One result per row of ``scores`` [documents, labels]: the best label and its score, every label's
    score, the chunks read and whether text was left unread."""
    names = [id2label[i] for i in range(scores.shape[1])]
    best = scores.argmax(axis=1).tolist()
    return [
        {
            "label": names[b],
            "score": row[b],
            "scores": [{"label": name, "score": s} for name, s in zip(names, row, strict=True)],
            "n_chunks": n,
            "truncated": cut,
        }
        for b, row, n, cut in zip(best, scores.tolist(), n_chunks.tolist(), truncated, strict=True)
    ]
