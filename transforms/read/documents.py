"""What a record becomes, whatever its format: its id (taken from the record and checked, or derived from
where the record is), its text decoded as UTF-8 with each replacement and oddity noted as a warning, and
the ``input.max_chars`` limit: a longer document is a dead-letter row, or with ``long_documents: split``
it is cut into parts ``<id>#0``, ``<id>#1`` ... that keep whole words where they can."""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import re
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from distilbeam.transforms.read.discovery import BOM, ReadSettings
from distilbeam.transforms.schema import SURROGATES, Document, Failure

MAX_ID_BYTES = 1024  # longer ids are refused: an id is a key, and dead-letter rows stay small
# C0 and C1 control characters other than tab, line feed and carriage return.
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def derived_id(source: str, offset: int) -> str:
    """A stable id for records without one: the same shard and offset always give the same id."""
    return hashlib.blake2b(f"{source}\0{offset}".encode(), digest_size=10).hexdigest()


@dataclasses.dataclass(frozen=True)
class BadId:
    message: str


def record_id(value: Any, source: str, offset: int) -> str | BadId:
    """The id a record's id field gives it (derived when it has none), or why that value cannot be an id."""
    if value is None:
        return derived_id(source, offset)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        kind = json_kind(value)
        return BadId(f"id is {short(value)} ({kind}); expected a non-empty string or an integer")
    if SURROGATES.search(value):
        return BadId(f"id {short(value)} holds an unpaired UTF-16 surrogate escape; it cannot be stored")
    if len(value.encode("utf-8")) > MAX_ID_BYTES:
        return BadId(
            f"id is {len(value.encode('utf-8'))} bytes long, over the {MAX_ID_BYTES} bytes ids may take: "
            f"shorten it, or set input.id_field: null to derive ids ({short(value)})"
        )
    return value


def json_kind(value: Any) -> str:
    """What a decoded JSON value is, in a message's words ("a number", "null")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def short(value: Any, limit: int = 80) -> str:
    """The value's repr, cut to ``limit`` characters for a message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def decode(raw: bytes) -> tuple[str, tuple[str, ...]]:
    """UTF-8 text, with each invalid byte sequence replaced by U+FFFD and the ``invalid_utf8`` warning."""
    try:
        return raw.decode("utf-8"), ()
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), ("invalid_utf8",)


def document(
    id_: str, source: str, offset: int, text: str, warnings: tuple[str, ...], text_pair: str | None = None
) -> Document:
    """The document, with the ``control_chars`` and ``empty_text`` warnings its text (or, for a sentence
    pair, either of its texts) calls for."""
    found = list(warnings)
    texts = (text,) if text_pair is None else (text, text_pair)
    if any(CONTROL.search(t) for t in texts):
        found.append("control_chars")
    if any(not t.strip() for t in texts):
        found.append("empty_text")
    doc = Document(id_, source, offset, text, text_pair=text_pair)
    return doc.with_warnings(*found) if found else doc


def too_long(doc: Document, settings: ReadSettings, raw: bytes) -> Document | Failure:
    """The document, or its dead-letter row when it is over ``max_chars`` (a sentence pair: its two texts
    together) and long documents are not split."""
    n_chars = len(doc.text) + len(doc.text_pair or "")
    if n_chars <= settings.max_chars or settings.split:
        return doc
    message = f"document has {n_chars} characters, over input.max_chars ({settings.max_chars})"
    if doc.text_pair is not None:
        message = (
            f"sentence pair has {n_chars} characters ({len(doc.text)} + {len(doc.text_pair)}), over "
            f"input.max_chars ({settings.max_chars})"
        )
    return Failure.of("read", "TooLong", message, source=doc.source, offset=doc.offset, id=doc.id, raw=raw)


def split_document(record: Document | Failure, settings: ReadSettings) -> Iterator[Document | Failure]:
    """The record, or with ``long_documents: split`` a document over ``max_chars`` in its parts."""
    if isinstance(record, Failure) or len(record.text) <= settings.max_chars or not settings.split:
        yield record
        return
    replaced = [w for w in record.warnings if w in ("invalid_utf8", "lone_surrogate")]
    for k, (start, text) in enumerate(split_text([record.text], settings.max_chars)):
        warnings = tuple(replaced) if "\ufffd" in text else ()
        yield _part(record.id, k, record.source, record.offset, start, text, warnings)


def long_line_parts(
    chunks: Iterable[bytes], source: str, offset: int, settings: ReadSettings
) -> Iterator[Document]:
    """The parts of a text line too long to hold, cut as its chunks stream in."""
    decoded = _decoded(chunks, strip_bom=offset == 0)
    for k, (start, text) in enumerate(split_text(decoded, settings.max_chars)):
        warnings = ("invalid_utf8",) if "\ufffd" in text and _replacements.count else ()
        yield _part(derived_id(source, offset), k, source, offset, start, text, warnings)


def _part(
    id_: str, k: int, source: str, offset: int, start: int, text: str, warnings: tuple[str, ...]
) -> Document:
    """Part k of record ``id_`` is document ``<id_>#k``; ``char_offset`` places it in the record's text."""
    return dataclasses.replace(document(f"{id_}#{k}", source, offset, text, warnings), char_offset=start)


def split_text(chunks: Iterable[str], max_chars: int) -> Iterator[tuple[int, str]]:
    """Consecutive parts of at most ``max_chars`` characters of the text the chunks make up, each with the
    position of its first character. A part ends after the last whitespace in its second half, when there
    is one, so that words stay whole. Holds at most one part and one chunk at a time."""
    buffer, start = "", 0
    for chunk in chunks:
        buffer += chunk
        while len(buffer) > max_chars:
            cut = _cut(buffer, max_chars)
            yield start, buffer[:cut]
            start, buffer = start + cut, buffer[cut:]
    if buffer or not start:
        yield start, buffer


def _cut(text: str, max_chars: int) -> int:
    """Where a part of ``text`` ends: after its last whitespace in its second half, else at ``max_chars``."""
    space = max(text.rfind(c, max_chars // 2, max_chars) for c in " \t\n\r\u3000")
    return space + 1 if space >= 0 else max_chars


_replacements = threading.local()  # invalid byte sequences the streaming decoder replaced, per thread


def _replace_and_count(error: UnicodeDecodeError) -> tuple[str, int]:
    """The ``distilbeam.replace`` codec error handler: U+FFFD, counted."""
    _replacements.count = getattr(_replacements, "count", 0) + 1
    return "\ufffd", error.end


codecs.register_error("distilbeam.replace", _replace_and_count)


def _decoded(chunks: Iterable[bytes], strip_bom: bool) -> Iterator[str]:
    """UTF-8 text of a stream of chunks, invalid byte sequences replaced as ``decode`` replaces them."""
    _replacements.count = 0
    decoder = codecs.getincrementaldecoder("utf-8")("distilbeam.replace")
    for i, chunk in enumerate(chunks):
        yield decoder.decode(chunk.removeprefix(BOM) if i == 0 and strip_bom else chunk)
    yield decoder.decode(b"", final=True)
