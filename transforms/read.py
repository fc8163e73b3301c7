"""Reading text shards: globs expanded when the pipeline is built, then each shard streamed record by record
(text lines, JSON lines or Parquet rows) into documents. A record that cannot become a document becomes a
dead-letter row; a shard that breaks part-way keeps what was read and dead-letters the rest."""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

import apache_beam as beam
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from distilbeam.transforms import SetupError, storage
from distilbeam.transforms.schema import RAW_LIMIT, SURROGATES, Document, Failure

FORMATS = {".txt": "text", ".text": "text", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
FORMATS |= {".parquet": "parquet", ".pq": "parquet"}
BOM = b"\xef\xbb\xbf"
PARQUET_BATCH_ROWS = 2048
MAX_ID_BYTES = 1024  # longer ids are refused: an id is a key, and dead-letter rows stay small
# With long_documents: split, a JSON line is still parsed whole: one longer than this is dead-lettered.
SPLIT_JSON_BYTES = 256 << 20
LONG_LINE_CHUNK = 256 << 10  # bytes read at a time from a text line over the byte limit, when splitting


@dataclasses.dataclass(frozen=True)
class ReadSettings:
    format: str | None
    id_field: str | None
    text_field: str
    max_chars: int
    storage_options: Mapping[str, Any] = dataclasses.field(repr=False)  # may hold credentials
    # dead-letter: a document over max_chars is a dead-letter row; split: it is annotated in parts.
    long_documents: str = "dead-letter"

    @property
    def split(self) -> bool:
        return self.long_documents == "split"


@dataclasses.dataclass(frozen=True)
class Shard:
    uri: str
    format: str


@dataclasses.dataclass(frozen=True)
class Split:
    """A part of a shard read on its own, by one worker: the whole shard (split 0 of 1); a byte range of an
    uncompressed text or JSON Lines shard that starts and ends on line boundaries; or a range of a Parquet
    file's row groups. ``first_offset`` is the offset (line or row number) of its first record, so records
    keep the offsets they have when the shard is read whole."""

    uri: str
    format: str
    index: int = 0
    count: int = 1
    start: int = 0  # first byte, or first row group
    end: int | None = None  # past the last byte or row group; None: to the end of the shard
    first_offset: int = 0

    @property
    def whole(self) -> bool:
        return self.count == 1


class SplitCoder(beam.coders.Coder):
    """A split's fields in Beam's own encodings: deterministic, and no pickle between stages."""

    _fields = beam.coders.TupleCoder(
        [beam.coders.StrUtf8Coder()] * 2
        + [beam.coders.VarIntCoder()] * 3
        + [beam.coders.NullableCoder(beam.coders.VarIntCoder()), beam.coders.VarIntCoder()]
    )

    def encode(self, split: Split) -> bytes:
        return self._fields.encode(dataclasses.astuple(split))

    def decode(self, encoded: bytes) -> Split:
        return Split(*self._fields.decode(encoded))

    def is_deterministic(self) -> bool:
        return True


beam.coders.registry.register_coder(Split, SplitCoder)


class ShardCoder(beam.coders.Coder):
    """A shard's URI and format, as UTF-8."""

    _fields = beam.coders.TupleCoder([beam.coders.StrUtf8Coder()] * 2)

    def encode(self, shard: Shard) -> bytes:
        return self._fields.encode((shard.uri, shard.format))

    def decode(self, encoded: bytes) -> Shard:
        return Shard(*self._fields.decode(encoded))

    def is_deterministic(self) -> bool:
        return True


beam.coders.registry.register_coder(Shard, ShardCoder)


def find_shards(patterns: tuple[str, ...], settings: ReadSettings) -> list[Shard]:
    """Expands every glob; each must match at least one file, and each file must have a known format."""
    shards: dict[str, Shard] = {}
    for pattern in patterns:
        try:
            uris = storage.expand(pattern, settings.storage_options)
        except storage.StorageError as exc:  # its message names the pattern and what the store said
            raise SetupError(f"input.paths: {exc}") from exc
        except (OSError, ValueError) as exc:
            raise SetupError(f"input.paths: cannot list {pattern}: {exc}") from exc
        if not uris:
            fs, path = storage.filesystem(pattern, settings.storage_options)
            if not fsspec.core.has_magic(path) and fs.isdir(path):
                raise SetupError(f"input.paths: {pattern} is a directory; name its files, e.g. {pattern}/*")
            raise SetupError(f"input.paths: no file matches {pattern}")
        for uri in uris:
            if SURROGATES.search(uri):
                shown = uri.encode("utf-8", "surrogateescape")
                raise SetupError(f"input.paths: the file name {shown!r} is not valid UTF-8; rename the file")
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


# -- splitting large shards ------------------------------------------------------------------------------

SCAN_BLOCK = 8 << 20  # bytes read at a time when finding a large text shard's split boundaries


def plan_splits(shard: Shard, size: int, split_bytes: int | None, settings: ReadSettings) -> list[Split]:
    """The splits one shard of ``size`` bytes is read in: itself whole, unless it is larger than
    ``split_bytes`` and uncompressed. A text or JSON Lines shard is cut at the first line start after
    every ``split_bytes`` bytes, which takes one pass counting its line breaks (offsets are line numbers);
    a Parquet shard is cut between row groups, from its footer. A shard that cannot be planned (unreadable,
    not what its name says) is read whole, so that reading it reports why."""
    whole = [Split(shard.uri, shard.format)]
    compressed = storage.strip_compression(shard.uri) != shard.uri
    if split_bytes is None or size <= split_bytes or compressed or _not_a_regular_file(shard.uri):
        return whole
    try:
        with storage.open_raw(shard.uri, settings.storage_options) as stream:
            if shard.format == "parquet":
                bounds = _row_group_bounds(pq.ParquetFile(stream), split_bytes)
            elif sniff(stream.read(len(BOM) + 16)) is None:
                stream.seek(0)
                bounds = _line_bounds(stream, size, split_bytes)
            else:
                return whole
    except Exception as exc:
        _raise_if_store_failed(exc)
        return whole
    ends = [start for start, _ in bounds[1:]] + [None]
    return [
        Split(shard.uri, shard.format, k, len(bounds), start, end, first)
        for k, ((start, first), end) in enumerate(zip(bounds, ends, strict=True))
    ]


def _line_bounds(stream: IO[bytes], size: int, split_bytes: int) -> list[tuple[int, int]]:
    """(first byte, first line number) of each split: each starts at the first line start at or after
    ``split_bytes`` bytes past the previous one."""
    bounds = [(0, 0)]
    target = split_bytes
    position = lines = 0  # where the block starts, and the line breaks before it
    while target < size:
        block = stream.read(SCAN_BLOCK)
        if not block:
            break
        counted_to = counted = 0  # line breaks in block[:counted_to]
        while True:
            found = block.find(b"\n", max(counted_to, target - 1 - position))
            if found < 0:
                break
            start = position + found + 1
            counted += block.count(b"\n", counted_to, found + 1)
            counted_to = found + 1
            if start >= size:
                return bounds
            bounds.append((start, lines + counted))
            target = start + split_bytes
        lines += block.count(b"\n")
        position += len(block)
    return bounds


def _row_group_bounds(parquet: pq.ParquetFile, split_bytes: int) -> list[tuple[int, int]]:
    """(first row group, first row number) of each split: row groups taken in order until they hold
    ``split_bytes`` compressed bytes."""
    meta = parquet.metadata
    bounds = [(0, 0)]
    rows = held = 0
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        if held >= split_bytes:
            bounds.append((i, rows))
            held = 0
        held += sum(group.column(c).total_compressed_size for c in range(group.num_columns))
        rows += group.num_rows
    return bounds


class ByteRange(io.RawIOBase):
    """The bytes [start, end) of a seekable stream, read as a stream of their own."""

    def __init__(self, raw: IO[bytes], start: int, end: int | None):
        super().__init__()
        self._raw = raw
        raw.seek(start)
        self._left = None if end is None else end - start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = len(buffer) if self._left is None else min(len(buffer), self._left)
        data = self._raw.read(want) if want else b""
        buffer[: len(data)] = data
        if self._left is not None:
            self._left -= len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._raw.close()
            finally:
                super().close()


class SplitShardFn(beam.DoFn):
    """A shard in, the splits it is read in out (see ``plan_splits``)."""

    def __init__(self, settings: ReadSettings, split_bytes: int | None, sizes: Mapping[str, int]):
        self._settings = settings
        self._split_bytes = split_bytes
        self._sizes = dict(sizes)

    def process(self, shard: Shard) -> Iterator[Split]:
        size = self._sizes.get(shard.uri)
        if size is None:
            fs, path = storage.filesystem(shard.uri, self._settings.storage_options)
            size = storage.retrying("look up", shard.uri, lambda: fs.size(path)) or 0
        splits = plan_splits(shard, size, self._split_bytes, self._settings)
        if len(splits) > 1:
            Metrics.counter("distilbeam", "shards_split").inc()
        yield from splits


def derived_id(source: str, offset: int) -> str:
    """A stable id for records without one: the same shard and offset always give the same id."""
    return hashlib.blake2b(f"{source}\0{offset}".encode(), digest_size=10).hexdigest()


def read_shard(shard: Shard, settings: ReadSettings) -> Iterator[Document | Failure]:
    """Every record of one shard, in order, as a document or a failure. Never raises for bad data."""
    return read_split(Split(shard.uri, shard.format), settings)


def read_split(split: Split, settings: ReadSettings) -> Iterator[Document | Failure]:
    """Every record of one split, in order, as a document or a failure. Never raises for bad data."""
    problem = _not_a_regular_file(split.uri)
    if problem:
        yield Failure.of("read", "NotRegularFile", problem, source=split.uri, offset=0)
        return
    if split.format == "parquet":
        yield from _read_parquet(split, settings)
        return
    try:
        if split.whole:
            stream = _peekable(storage.open_input(split.uri, settings.storage_options))
        else:  # uncompressed: the range is read as stored
            raw = storage.open_raw(split.uri, settings.storage_options)
            stream = io.BufferedReader(ByteRange(raw, split.start, split.end), buffer_size=1 << 16)
    except Exception as exc:
        _raise_if_store_failed(exc)
        message = f"cannot open shard: {exc}"
        yield Failure.of("read", exc, message, source=split.uri, offset=split.first_offset)
        return
    parse = _parse_json_line if split.format == "jsonl" else _parse_text_line
    offset = split.first_offset
    with stream:
        try:
            head = stream.peek(len(BOM) + 16) if split.start == 0 else b""
        except Exception as exc:
            _raise_if_store_failed(exc)
            yield Failure.of("decode", exc, _unreadable(split.uri, 0, exc), source=split.uri, offset=0)
            return
        wrong = sniff(head)
        if wrong:
            name = split.uri.rsplit("/", 1)[-1]
            message = f"the content of {name} is {wrong[0]}, not {split.format} text: {wrong[1]}"
            yield Failure.of("decode", "WrongFormat", message, source=split.uri, offset=0, raw=head[:64])
            return
        max_bytes = 4 * settings.max_chars
        if settings.split and split.format == "jsonl":
            max_bytes = max(max_bytes, SPLIT_JSON_BYTES)
        lines = _lines(stream, max_bytes, keep_long=settings.split and split.format == "text")
        while True:
            try:
                line = next(lines)
            except StopIteration:
                return
            except Exception as exc:
                _raise_if_store_failed(exc)
                message = _unreadable(split.uri, offset, exc)
                yield Failure.of("decode", exc, message, source=split.uri, offset=offset)
                return
            if isinstance(line, LongLine):
                yield from _long_line_parts(line, split.uri, offset, settings)
            elif isinstance(line, Skipped):
                message = (
                    f"line longer than {line.limit} bytes (4 x input.max_chars); skipped unread, raise "
                    "input.max_chars to read it, or set input.long_documents: split" + _cr_hint(line.head)
                )
                if settings.split:
                    message = (
                        f"JSON line longer than {line.limit} bytes; a JSON line is parsed whole, so it is "
                        "not split; skipped unread" + _cr_hint(line.head)
                    )
                yield Failure.of("read", "TooLong", message, source=split.uri, offset=offset, raw=line.head)
            else:
                if offset == 0 or split.format == "jsonl":
                    line = line.removeprefix(BOM)  # a byte-order mark, not text
                yield from split_document(_guarded(parse, line, split.uri, offset, settings), settings)
            offset += 1


def _raise_if_store_failed(exc: Exception) -> None:
    """A store that stayed unreachable through every retry says nothing about the shard's records: fail the
    bundle (the runner retries it, or the run ends) rather than dead-letter a readable shard."""
    if isinstance(exc, storage.StorageError) and exc.transient:
        raise exc


# Content a text or JSON Lines shard must not hold: (first bytes, what they are, what to do).
MAGIC: tuple[tuple[re.Pattern[bytes], str, str], ...] = tuple(
    (re.compile(pattern, re.DOTALL), what, todo)
    for pattern, what, todo in (
        (rb"\x1f\x8b", "gzip-compressed data", "end its name in .gz, or decompress it"),
        (rb"\x28\xb5\x2f\xfd", "zstd-compressed data", "end its name in .zst, or decompress it"),
        (rb"BZh[1-9]1AY&SY", "bzip2-compressed data", "end its name in .bz2, or decompress it"),
        (rb"\xfd7zXZ\x00", "xz-compressed data", "end its name in .xz, or decompress it"),
        (rb"PAR1\x15", "a Parquet file", "end its name in .parquet, or set input.format: parquet"),
        (rb"PK\x03\x04", "a zip archive", "unpack it; distilbeam does not read zip archives"),
        (rb"\xff\xfe\x00\x00|\x00\x00\xfe\xff", "UTF-32 text", "convert it to UTF-8 (iconv -f UTF-32)"),
        (rb"\xff\xfe|\xfe\xff", "UTF-16 text", "convert it to UTF-8 (iconv -f UTF-16 -t UTF-8)"),
    )
)


def sniff(head: bytes) -> tuple[str, str] | None:
    """What a shard's first (decompressed) bytes are when they cannot be text: (what, what to do)."""
    for pattern, what, todo in MAGIC:
        if pattern.match(head):
            return what, todo
    return None


def _not_a_regular_file(uri: str) -> str | None:
    """Why a local path cannot be read as a shard (a named pipe would block forever, a device may never
    end); None for regular files and for paths that do not exist (opening them says why)."""
    if not storage.is_local(uri):
        return None
    try:
        mode = os.stat(uri.removeprefix("file://")).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"{uri} is {kind}, not a regular file; it is not read"


def _peekable(stream: IO[bytes]) -> IO[bytes]:
    return stream if hasattr(stream, "peek") else io.BufferedReader(stream)  # type: ignore[arg-type]


def _unreadable(uri: str, offset: int, exc: BaseException) -> str:
    message = f"shard unreadable after {offset} records ({type(exc).__name__}: {exc}); the rest of it is lost"
    name = uri.rsplit("/", 1)[-1]
    if offset == 0 and storage.strip_compression(name) != name and not isinstance(exc, EOFError):
        message += f"; is it compressed as its name {name} says?"
    elif "crc" in str(exc).lower() or "checksum" in str(exc).lower():
        # gzip and xz check the data at the end of a stream: damage before that reads as records first
        message += "; the stream failed its checksum, so records read before this point may be damaged too"
    return message


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A line over the byte limit: its first bytes, for the dead letter."""

    head: bytes
    limit: int


class LongLine:
    """A text line over the byte limit, read on in chunks (never whole) by the one who takes it."""

    def __init__(self, head: bytes, stream: IO[bytes]):
        self._head: bytes | None = head
        self._stream: IO[bytes] | None = stream

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


def _lines(
    stream: IO[bytes], max_bytes: int, keep_long: bool = False
) -> Iterator[bytes | Skipped | LongLine]:
    """Lines without their line ending (LF or CRLF; a lone CR is not a line break); a line over
    ``max_bytes`` is skipped unread, never held in memory whole, or with ``keep_long`` handed over as a
    LongLine to be read on in chunks."""
    while True:
        line = stream.readline(max_bytes + 1)
        if not line:
            return
        if len(line) > max_bytes and not line.endswith(b"\n") and keep_long:
            long_line = LongLine(line, stream)
            yield long_line
            long_line.skip()  # whatever the taker left of it
            continue
        if len(line) > max_bytes and not line.endswith(b"\n"):
            head = line[: RAW_LIMIT + 2]
            length = len(line)
            while line and not line.endswith(b"\n"):
                line = stream.readline(1 << 20)
                head += line[: RAW_LIMIT + 2 - len(head)]
                length += len(line)
            if b"\n" in head:
                head = head[: head.index(b"\n")].removesuffix(b"\r")
            elif length == len(head):  # the file's last line, whole in head: end it as other lines end
                head = head.removesuffix(b"\r")
            yield Skipped(head[:RAW_LIMIT], max_bytes)
            continue
        yield line.removesuffix(b"\n").removesuffix(b"\r")


def _guarded(parse: Any, raw: bytes, source: str, offset: int, settings: ReadSettings) -> Document | Failure:
    """One record, whatever it holds: an error nobody foresaw costs this record, not the rest of the shard."""
    try:
        return parse(raw, source, offset, settings)
    except Exception as exc:
        message = f"cannot read record: {type(exc).__name__}: {exc}"
        return Failure.of("parse", exc, message, source=source, offset=offset, raw=raw)


def _decode(raw: bytes) -> tuple[str, tuple[str, ...]]:
    """UTF-8 text, with each invalid byte sequence replaced by U+FFFD and the ``invalid_utf8`` warning."""
    try:
        return raw.decode("utf-8"), ()
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), ("invalid_utf8",)


# C0 and C1 control characters other than tab, line feed and carriage return.
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _document(id_: str, source: str, offset: int, text: str, warnings: tuple[str, ...]) -> Document:
    found = list(warnings)
    if CONTROL.search(text):
        found.append("control_chars")
    if not text.strip():
        found.append("empty_text")
    document = Document(id_, source, offset, text)
    return document.with_warnings(*found) if found else document


def _too_long(doc: Document, settings: ReadSettings, raw: bytes) -> Document | Failure:
    if len(doc.text) <= settings.max_chars or settings.split:
        return doc
    message = f"document has {len(doc.text)} characters, over input.max_chars ({settings.max_chars})"
    return Failure.of("read", "TooLong", message, source=doc.source, offset=doc.offset, id=doc.id, raw=raw)


def _parse_text_line(raw: bytes, source: str, offset: int, settings: ReadSettings) -> Document | Failure:
    text, warnings = _decode(raw)
    return _too_long(_document(derived_id(source, offset), source, offset, text, warnings), settings, raw)


def _parse_json_line(raw: bytes, source: str, offset: int, settings: ReadSettings) -> Document | Failure:
    def fail(message: str, error: str | BaseException = "BadRecord", id: str | None = None) -> Failure:
        return Failure.of("parse", error, message, source=source, offset=offset, id=id, raw=raw)

    line, warnings = _decode(raw)
    if not line.strip():
        return fail("blank line where a JSON object was expected")
    try:
        # strict=False: raw control characters inside strings (tabs, NULs) are taken as they are.
        record = json.loads(line, strict=False)
    except RecursionError as exc:
        return fail("not valid JSON: nested too deeply to parse", exc)
    except ValueError as exc:
        return fail(f"not valid JSON: {exc}{_cr_hint(raw)}", exc)
    if not isinstance(record, dict):
        return fail(f"JSON line is {_json_kind(record)}, expected an object")
    id_ = _record_id(record.get(settings.id_field) if settings.id_field else None, source, offset)
    if not isinstance(id_, str):
        return fail(id_.message, "BadId")
    text = record.get(settings.text_field)
    if not isinstance(text, str):
        what = _json_kind(text) if settings.text_field in record else "missing"
        return fail(f"text field {settings.text_field!r} is {what}, expected a string", id=id_)
    if SURROGATES.search(text):
        text = SURROGATES.sub("\ufffd", text)
        warnings += ("lone_surrogate",)
    return _too_long(_document(id_, source, offset, text, warnings), settings, raw)


def _cr_hint(raw: bytes) -> str:
    if b"\r" not in raw.rstrip(b"\r"):
        return ""
    return (
        "; the line holds carriage returns (CR): records end at LF or CRLF only, so a file with CR line "
        "endings reads as one line (convert it: tr '\\r' '\\n')"
    )


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


@dataclasses.dataclass(frozen=True)
class BadId:
    message: str


def _record_id(value: Any, source: str, offset: int) -> str | BadId:
    if value is None:
        return derived_id(source, offset)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        kind = _json_kind(value)
        return BadId(f"id is {_short(value)} ({kind}); expected a non-empty string or an integer")
    if SURROGATES.search(value):
        return BadId(f"id {_short(value)} holds an unpaired UTF-16 surrogate escape; it cannot be stored")
    if len(value.encode("utf-8")) > MAX_ID_BYTES:
        return BadId(
            f"id is {len(value.encode('utf-8'))} bytes long, over the {MAX_ID_BYTES} bytes ids may take: "
            f"shorten it, or set input.id_field: null to derive ids ({_short(value)})"
        )
    return value


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _read_parquet(split: Split, settings: ReadSettings) -> Iterator[Document | Failure]:
    uri = split.uri
    try:
        handle = _open_parquet(uri, settings)
    except Exception as exc:
        _raise_if_store_failed(exc)
        yield Failure.of("read", exc, f"cannot open Parquet shard: {exc}", source=uri, offset=0)
        return
    with handle:
        if storage.size_of(handle) == 0:
            return  # an empty file holds no records, whatever its name says
        try:
            parquet = pq.ParquetFile(handle)
            schema = parquet.schema_arrow
        except Exception as exc:
            message = f"not a readable Parquet file: {exc}"
            yield Failure.of("decode", exc, message, source=uri, offset=0)
            return
        names = schema.names
        text_type = schema.field(settings.text_field).type if settings.text_field in names else None
        use_id = settings.id_field is not None and settings.id_field in names
        problem = None
        if text_type is None:
            problem = f"column {settings.text_field!r} not found; the file has {', '.join(names)}"
        elif not _is_text(text_type):
            problem = f"column {settings.text_field!r} is {text_type}, expected a string column"
        columns = [settings.text_field] if text_type else []
        if use_id:
            columns.append(settings.id_field)
        offset = split.first_offset
        end = parquet.metadata.num_row_groups if split.end is None else split.end
        groups = list(range(split.start, end))
        try:
            for n_rows, texts, ids in _parquet_batches(parquet, groups, columns, settings, use_id, problem):
                for i in range(n_rows):
                    text = texts[i] if texts is not None else None
                    raw_id = ids[i] if ids is not None else None
                    try:
                        record = _parquet_record(uri, offset, text, raw_id, problem, settings)
                    except Exception as exc:  # this row only, as for text and JSON lines
                        message = f"cannot read record: {type(exc).__name__}: {exc}"
                        record = Failure.of("parse", exc, message, source=uri, offset=offset, raw=repr(text))
                    yield from split_document(record, settings)
                    offset += 1
        except Exception as exc:
            _raise_if_store_failed(exc)
            yield Failure.of("decode", exc, _unreadable(uri, offset, exc), source=uri, offset=offset)


def _is_text(type_: pa.DataType) -> bool:
    if pa.types.is_dictionary(type_):
        type_ = type_.value_type
    return pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_string_view(type_)


def _parquet_batches(
    parquet: pq.ParquetFile,
    groups: list[int],
    columns: list[str],
    settings: ReadSettings,
    use_id: bool,
    problem: str | None,
) -> Iterator[tuple[int, list[Any] | None, list[Any] | None]]:
    """(rows, texts, ids) per batch of the given row groups; string columns come as bytes, so one row's
    invalid UTF-8 is that row's business (its bytes get replaced), not a reason to stop reading the file."""
    if not columns:  # nothing to read: only the row count matters
        for i in groups:
            yield parquet.metadata.row_group(i).num_rows, None, None
        return
    if not groups:
        return
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=groups, columns=columns):
        texts = ids = None
        if settings.text_field in batch.schema.names:
            column = batch.column(settings.text_field)
            texts = (_as_bytes(column) if problem is None else column).to_pylist()
        if use_id:
            column = batch.column(settings.id_field)
            ids = (_as_bytes(column) if _is_text(column.type) else column).to_pylist()
        yield batch.num_rows, texts, ids


