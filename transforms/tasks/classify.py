"""``classify``: one label per document from a sequence-classification model.

Scores follow ``transformers``' text-classification pipeline: softmax over labels, sigmoid for multi-label
models (or a single label), raw values for regression. Documents longer than the model's window are
either truncated or cut into consecutive chunks whose probabilities are averaged or maxed; the result says
how many chunks the model read (``n_chunks``) and whether text was left unread (``truncated``).

Sentence pairs (``input.text_pair_field``: NLI, paraphrase, cross-encoder relevance) are read as the
tokenizer's own pair encoding reads them, ``[CLS] text [SEP] pair [SEP]`` with its token type ids where the
model takes them, built from the two texts' tokens and the frame the tokenizer puts around a pair. A pair
longer than the window is truncated ``only_second``: the first text (premise, query) is read whole and the
second is cut to fit, as ``tokenizer(text, pair, truncation="only_second")`` cuts it. Windows over the
second text are not read instead: such models were trained on one pair per input, and a premise's
entailment of each part of a hypothesis, averaged or maxed, is not its entailment of the whole. A pair
whose first text leaves no room for the second is a dead-letter row."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from distilbeam.transforms import SetupError
from distilbeam.transforms.batching import Tokenized
from distilbeam.transforms.schema import Failure
from distilbeam.transforms.tasks.base import Loaded, TaskHandler, TaskSettings
from distilbeam.transforms.tasks.qa import PairFrame, pair_frame
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
    # Set by ``with_pairs``: the tokenizer's frame around a sentence pair and around a lone text (what
    # transformers encodes when the second text is ""), and whether the model takes token type ids. None:
    # single texts.
    pair: PairFrame | None = None
    alone: PairFrame | None = None
    pass_types = False
    truncation_side = "right"  # which end of the second text a pair too long for the window loses

    def resolve_model(self, tokenizer: Any, config: Mapping[str, Any]) -> None:
        # Read off the tokenizer here, used only once ``with_pairs`` turns pairs on.
        try:
            self._frames: tuple[PairFrame, PairFrame] | None = (pair_frame(tokenizer), alone_frame(tokenizer))
        except Exception:  # a tokenizer whose pair encoding cannot be read still classifies single texts
            self._frames = None
        self._takes_types = "token_type_ids" in tokenizer.model_input_names
        self.truncation_side = tokenizer.truncation_side

    def with_pairs(self) -> Handler:
        """This task reading sentence pairs (``input.text_pair_field``); raises ``SetupError`` when its
        tokenizer's pair encoding could not be read."""
        frames = getattr(self, "_frames", None)
        if frames is None:
            raise SetupError(f"cannot tell how the tokenizer of {self.settings.model} frames a sentence pair")
        paired = copy.copy(self)
        paired.pair, paired.alone = frames
        paired.pass_types = self._takes_types
        return paired

    def stride(self) -> int | None:
        return None if self.settings.long_text == "truncate" else 0

    def cost(self, n_tokens: int) -> tuple[int, int]:
        if self.pair is None:
            return super().cost(n_tokens)
        return 1, min(n_tokens + self.pair.n_special, self.max_length)

    def annotate(self, items: Sequence[Tokenized], model: Loaded) -> list[dict[str, Any] | Failure]:
        """Every chunk's scores in one array, reduced per document (each document's chunks are
        consecutive rows), then one result per document."""
        if not items:
            return []
        if self.pair is not None:
            return self._annotate_pairs(items, model)
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

    def _annotate_pairs(self, items: Sequence[Tokenized], model: Loaded) -> list[dict[str, Any] | Failure]:
        """One row per sentence pair, its second text truncated to the window (``pair_rows``); a pair
        whose first text leaves no room is its dead-letter row."""
        out: list[dict[str, Any] | Failure | None] = [None] * len(items)
        rows, types, truncated, owners = [], [], [], []
        for i, tokenized in enumerate(items):
            frame = self.alone if tokenized.item.doc.text_pair == "" else self.pair
            built = pair_rows(tokenized, frame, self.max_length, self.truncation_side)
            if isinstance(built, str):
                message = (
                    f"task {self.name}: {built}; shorten the first text, or raise "
                    f"tasks.{self.name}.max_length where the model allows"
                )
                out[i] = Failure.of_document("tokenize", "TooLong", message, tokenized.item.doc)
                continue
            rows.append(built[0])
            types.append(built[1])
            truncated.append(built[2])
            owners.append(i)
        if rows:
            logits = self.forward(rows, model, types if self.pass_types else None)
            probs = scores_from_logits(np.stack(logits), model.problem_type, len(model.id2label))
            ones = np.ones(len(rows), dtype=np.int64)
            for i, result in zip(owners, results(probs, model.id2label, ones, truncated), strict=True):
                out[i] = result
        return out  # type: ignore[return-value]

    def arrow_type(self) -> pa.DataType:
        return ARROW_TYPE


def alone_frame(tokenizer: Any) -> PairFrame:
    """The frame around a lone text, as a pair frame whose second text is always empty: transformers'
    ``tokenizer(text, "")`` encodes ``text`` alone (an empty string is no pair to it)."""
    encoded = tokenizer("a", return_token_type_ids=True)
    ids = list(encoded["input_ids"])
    types = list(encoded.get("token_type_ids") or [0] * len(ids))
    inside = [i for i, s in enumerate(encoded.sequence_ids()) if s == 0]
    if not inside:
        raise SetupError(f"cannot tell how {type(tokenizer).__name__} frames a text")
    start, end = inside[0], inside[-1] + 1
    text_type = types[start]
    return PairFrame(
        tuple(ids[:start]),
        (),
        tuple(ids[end:]),
        text_type,
        text_type,
        tuple(types[:start]),
        (),
        tuple(types[end:]),
    )


def pair_rows(
    tokenized: Tokenized, frame: PairFrame, max_length: int, truncation_side: str = "right"
) -> tuple[np.ndarray, np.ndarray, bool] | str:
    """A sentence pair's model row, its token type ids, and whether its second text was cut: the
    ``tokenizer(text, pair, truncation="only_second", max_length=max_length)`` encoding, built from the two
    texts' tokens (``Tokenized.pair_at``) and the tokenizer's pair frame. Or, when the first text and the
    special tokens leave no room for any of the second text's tokens, why not."""
    cut = len(tokenized.ids) if tokenized.pair_at is None else tokenized.pair_at
    first, second = tokenized.ids[:cut], tokenized.ids[cut:]
    room = max_length - frame.n_special - len(first)
    if room < min(1, len(second)):
        return (
            f"the first text has {len(first)} tokens, which with the model's {frame.n_special} special "
            f"tokens leave no room for the second text in a window of {max_length} tokens; the first text "
            "is never cut"
        )
    kept = second[max(0, len(second) - room) :] if truncation_side == "left" else second[:room]
    row = np.concatenate([frame.prefix, first, frame.middle, kept, frame.suffix]).astype(np.int32)
    types = np.concatenate(
        [
            frame.prefix_types,
            np.full(len(first), frame.question_type),
            frame.middle_types,
            np.full(len(kept), frame.context_type),
            frame.suffix_types,
        ]
    ).astype(np.int32)
    return row, types, len(kept) < len(second)


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
