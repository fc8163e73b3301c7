"""``ner``: entity spans from a token-classification model.

Post-processing is that of ``transformers``' token-classification pipeline (strategies none, simple,
first, average, max; long documents in overlapping windows merged by keeping the longer, then the
higher-scoring span), with one difference users rely on: each entity's ``text`` is the document's own
characters ``document[start:end]``, not the tokenizer's decoding of them."""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from distilbeam.transforms.batching import Tokenized, windows
from distilbeam.transforms.tasks.base import Loaded, TaskHandler, TaskSettings
from distilbeam.transforms.tasks.runs import last_rows, run_means

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

    def load_model(self) -> Loaded:
        loaded = super().load_model()
        vocabulary(loaded.tokenizer)  # read once here rather than in the first batch
        return loaded

    def annotate(self, items: Sequence[Tokenized], model: Loaded) -> list[list[dict[str, Any]]]:
        """Rows of every window of every document through the model, then one pass over the whole batch:
        every window's tokens end to end (``window_tokens``), entities found in all of them at once
        (``find_entities``), then split back into documents, windows of one document merged."""
        if not items:
            return []
        rows, owners = self.rows(items, model)
        body, stride = self.body, self.stride()
        spans = [windows(len(t.ids), body, stride) for t in items]
        logits = self.forward(rows, model)
        tokens = window_tokens(items, spans, logits, len(self.prefix), vocabulary(model.tokenizer))
        found = find_entities(
            tokens, Labels.of(model.id2label, tokens.scores.shape[1]), self.settings.aggregation
        )
        return per_document(items, spans, np.asarray(owners, dtype=np.int64), found)

    def arrow_type(self) -> pa.DataType:
        return ARROW_TYPE

    def settings_problem(self) -> str | None:
        stride = self.settings.stride
        if stride is not None and not 0 <= stride < self.body:
            return f"stride: {stride} must be at least 0 and below the window's {self.body} tokens"
        return None


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """What post-processing needs to know of each token id, read from the tokenizer once per process."""

    # The tokenizer marks a word's continuing pieces (WordPiece's "##"): a token whose string is not as long
    # as the characters it covers is part of a word. Without a marker, a token is part of a word when no
    # space touches its start.
    word_aware: bool
    token_lengths: np.ndarray  # characters in each id's token string ("##ing": 5); -1 for an id without one
    unk_id: int | None  # the unknown token: its own characters, always the start of a word


_VOCABULARIES: weakref.WeakKeyDictionary[Any, Vocabulary] = weakref.WeakKeyDictionary()
_VOCABULARIES_LOCK = threading.Lock()


def vocabulary(tokenizer: Any) -> Vocabulary:
    """The tokenizer's ``Vocabulary``, built at its first use in this process and kept while it lives."""
    with _VOCABULARIES_LOCK:
        known = _VOCABULARIES.get(tokenizer)
        if known is None:
            known = _VOCABULARIES[tokenizer] = _read_vocabulary(tokenizer)
        return known


def _read_vocabulary(tokenizer: Any) -> Vocabulary:
    backend = getattr(getattr(tokenizer, "_tokenizer", None), "model", None)
    word_aware = bool(getattr(backend, "continuing_subword_prefix", None))
    lengths = np.zeros(0, dtype=np.int64)
    if word_aware:
        size = max(tokenizer.get_vocab().values(), default=-1) + 1
        strings = tokenizer.convert_ids_to_tokens(list(range(size)))
        lengths = np.asarray([-1 if s is None else len(s) for s in strings], dtype=np.int64)
    unk = tokenizer.unk_token_id
    return Vocabulary(word_aware, lengths, None if unk is None else int(unk))


