"""Reading text shards: globs expanded when the pipeline is built, then each shard streamed record by record
(text lines, JSON lines or Parquet rows) into documents. A record that cannot become a document becomes a
dead-letter row; a shard that breaks part-way keeps what was read and dead-letters the rest."""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from transforms import SetupError, storage
from transforms.schema import RAW_LIMIT, Document, Failure

FORMATS = {".txt": "text", ".text": "text", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
FORMATS |= {".parquet": "parquet", ".pq": "parquet"}
BOM = b"\xef\xbb\xbf"
PARQUET_BATCH_ROWS = 2048
# With long_documents: split, a JSON line is still parsed whole: one longer than this is dead-lettered.
SPLIT_JSON_BYTES = 256 << 20
LONG_LINE_CHUNK = 256 << 10  # bytes read at a time from a line over the cap


@dataclasses.dataclass(frozen=True)
class ReadSettings:
    format: str | None
    id_field: str | None
    text_field: str
    max_chars: int
    storage_options: Mapping[str, Any]
    # dead-letter: a document over max_chars is a dead-letter row; split: it is annotated in parts.
    long_documents: str = "dead-letter"

    @property
    def split(self) -> bool:
        return self.long_documents == "split"


@dataclasses.dataclass(frozen=True)
class Shard:
    uri: str
    format: str


def find_shards(patterns: tuple[str, ...], settings: ReadSettings) -> list[Shard]:
    """Expands every glob; each must match at least one file, and each file must have a known format."""
    shards: dict[str, Shard] = {}
    for pattern in patterns:
        try:
            uris = storage.expand(pattern, settings.storage_options)
        except (OSError, ValueError) as exc:
            raise SetupError(f"input.paths: cannot list {pattern}: {exc}") from exc
        if not uris:
            raise SetupError(f"input.paths: no file matches {pattern}")
        for uri in uris:
            shards[uri] = Shard(uri, shard_format(uri, settings.format))
    return list(shards.values())


def shard_format(uri: str, configured: str | None) -> str:
    if configured:
        return configured
    name = storage.strip_compression(uri.rsplit("/", 1)[-1])
    ext = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    if ext not in FORMATS:
        raise SetupError(
            f"input.paths: cannot tell the format of {uri} from its extension; set input.format "
            "to text, jsonl or parquet"
        )
    return FORMATS[ext]


def derived_id(source: str, offset: int) -> str:
    """A stable id for records without one: the same shard and offset always give the same id."""
    return hashlib.blake2b(f"{source}\0{offset}".encode(), digest_size=10).hexdigest()


def read_shard(shard: Shard, settings: ReadSettings) -> Iterator[Document | Failure]:
    """Every record of one shard, in order, as a document or a failure. Never raises for bad data."""
    if shard.format == "parquet":
        yield from _read_parquet(shard.uri, settings)
        return
    offset = 0
    try:
        stream = storage.open_input(shard.uri, settings.storage_options)
    except Exception as exc:
        yield Failure.of("read", exc, f"cannot open shard: {exc}", source=shard.uri, offset=0)
        return
    parse = _parse_json_line if shard.format == "jsonl" else _parse_text_line
    max_bytes = 4 * settings.max_chars
    if settings.split and shard.format == "jsonl":
        max_bytes = max(max_bytes, SPLIT_JSON_BYTES)
    with stream:
        lines = _lines(stream, max_bytes, keep_long=settings.split and shard.format == "text")
        while True:
            try:
                line = next(lines)
            except StopIteration:
                return
            except Exception as exc:
                message = f"shard unreadable after {offset} records ({exc}); the rest of it is lost"
                stage = "read" if isinstance(exc, PermissionError | IsADirectoryError) else "decode"
                yield Failure.of(stage, exc, message, source=shard.uri, offset=offset)
                return
            if offset == 0 and isinstance(line, bytes) and line.startswith(BOM):
                line = line[len(BOM) :]
            if isinstance(line, LongLine):
                parts = split_text(_decoded(line.chunks(), strip_bom=offset == 0), settings.max_chars)
                yield from _parts(derived_id(shard.uri, offset), shard.uri, offset, parts)
            elif line is None:
                message = f"record longer than input.max_chars ({settings.max_chars}); not annotated"
                if settings.split:
                    message = f"JSON record over {max_bytes} bytes; a JSON line is parsed whole, so not split"
                yield Failure.of("read", "TooLong", message, source=shard.uri, offset=offset)
            else:
                yield from split_document(parse(line, shard.uri, offset, settings), settings)
            offset += 1


class LongLine:
    """A text line over the byte cap, read on in chunks (never whole) by the one who takes it."""

    def __init__(self, head: bytes, stream: IO[bytes]):
        self._head: bytes | None = head
        self._stream = stream

    def chunks(self) -> Iterator[bytes]:
        """The rest of the line, in chunks, without its line ending; each chunk is read when asked for."""
        held = b""
        while True:
            if self._head is not None:
                chunk, self._head = self._head, None
            else:
                chunk = self._stream.readline(LONG_LINE_CHUNK) if self._stream else b""
            last = not chunk or chunk.endswith(b"\n")
            chunk = held + chunk.removesuffix(b"\n")
            if last:
                self._stream = None
                yield chunk.removesuffix(b"\r")
                return
            chunk, held = (chunk[:-1], b"\r") if chunk.endswith(b"\r") else (chunk, b"")
            yield chunk

    def skip(self) -> None:
        for _ in self.chunks():
            pass


def _lines(stream: IO[bytes], max_bytes: int, keep_long: bool = False) -> Iterator[bytes | LongLine | None]:
    """Lines without their line ending. A line over ``max_bytes`` is skipped unread (None), or with
    ``keep_long`` handed over as a LongLine to read on in chunks."""
    while True:
        line = stream.readline(max_bytes + 1)
        if not line:
            return
        if len(line) > max_bytes and not line.endswith(b"\n"):
            long_line = LongLine(line, stream)
            if keep_long:
                yield long_line
            else:
                yield None
            long_line.skip()  # whatever the taker left of it
            continue
        yield line.removesuffix(b"\n").removesuffix(b"\r")


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace")


def _too_long(text: str, source: str, offset: int, settings: ReadSettings, raw: bytes) -> Failure | None:
    if len(text) <= settings.max_chars or settings.split:
        return None
    message = f"document has {len(text)} characters, over input.max_chars ({settings.max_chars})"
    return Failure.of("read", "TooLong", message, source=source, offset=offset, raw=raw)


def _parse_text_line(raw: bytes, source: str, offset: int, settings: ReadSettings) -> Document | Failure:
    text = _decode(raw)
    return _too_long(text, source, offset, settings, raw) or Document(
        derived_id(source, offset), source, offset, text
    )


def _parse_json_line(raw: bytes, source: str, offset: int, settings: ReadSettings) -> Document | Failure:
    def fail(message: str, error: str | BaseException = "BadRecord", id: str | None = None) -> Failure:
        return Failure.of("parse", error, message, source=source, offset=offset, id=id, raw=raw)

    if not raw.strip():
        return fail("blank line where a JSON object was expected")
    try:
        record = json.loads(_decode(raw))
    except ValueError as exc:
        return fail(f"not valid JSON: {exc}", exc)
    if not isinstance(record, dict):
        return fail(f"JSON line is a {type(record).__name__}, expected an object")
    id_ = _record_id(record.get(settings.id_field) if settings.id_field else None, source, offset)
    if isinstance(id_, Failure):
        return dataclasses.replace(id_, raw=_decode(raw[:RAW_LIMIT]))
    text = record.get(settings.text_field)
    if not isinstance(text, str):
        what = "missing" if settings.text_field not in record else f"a {type(text).__name__}"
        if text is None and settings.text_field in record:
            what = "null"
        return fail(f"text field {settings.text_field!r} is {what}, expected a string", id=id_)
    return _too_long(text, source, offset, settings, raw) or Document(id_, source, offset, text)


def _record_id(value: Any, source: str, offset: int) -> str | Failure:
    if value is None:
        return derived_id(source, offset)
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    message = f"id is {value!r} ({type(value).__name__}); expected a non-empty string or an integer"
    return Failure.of("parse", "BadId", message, source=source, offset=offset)


def _read_parquet(uri: str, settings: ReadSettings) -> Iterator[Document | Failure]:
    try:
        fs, path = storage.filesystem(uri, settings.storage_options)
        handle = fs.open(path, "rb")
        parquet = pq.ParquetFile(handle)
    except Exception as exc:
        yield Failure.of("read", exc, f"cannot open Parquet shard: {exc}", source=uri, offset=0)
        return
    with handle:
        names = parquet.schema_arrow.names
        text_type = (
            parquet.schema_arrow.field(settings.text_field).type if settings.text_field in names else None
        )
        use_id = settings.id_field is not None and settings.id_field in names
        columns = [c for c in (settings.text_field, settings.id_field if use_id else None) if c in names]
        problem = None
        if text_type is None:
            problem = f"column {settings.text_field!r} not found; the file has {', '.join(names)}"
        elif not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
            problem = f"column {settings.text_field!r} is {text_type}, expected a string column"
        offset = 0
        try:
            for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns or None):
                table = batch.to_pydict()
                texts = table.get(settings.text_field, [None] * batch.num_rows)
                ids = table[settings.id_field] if use_id else [None] * batch.num_rows
                for text, raw_id in zip(texts, ids, strict=True):
                    yield from split_document(
                        _parquet_record(uri, offset, text, raw_id, problem, settings), settings
                    )
                    offset += 1
        except Exception as exc:
            message = f"Parquet shard unreadable after {offset} rows ({exc}); the rest of it is lost"
            yield Failure.of("decode", exc, message, source=uri, offset=offset)