def _as_bytes(column: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return column.cast(pa.large_binary())


def _open_parquet(uri: str, settings: ReadSettings) -> IO[bytes]:
    """A seekable handle on the Parquet file. A compressed one (``.parquet.gz``) is decompressed into a
    local temporary file first, as Parquet reads its footer before its rows, never into memory."""
    if storage.strip_compression(uri) == uri:
        return storage.open_raw(uri, settings.storage_options)
    spool = tempfile.TemporaryFile()  # noqa: SIM115 (the caller closes it)
    try:
        with storage.open_input(uri, settings.storage_options) as stream:
            shutil.copyfileobj(stream, spool, 1 << 20)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


def _parquet_record(
    uri: str, offset: int, text: Any, raw_id: Any, problem: str | None, settings: ReadSettings
) -> Document | Failure:
    if isinstance(raw_id, bytes):
        try:
            raw_id = raw_id.decode("utf-8")
        except UnicodeDecodeError:
            message = f"id {_short(raw_id)} is not valid UTF-8"
            return Failure.of("parse", "BadId", message, source=uri, offset=offset)
    id_ = _record_id(raw_id, uri, offset)
    if isinstance(id_, BadId):
        return Failure.of("parse", "BadId", id_.message, source=uri, offset=offset)
    if problem:
        raw = "" if text is None else repr(text)
        return Failure.of("parse", "BadColumn", problem, source=uri, offset=offset, id=id_, raw=raw)
    if text is None:
        message = f"text field {settings.text_field!r} is null"
        return Failure.of("parse", "BadRecord", message, source=uri, offset=offset, id=id_)
    decoded, warnings = _decode(text)
    return _too_long(_document(id_, uri, offset, decoded, warnings), settings, text)


def split_document(record: Document | Failure, settings: ReadSettings) -> Iterator[Document | Failure]:
    """The record, or with ``long_documents: split`` a document over ``max_chars`` in its parts."""
    if isinstance(record, Failure) or len(record.text) <= settings.max_chars or not settings.split:
        yield record
        return
    replaced = [w for w in record.warnings if w in ("invalid_utf8", "lone_surrogate")]
    for k, (start, text) in enumerate(split_text([record.text], settings.max_chars)):
        warnings = tuple(replaced) if "\ufffd" in text else ()
        yield _part(record.id, k, record.source, record.offset, start, text, warnings)


def _long_line_parts(line: LongLine, source: str, offset: int, settings: ReadSettings) -> Iterator[Document]:
    """The parts of a text line too long to hold, cut as it streams in."""
    decoded = _decoded(line.chunks(), strip_bom=offset == 0)
    for k, (start, text) in enumerate(split_text(decoded, settings.max_chars)):
        warnings = ("invalid_utf8",) if "\ufffd" in text and _replacements.count else ()
        yield _part(derived_id(source, offset), k, source, offset, start, text, warnings)


def _part(
    id_: str, k: int, source: str, offset: int, start: int, text: str, warnings: tuple[str, ...]
) -> Document:
    """Part k of record ``id_`` is document ``<id_>#k``; ``char_offset`` places it in the record's text."""
    return dataclasses.replace(_document(f"{id_}#{k}", source, offset, text, warnings), char_offset=start)


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


_replacements = threading.local()  # invalid byte sequences the streaming decoder replaced, per thread


def _replace_and_count(error: UnicodeDecodeError) -> tuple[str, int]:
    _replacements.count = getattr(_replacements, "count", 0) + 1
    return "\ufffd", error.end


codecs.register_error("distilbeam.replace", _replace_and_count)


def _decoded(chunks: Iterable[bytes], strip_bom: bool) -> Iterator[str]:
    """UTF-8 text of a stream of chunks, invalid byte sequences replaced as ``_decode`` replaces them."""
    _replacements.count = 0
    decoder = codecs.getincrementaldecoder("utf-8")("distilbeam.replace")
    for i, chunk in enumerate(chunks):
        yield decoder.decode(chunk.removeprefix(BOM) if i == 0 and strip_bom else chunk)
    yield decoder.decode(b"", final=True)