@dataclasses.dataclass(frozen=True)
class Labels:
    """The model's labels as post-processing reads them, indexed by label id."""

    names: tuple[str, ...]  # as the model names them ("B-PER")
    entity_names: tuple[str, ...]  # a grouped entity's label: the name without what precedes its first "-"
    kinds: np.ndarray  # int: equal for labels of one entity type ("B-PER", "I-PER"), as transformers tags
    begins: np.ndarray  # bool: a B- label, which starts a new entity even right after one of its type
    ignored: np.ndarray  # bool: a name in IGNORE_LABELS (aggregation none)
    entity_ignored: np.ndarray  # bool: an entity name in IGNORE_LABELS (grouped)

    @classmethod
    def of(cls, id2label: dict[int, str], n_labels: int) -> Labels:
        names = tuple(id2label[i] for i in range(n_labels))
        entity_names = tuple(name.split("-", 1)[-1] for name in names)
        types = [name[2:] if name.startswith(("B-", "I-")) else name for name in names]
        kinds = np.asarray([types.index(t) for t in types], dtype=np.int64)
        return cls(
            names,
            entity_names,
            kinds,
            np.asarray([name.startswith("B-") for name in names], dtype=bool),
            np.asarray([name in IGNORE_LABELS for name in names], dtype=bool),
            np.asarray([name in IGNORE_LABELS for name in entity_names], dtype=bool),
        )


@dataclasses.dataclass(frozen=True)
class WindowTokens:
    """The document tokens of every window of a batch, windows end to end, in document order."""

    scores: np.ndarray  # float32 [tokens, labels]: softmax of each token's logits
    starts: np.ndarray  # int [tokens]: character offsets into the token's document
    ends: np.ndarray
    is_subword: np.ndarray  # bool [tokens]: continues the word of the token before it
    window: np.ndarray  # int [tokens]: the window's index among the batch's model rows

    @property
    def first_in_window(self) -> np.ndarray:
        first = np.ones(len(self.window), dtype=bool)
        first[1:] = self.window[1:] != self.window[:-1]
        return first


@dataclasses.dataclass(frozen=True)
class Entities:
    """Entities (or labelled tokens or words) found in a batch's windows, in window order then position."""

    names: tuple[str, ...]  # what ``label`` indexes
    label: np.ndarray
    score: np.ndarray  # float32
    start: np.ndarray
    end: np.ndarray
    window: np.ndarray

    def where(self, keep: np.ndarray) -> Entities:
        return Entities(
            self.names,
            self.label[keep],
            self.score[keep],
            self.start[keep],
            self.end[keep],
            self.window[keep],
        )


def window_tokens(
    items: Sequence[Tokenized],
    spans: Sequence[list[tuple[int, int]]],
    logits: Sequence[np.ndarray],
    skip: int,
    vocab: Vocabulary,
) -> WindowTokens:
    """Each window's document tokens (its row's logits less the ``skip`` special tokens before them) with
    their probabilities and whether each continues a word, as transformers' token-classification pipeline
    decides: by the length of the token's string against the characters it covers, or by spaces."""
    row_logits, ids, offsets, lengths = [], [], [], []
    rows = iter(logits)
    for tokenized, document_spans in zip(items, spans, strict=True):
        for start, end in document_spans:
            row_logits.append(next(rows)[skip : skip + end - start])
            ids.append(tokenized.ids[start:end])
            offsets.append(tokenized.offsets[start:end])
            lengths.append(end - start)
    window = np.repeat(np.arange(len(lengths)), lengths)
    token_logits = np.concatenate(row_logits)
    shifted = np.exp(token_logits - token_logits.max(axis=-1, keepdims=True))
    scores = shifted / shifted.sum(axis=-1, keepdims=True)
    token_ids = np.concatenate(ids)
    spans_of = np.concatenate(offsets).astype(np.int64)
    starts, ends = spans_of[:, 0], spans_of[:, 1]
    if vocab.word_aware:
        is_subword = vocab.token_lengths[token_ids] != ends - starts
    else:
        is_subword = _no_space_before(items, spans, window, starts)
    if vocab.unk_id is not None:
        is_subword &= token_ids != vocab.unk_id
    return WindowTokens(scores, starts, ends, is_subword, window)


def _no_space_before(
    items: Sequence[Tokenized], spans: Sequence[list[tuple[int, int]]], window: np.ndarray, starts: np.ndarray
) -> np.ndarray:
    """Per token: not at its document's start, and neither the character before it nor its first is a
    space (transformers' rule for tokenizers that do not mark continuing pieces)."""
    texts = [t.item.doc.text for t in items]
    text_of_window = np.repeat(np.arange(len(items)), [len(s) for s in spans])
    text_of = text_of_window[window]
    lengths = np.asarray([len(t) for t in texts], dtype=np.int64)
    base = np.concatenate([[0], np.cumsum(lengths)])[text_of]
    chars = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    space = np.append(chars == ord(" "), False)  # a token at its text's very end has no first character
    at = base + starts
    before = space[np.maximum(at - 1, 0)]
    first = np.where(starts < lengths[text_of], space[np.minimum(at, len(chars))], False)
    return (starts > 0) & ~before & ~first