def _parquet_record(
    uri: str, offset: int, text: Any, raw_id: Any, problem: str | None, settings: ReadSettings
) -> Document | Failure:
    id_ = _record_id(raw_id, uri, offset)
    if isinstance(id_, Failure):
        return id_
    raw = repr(text)
    if problem:
        return Failure.of("parse", "BadColumn", problem, source=uri, offset=offset, id=id_, raw=raw)
    if text is None:
        message = f"text field {settings.text_field!r} is null"
        return Failure.of("parse", "BadRecord", message, source=uri, offset=offset, id=id_)
    return _too_long(text, uri, offset, settings, text.encode()) or Document(id_, uri, offset, text)


def split_document(record: Document | Failure, settings: ReadSettings) -> Iterator[Document | Failure]:
    """The record, or with ``long_documents: split`` a document over ``max_chars`` in its parts."""
    if isinstance(record, Failure) or len(record.text) <= settings.max_chars or not settings.split:
        yield record
        return
    yield from _parts(record.id, record.source, record.offset, split_text([record.text], settings.max_chars))


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
    space = max(text.rfind(c, max_chars // 2, max_chars) for c in " \t\n\r\u3000")
    return space + 1 if space >= 0 else max_chars


def _decoded(chunks: Iterable[bytes], strip_bom: bool) -> Iterator[str]:
    """UTF-8 text of a stream of chunks (invalid bytes replaced, as for any line)."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    for i, chunk in enumerate(chunks):
        if i == 0 and strip_bom:
            chunk = chunk.removeprefix(BOM)
        yield decoder.decode(chunk)
    yield decoder.decode(b"", final=True)


def _parts(id_: str, source: str, offset: int, parts: Iterable[tuple[int, str]]) -> Iterator[Document]:
    """Part k of record ``id_`` is document ``<id_>#k``; ``char_offset`` places it in the record's text."""
    for k, (start, text) in enumerate(parts):
        yield Document(f"{id_}#{k}", source, offset, text, start)


class ReadShardFn(beam.DoFn):
    """Streams one shard; documents on the main output, failures on ``failed``, and the shard's record
    count on ``counts`` so the writer can check that every record came out somewhere."""

    def __init__(self, settings: ReadSettings):
        self._settings = settings
        self._read = Metrics.counter("distilbeam", "docs_read")

    def process(self, shard: Shard):
        n = 0
        for record in read_shard(shard, self._settings):
            n += 1
            if isinstance(record, Failure):
                yield beam.pvalue.TaggedOutput("failed", record)
            else:
                yield record
        self._read.inc(n)
        yield beam.pvalue.TaggedOutput("counts", (shard.uri, n))


class ReadShards(beam.PTransform):
    """Shards -> documents (main), dead-letter rows (``failed``) and per-shard counts (``counts``)."""

    def __init__(self, shards: list[Shard], settings: ReadSettings):
        super().__init__()
        self._shards = shards
        self._settings = settings

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        return (
            pbegin
            | "ListShards" >> beam.Create(self._shards)
            | "SpreadShards" >> beam.Reshuffle()
            | "ReadRecords"
            >> beam.ParDo(ReadShardFn(self._settings)).with_outputs("failed", "counts", main="docs")
        )
