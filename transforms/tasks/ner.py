"""``ner``: entity spans from a token-classification model.

Post-processing is that of ``transformers``' token-classification pipeline (strategies none, simple,
first, average, max; long documents in overlapping windows merged by keeping the longer, then the
higher-scoring span), with one difference users rely on: each entity's ``text`` is the document's own
characters ``document[start:end]``, not the tokenizer's decoding of them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from transforms.batching import Tokenized, windows
from transforms.tasks.base import Loaded, TaskHandler, TaskSettings

ARROW_TYPE = pa.list_(
    pa.struct(
        [
            pa.field("label", pa.string()),
            pa.field("text", pa.string()),
            pa.field("start", pa.int32()),
            pa.field("end", pa.int32()),
            pa.field("score", pa.float32()),
        ]
    )
)
IGNORE_LABELS = ("O",)


@dataclasses.dataclass(frozen=True)
class Settings(TaskSettings):
    kind = "ner"
    # none: one entity per token with the model's tag; simple: adjacent tokens grouped;
    # first / average / max: words kept whole, labelled from their first token / mean / best token.
    aggregation: Literal["none", "simple", "first", "average", "max"] = "simple"
    # Tokens shared by consecutive windows over a long document; null truncates to the first window.
    stride: int | None = 128


class Handler(TaskHandler):
    auto_class_name = "AutoModelForTokenClassification"
    architecture_suffix = "ForTokenClassification"

    def stride(self) -> int | None:
        return self.settings.stride

    def annotate(self, items: Sequence[Tokenized], model: Loaded) -> list[list[dict[str, Any]]]:
        rows, _ = self.rows(items, model)
        logits = iter(self.forward(rows, model))
        word_aware = bool(
            getattr(
                getattr(getattr(model.tokenizer, "_tokenizer", None), "model", None),
                "continuing_subword_prefix",
                None,
            )
        )
        out = []
        for tokenized in items:
            entities = []
            spans = windows(len(tokenized.ids), self.body, self.stride())
            for start, end in spans:
                row_logits = next(logits)[len(self.prefix) : len(self.prefix) + end - start]
                entities += self._window_entities(tokenized, start, end, row_logits, model, word_aware)
            if len(spans) > 1:
                entities = merge_overlapping(entities)
            text = tokenized.item.doc.text
            out.append(
                [
                    {
                        "label": e["label"],
                        "text": text[e["start"] : e["end"]],
                        "start": int(e["start"]),
                        "end": int(e["end"]),
                        "score": float(e["score"]),
                    }
                    for e in entities
                ]
            )
        return out

    def _window_entities(
        self, tokenized: Tokenized, start: int, end: int, logits: np.ndarray, model: Loaded, word_aware: bool
    ) -> list[dict[str, Any]]:
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        scores = shifted / shifted.sum(axis=-1, keepdims=True)
        text = tokenized.item.doc.text
        ids = tokenized.ids[start:end]
        words = model.tokenizer.convert_ids_to_tokens(ids.tolist())
        unk = model.tokenizer.unk_token_id
        tokens = []
        for k, (token_id, word) in enumerate(zip(ids, words, strict=True)):
            s, e = (int(v) for v in tokenized.offsets[start + k])
            ref = text[s:e]
            if word_aware:
                is_subword = len(word) != len(ref)
            else:
                is_subword = s > 0 and " " not in text[s - 1 : s + 1]
            if int(token_id) == unk:
                word, is_subword = ref, False
            tokens.append({"word": word, "scores": scores[k], "start": s, "end": e, "is_subword": is_subword})
        strategy = self.settings.aggregation
        if strategy in ("none", "simple"):
            labelled = [_labelled(t["scores"], t, model) for t in tokens]
        else:
            labelled = [_word(group, strategy, model) for group in _words(tokens)]
        if strategy != "none":
            labelled = _group(labelled)
        return [e for e in labelled if e["label"] not in IGNORE_LABELS]

    def arrow_type(self) -> pa.DataType:
        return ARROW_TYPE

    def settings_problem(self) -> str | None:
        stride = self.settings.stride
        if stride is not None and not 0 <= stride < self.body:
            return f"stride: {stride} must be at least 0 and below the window's {self.body} tokens"
        return None


def _labelled(scores: np.ndarray, token: dict[str, Any], model: Loaded) -> dict[str, Any]:
    best = int(scores.argmax())
    return {
        "label": model.id2label[best],
        "score": scores[best],
        "start": token["start"],
        "end": token["end"],
    }


def _words(tokens: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    groups: list[list[dict[str, Any]]] = []
    for token in tokens:
        if groups and token["is_subword"]:
            groups[-1].append(token)
        else:
            groups.append([token])
    return groups


def _word(tokens: list[dict[str, Any]], strategy: str, model: Loaded) -> dict[str, Any]:
    if strategy == "first":
        scores = tokens[0]["scores"]
    elif strategy == "max":
        scores = max(tokens, key=lambda t: t["scores"].max())["scores"]
    else:
        scores = np.nanmean(np.stack([t["scores"] for t in tokens]), axis=0)
    best = int(scores.argmax())
    return {
        "label": model.id2label[best],
        "score": scores[best],
        "start": tokens[0]["start"],
        "end": tokens[-1]["end"],
    }


def _tag(label: str) -> tuple[str, str]:
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


def _group(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Adjacent entities with the same tag become one, unless the next one begins a new entity (B-)."""
    groups: list[list[dict[str, Any]]] = []
    for entity in entities:
        bi, tag = _tag(entity["label"])
        if groups and tag == _tag(groups[-1][-1]["label"])[1] and bi != "B":
            groups[-1].append(entity)
        else:
            groups.append([entity])
    return [
        {
            "label": group[0]["label"].split("-", 1)[-1],
            "score": np.mean(np.nanmean([e["score"] for e in group])),
            "start": group[0]["start"],
            "end": group[-1]["end"],
        }
        for group in groups
    ]


def merge_overlapping(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entities from overlapping windows: of two that overlap keep the longer, then the higher score."""
    if not entities:
        return entities
    entities = sorted(entities, key=lambda e: e["start"])
    merged = []
    previous = entities[0]
    for entity in entities:
        if previous["start"] <= entity["start"] < previous["end"]:
            length, previous_length = entity["end"] - entity["start"], previous["end"] - previous["start"]
            if length > previous_length or (
                length == previous_length and entity["score"] > previous["score"]
            ):
                previous = entity
        else:
            merged.append(previous)
            previous = entity
    merged.append(previous)
    return merged
