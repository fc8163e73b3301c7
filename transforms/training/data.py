"""Labelled examples for ``distilbeam train``: read from JSONL, Parquet or CoNLL/BIO files (local or in an
object store), checked record by record, split into train and validation, and summarised by a hash of
the files' bytes. Every mistake is a ``DataError`` naming the file and record (line or row) and the key."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from distilbeam.transforms import SetupError, storage
from distilbeam.transforms.storage import Location

CONLL_SUFFIXES = (".conll", ".bio", ".iob")
MIN_EXAMPLES = 8  # below this many training examples there is nothing to learn or measure


class DataError(SetupError):
    """A labelled record or file that cannot be trained on; the message names it and says why."""


@dataclasses.dataclass(frozen=True)
class Span:
    start: int
    end: int
    label: str


@dataclasses.dataclass(frozen=True)
class Example:
    text: str
    # classify: a label, or a tuple of labels (multi-label); ner: a tuple of Spans
    label: str | tuple[Any, ...]
    where: str  # "train.jsonl line 3": how messages name the record
    pair: str | None = None

    def labels(self) -> tuple[str, ...]:
        """Every label the example carries."""
        if isinstance(self.label, str):
            return (self.label,)
        return tuple(s.label if isinstance(s, Span) else s for s in self.label)


@dataclasses.dataclass(frozen=True)
class Fields:
    text: str = "text"
    label: str = "label"
    pair: str | None = None


def read_examples(
    patterns: Sequence[Location], fields: Fields, task: str, key: str
) -> tuple[list[Example], list[Location]]:
    """Every record of the files the globs match, in file order, and the files read (each reached with its
    glob's options). A glob that matches nothing fails naming ``key`` (``data.train``,
    ``data.validation``)."""
    files: dict[str, Location] = {}
    for pattern in patterns:
        found = pattern.expand()
        if not found:
            raise DataError(f"{key}: {pattern.url!r} matches no file")
        for uri in found:
            files.setdefault(uri, Location(uri, pattern.options))
    examples: list[Example] = []
    for file in files.values():
        examples.extend(_read_file(file, fields, task))
    if not examples:
        raise DataError(f"{key}: the files hold no records ({', '.join(files)})")
    return examples, list(files.values())


def _read_file(file: Location, fields: Fields, task: str) -> Iterator[Example]:
    uri = file.url
    name = storage.strip_compression(uri.lower())
    if name.endswith(CONLL_SUFFIXES):
        if task != "ner":
            raise DataError(f"{uri}: CoNLL/BIO files hold token tags, for task ner only")
        with file.open_input() as f:
            yield from conll_examples(uri, (line.decode("utf-8") for line in f))
        return
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        with file.open_input() as f:
            rows = pq.read_table(f).to_pylist()
        for i, row in enumerate(rows):
            yield to_example(row, f"{uri} row {i}", fields, task)
        return
    if not name.endswith((".jsonl", ".json", ".ndjson")):
        raise DataError(f"{uri}: unknown format; expected .jsonl, .parquet or (ner) .conll / .bio / .iob")
    with file.open_input() as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{uri} line {n}: not valid JSON ({exc})") from None
            if not isinstance(record, dict):
                raise DataError(f"{uri} line {n}: expected a JSON object, got {type(record).__name__}")
            yield to_example(record, f"{uri} line {n}", fields, task)


def to_example(record: Mapping[str, Any], where: str, fields: Fields, task: str) -> Example:
    """One record checked: a non-empty text (and pair), and a label of the task's shape."""
    text = _text(record, fields.text, where)
    pair = _text(record, fields.pair, where) if fields.pair else None
    if fields.label not in record:
        raise DataError(f"{where}: no {fields.label!r} key (data.label_field)")
    value = record[fields.label]
    if task == "ner":
        return Example(text, spans(value, text, where, fields.label), where)
    if isinstance(value, list):
        labels = tuple(_label(v, where, fields.label) for v in value)
        if len(set(labels)) != len(labels):
            raise DataError(f"{where}: {fields.label!r} lists a label twice: {list(labels)}")
        return Example(text, labels, where, pair)
    return Example(text, _label(value, where, fields.label), where, pair)


def _text(record: Mapping[str, Any], field: str, where: str) -> str:
    if field not in record:
        raise DataError(f"{where}: no {field!r} key")
    value = record[field]
    if not isinstance(value, str):
        raise DataError(f"{where}: {field!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where}: {field!r} is empty; remove the record or give it text")
    return value