def find_entities(tokens: WindowTokens, labels: Labels, strategy: str) -> Entities:
    """Entities in every window at once, as transformers' token-classification pipeline finds them in
    one: tokens (none, simple) or words (first, average, max) labelled by their best score, then, except
    for none, runs of one entity type joined and scored by their mean; "O" left out."""
    units = _labelled(tokens, labels, strategy)
    if strategy == "none":
        return units.where(~labels.ignored[units.label])
    return _grouped(units, labels)


def _labelled(tokens: WindowTokens, labels: Labels, strategy: str) -> Entities:
    """One entity per token (none, simple) or per word (first, average, max): its best label and score.
    A word never crosses a window's edge."""
    if strategy in ("none", "simple"):
        first = last = np.arange(len(tokens.window))
        scores = tokens.scores
    else:
        first = np.flatnonzero(tokens.first_in_window | ~tokens.is_subword)
        last = last_rows(first, len(tokens.window))
        scores = _word_scores(tokens.scores, first, strategy)
    best = scores.argmax(axis=1)
    return Entities(
        labels.names,
        best,
        np.take_along_axis(scores, best[:, None], axis=1)[:, 0],
        tokens.starts[first],
        tokens.ends[last],
        tokens.window[first],
    )


def _grouped(units: Entities, labels: Labels) -> Entities:
    """Runs of consecutive units of one entity type within a window, each unit with a B- label starting a
    new run, as one entity named without its B-/I- and scored by the mean of its units' scores; runs
    named "O" left out (before their means: they are most of a text)."""
    kind = labels.kinds[units.label]
    opens = labels.begins[units.label]
    opens[:1] = True
    opens[1:] |= (kind[1:] != kind[:-1]) | (units.window[1:] != units.window[:-1])
    first = np.flatnonzero(opens)
    last = last_rows(first, len(opens))
    kept = ~labels.entity_ignored[units.label[first]]
    first, last = first[kept], last[kept]
    return Entities(
        labels.entity_names,
        units.label[first],
        run_means(units.score, first, last),
        units.start[first],
        units.end[last],
        units.window[first],
    )


def _word_scores(scores: np.ndarray, words: np.ndarray, strategy: str) -> np.ndarray:
    """Each word's label scores from its tokens' (``words``: the index of each word's first token): the
    first token's, their mean, or those of the token with the highest score (the first of equals)."""
    if strategy == "first":
        return scores[words]
    if strategy == "average":
        return run_means(scores, words, last_rows(words, len(scores)))
    if strategy != "max":
        raise ValueError(f"aggregation {strategy!r} is not one of none, simple, first, average, max")
    top = scores.max(axis=1)
    opens = np.zeros(len(scores), dtype=bool)
    opens[words] = True
    word_of = np.cumsum(opens) - 1
    candidates = np.where(top == np.fmax.reduceat(top, words)[word_of], np.arange(len(scores)), len(scores))
    chosen = np.minimum.reduceat(candidates, words)
    return scores[np.where(chosen < len(scores), chosen, words)]


def per_document(
    items: Sequence[Tokenized], spans: Sequence[list[tuple[int, int]]], owners: np.ndarray, found: Entities
) -> list[list[dict[str, Any]]]:
    """The batch's entities split by document, each with the document's own text; a document read in
    several windows gets its overlapping entities merged."""
    document = owners[found.window]
    bounds = np.searchsorted(document, np.arange(len(items) + 1)).tolist()
    labels = [found.names[i] for i in found.label.tolist()]
    starts, ends, scores = found.start.tolist(), found.end.tolist(), found.score.tolist()
    out = []
    for i, tokenized in enumerate(items):
        text = tokenized.item.doc.text
        entities = [
            {
                "label": labels[k],
                "text": text[starts[k] : ends[k]],
                "start": starts[k],
                "end": ends[k],
                "score": scores[k],
            }
            for k in range(bounds[i], bounds[i + 1])
        ]
        if len(spans[i]) > 1:
            entities = merge_overlapping(entities)
        out.append(entities)
    return out


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
