"""Records that flow between the pipeline's steps, and every Arrow schema the pipeline writes.

Documents, dead-letter rows and per-shard statistics are small frozen dataclasses; the Parquet schemas are
built here from them, so the output contract lives in one place. Each task kind contributes one column type
(see ``transforms/tasks``)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

# Where in the pipeline a record failed; the dead letter's ``stage`` column takes these values.
STAGES = ("read", "decode", "parse", "tokenize", "infer", "write")
RAW_LIMIT = 1024  # bytes of the raw record kept in a dead-letter row
MESSAGE_LIMIT = 1024  # bytes of a dead-letter message (messages may quote a record's values)
SURROGATES = re.compile("[\ud800-\udfff]")

# What the ``warnings`` column of an output row can hold: the document was annotated, but not exactly as
# its bytes were given, or it deserves a second look. Values are these codes, in this order.
WARNINGS = {
    "invalid_utf8": "bytes that are not UTF-8 were replaced by U+FFFD, one per invalid sequence",
    "lone_surrogate": "a JSON \\uD800-\\uDFFF escape without its pair was replaced by U+FFFD",
    "control_chars": "the text holds NUL or other control characters (kept as given: offsets stay true)",
    "empty_text": "the text is empty or whitespace only",
    "duplicate_id": "another row of the same shard has this id",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Document:
    id: str
    source: str  # shard URI
    offset: int  # line number (text, jsonl) or row index (parquet), from 0
    text: str
    warnings: tuple[str, ...] = ()  # codes from WARNINGS, in their order there
    # Where the text starts in its record's text: 0, unless a record over input.max_chars was split.
    char_offset: int = 0
    # A sentence pair's second text (input.text_pair_field); None for a single text.
    text_pair: str | None = None

    def with_warnings(self, *codes: str) -> Document:
        found = {*self.warnings, *codes}
        return dataclasses.replace(self, warnings=tuple(w for w in WARNINGS if w in found))


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    """A record that could not be annotated: one dead-letter row."""

    id: str | None
    source: str
    offset: int
    stage: str
    error: str  # exception type, or a short code when no exception was raised
    message: str
    raw: str

    @classmethod
    def of(
        cls,
        stage: str,
        error: str | BaseException,
        message: str,
        *,
        source: str,
        offset: int,
        id: str | None = None,
        raw: bytes | str = b"",
    ) -> Failure:
        name = type(error).__name__ if isinstance(error, BaseException) else error
        return cls(id, source, offset, stage, name, clip(message, MESSAGE_LIMIT), clip(raw, RAW_LIMIT))

    @classmethod
    def of_document(cls, stage: str, error: str | BaseException, message: str, doc: Document) -> Failure:
        """The dead-letter row of a document that was read but could not be annotated or written."""
        return cls.of(stage, error, message, source=doc.source, offset=doc.offset, id=doc.id, raw=doc.text)


def clip(value: bytes | str, limit: int) -> str:
    """At most ``limit`` bytes of UTF-8: invalid bytes and lone surrogates become U+FFFD first, then the
    text is cut at a character boundary (so a replacement never pushes it over the limit)."""
    if isinstance(value, bytes):
        value = value[: 4 * limit].decode("utf-8", "replace")
    value = SURROGATES.sub("\ufffd", value[:limit])
    return value.encode("utf-8")[:limit].decode("utf-8", "ignore")


@dataclasses.dataclass(frozen=True, slots=True)
class Annotated:
    """A document with its token count and one result per task, keyed by task name."""

    doc: Document
    n_tokens: int  # under the first tokenizer, special tokens excluded; -1 until tokenized
    results: Mapping[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class ShardStats:
    """What one shard contributed, merged into the run summary."""

    shards: int = 0
    docs_read: int = 0
    docs_written: int = 0
    docs_failed: int = 0
    tokens: int = 0
    failed_by_stage: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def __add__(self, other: ShardStats) -> ShardStats:
        stages = dict(self.failed_by_stage)
        for stage, n in other.failed_by_stage.items():
            stages[stage] = stages.get(stage, 0) + n
        return ShardStats(
            self.shards + other.shards,
            self.docs_read + other.docs_read,
            self.docs_written + other.docs_written,
            self.docs_failed + other.docs_failed,
            self.tokens + other.tokens,
            dict(sorted(stages.items())),
        )


DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("raw", pa.string(), nullable=False),
    ]
)


def output_schema(
    task_types: Mapping[str, pa.DataType],
    keep_text: bool,
    metadata: Mapping[str, str] | None = None,
    split: bool = False,
    pairs: bool = False,
) -> pa.Schema:
    """The enriched-document schema: fixed columns, then one column per task in config order. With
    ``split`` (input.long_documents: split), ``char_offset`` places each part in its record's text; with
    ``pairs`` (input.text_pair_field), a kept text comes with its pair text."""
    fields = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("n_tokens", pa.int32(), nullable=False),
        pa.field("warnings", pa.list_(pa.string()), nullable=False),
    ]
    if split:
        fields.insert(3, pa.field("char_offset", pa.int64(), nullable=False))
    if keep_text:
        fields.append(pa.field("text", pa.string(), nullable=False))
    if keep_text and pairs:
        fields.append(pa.field("text_pair", pa.string(), nullable=False))
    fields += [pa.field(name, type_) for name, type_ in task_types.items()]
    return pa.schema(fields, metadata=dict(metadata or {}))


def output_row(item: Annotated, keep_text: bool) -> dict[str, Any]:
    row = {
        "id": item.doc.id,
        "source": item.doc.source,
        "offset": item.doc.offset,
        "char_offset": item.doc.char_offset,  # written only where the schema has the column
        "n_tokens": item.n_tokens,
        "warnings": list(item.doc.warnings),
    }
    if keep_text:
        row["text"] = item.doc.text
        row["text_pair"] = item.doc.text_pair  # written only where the schema has the column
    row.update(item.results)
    return row


def output_table(items: Sequence[Annotated], schema: pa.Schema) -> pa.Table:
    """Annotated documents as a table of the output schema, built column by column: the values ``output_row``
    gives, without a dictionary per row."""
    docs = [item.doc for item in items]
    values: dict[str, list[Any]] = {
        "id": [d.id for d in docs],
        "source": [d.source for d in docs],
        "offset": [d.offset for d in docs],
        "char_offset": [d.char_offset for d in docs],
        "n_tokens": [item.n_tokens for item in items],
        "warnings": [list(d.warnings) for d in docs],
        "text": [d.text for d in docs],
        "text_pair": [d.text_pair for d in docs],
    }
    columns = [
        pa.array(values[f.name] if f.name in values else [i.results.get(f.name) for i in items], f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def dead_letter_row(failure: Failure) -> dict[str, Any]:
    return dataclasses.asdict(failure)