def _label(value: Any, where: str, field: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise DataError(
            f"{where}: {field!r} must be a label (a non-empty string) or a list of them, got {value!r}"
        )
    return value


def spans(value: Any, text: str, where: str, field: str) -> tuple[Span, ...]:
    """Character spans checked against the text: in range, non-empty, not overlapping; sorted."""
    if not isinstance(value, list):
        raise DataError(f"{where}: {field!r} must be a list of {{start, end, label}} spans for ner")
    found = []
    for i, span in enumerate(value):
        at = f"{where}: {field}[{i}]"
        if not isinstance(span, Mapping) or not {"start", "end", "label"} <= set(span):
            raise DataError(f"{at}: expected a mapping with start, end and label, got {span!r}")
        start, end, label = span["start"], span["end"], span["label"]
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (start, end)):
            raise DataError(f"{at}: start and end must be integers, got {start!r} and {end!r}")
        if not 0 <= start < end <= len(text):
            raise DataError(
                f"{at}: span [{start}, {end}) is out of range for a text of {len(text)} characters"
            )
        if not isinstance(label, str) or not label or label == "O" or label[:2] in ("B-", "I-"):
            raise DataError(
                f"{at}: label must be an entity type such as PER (no B-/I- prefix), got {label!r}"
            )
        found.append(Span(start, end, label))
    found.sort(key=lambda s: (s.start, s.end))
    for a, b in itertools.pairwise(found):
        if b.start < a.end:
            raise DataError(
                f"{where}: spans [{a.start}, {a.end}) {a.label} and [{b.start}, {b.end}) {b.label} overlap"
            )
    return tuple(found)


def conll_examples(uri: str, lines: Iterable[str]) -> Iterator[Example]:
    """Sentences of a CoNLL-style file (a token and, in its last column, its BIO/IOB tag per line; blank lines
    between sentences), as texts of the tokens joined by spaces with their entity spans."""
    tokens: list[tuple[str, str]] = []
    first_line = 0
    for n, line in enumerate([*lines, ""], start=1):
        parts = line.split()
        if parts and parts[0] != "-DOCSTART-":
            if len(parts) < 2:
                raise DataError(f"{uri} line {n}: expected a token and its tag, got {line.strip()!r}")
            first_line = first_line or n
            tokens.append((parts[0], parts[-1]))
            continue
        if tokens:
            yield _conll_sentence(tokens, f"{uri} sentence at line {first_line}")
        tokens, first_line = [], 0


def _conll_sentence(tokens: list[tuple[str, str]], where: str) -> Example:
    text, found, open_span, position = "", [], None, 0
    for token, tag in tokens:
        start = position + (1 if text else 0)
        text = f"{text} {token}" if text else token
        position = len(text)
        prefix, _, kind = tag.partition("-")
        if tag == "O" or not kind:
            if tag != "O":
                raise DataError(f"{where}: tag {tag!r} of token {token!r} is neither O nor B-/I-/E-/S-<type>")
            open_span = None
            continue
        if prefix in ("I", "E") and open_span is not None and open_span[2] == kind:
            open_span[1] = position
        elif prefix in ("B", "I", "E", "S"):
            open_span = [start, position, kind]
            found.append(open_span)
        else:
            raise DataError(f"{where}: tag {tag!r} of token {token!r} is neither O nor B-/I-/E-/S-<type>")
    return Example(text, tuple(Span(s, e, k) for s, e, k in found), where)


def label_set(
    train: Sequence[Example], validation: Sequence[Example], declared: Sequence[str] | None
) -> list[str]:
    """The labels, in output order: ``declared`` (data.labels) or every label seen in train, sorted. A label
    outside the set, or (validation) never seen in training, fails naming its record."""
    seen = Counter(label for e in train for label in e.labels())
    labels = list(declared) if declared else sorted(seen)
    known = set(labels)
    for split, examples in (("train", train), ("validation", validation)):
        for e in examples:
            for label in e.labels():
                if label not in known:
                    raise DataError(f"{e.where}: label {label!r} is not in data.labels ({', '.join(labels)})")
                if split == "validation" and label not in seen:
                    raise DataError(f"{e.where}: label {label!r} never occurs in the training data")
    return labels


def check_split(train: Sequence[Example], validation: Sequence[Example], labels: Sequence[str]) -> None:
    """Enough training examples, and every label in both splits (macro scores need each class)."""
    if len(train) < MIN_EXAMPLES:
        raise DataError(
            f"data.train: {len(train)} training examples are too few; give at least {MIN_EXAMPLES}"
        )
    if not validation:
        raise DataError("data.validation: the validation split is empty")
    for split, examples in (("data.train", train), ("data.validation", validation)):
        counts = Counter(label for e in examples for label in e.labels())
        missing = [label for label in labels if not counts[label]]
        if missing:
            raise DataError(
                f"{split}: no example of label {', '.join(map(repr, missing))}; every label needs examples "
                "in both splits (add some, or set data.validation_fraction higher)"
            )


def hold_out(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Train and validation: ``fraction`` of each label's examples (by first label, at least one where the
    label has two or more) held out, chosen by ``seed``."""
    by_label: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        by_label.setdefault(min(e.labels(), default=""), []).append(i)
    rng = random.Random(seed)
    held: set[int] = set()
    for _, indices in sorted(by_label.items()):
        rng.shuffle(indices)
        take = max(1, round(fraction * len(indices))) if len(indices) > 1 else 0
        held.update(indices[:take])
    train = [e for i, e in enumerate(examples) if i not in held]
    return train, [e for i, e in enumerate(examples) if i in held]


def files_sha256(files: Sequence[Location]) -> dict[str, str]:
    """SHA-256 of each file's bytes (decompressed) by URL, and of them all in order under ``all``."""
    hashes, total = {}, hashlib.sha256()
    for file in files:
        digest = hashlib.sha256()
        with file.open_input() as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        hashes[file.url] = digest.hexdigest()
        total.update(f"{digest.hexdigest()}\n".encode())
    hashes["all"] = total.hexdigest()
    return hashes
