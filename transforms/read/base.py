"""What every reader shares. ``Reader.read`` turns away what is not a regular file, takes each record from
its format's ``records`` hook and applies ``input.max_chars`` (see ``documents``). ``LineReader`` frames
text and JSON Lines shards into lines, never holding a line over the byte limit whole, and hands each to
its format's ``parse`` hook; a line that breaks its parser costs that line only, and a shard that breaks
part-way keeps what was read and dead-letters the rest."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from typing import IO

from distilbeam.transforms import storage
from distilbeam.transforms.read.discovery import (
    BOM,
    ReadSettings,
    not_a_regular_file,
    raise_if_store_failed,
    sniff,
)
from distilbeam.transforms.read.documents import long_line_parts, split_document
from distilbeam.transforms.read.splits import ByteRange, Split
from distilbeam.transforms.schema import RAW_LIMIT, Document, Failure

LONG_LINE_CHUNK = 256 << 10  # bytes read at a time from a text line over the byte limit, when splitting


class Reader:
    """A format's reader: ``read`` is the entry, ``records`` the hook each format implements."""

    def __init__(self, settings: ReadSettings):
        self.settings = settings

    def read(self, split: Split) -> Iterator[Document | Failure]:
        """Every record of one split, in order, as a document or a failure; with ``long_documents: split``
        a document over ``max_chars`` comes in parts. Never raises for bad data."""
        problem = not_a_regular_file(split.uri)
        if problem:
            yield Failure.of("read", "NotRegularFile", problem, source=split.uri, offset=0)
            return
        for record in self.records(split):
            yield from split_document(record, self.settings)

    def records(self, split: Split) -> Iterator[Document | Failure]:
        """Each record of the split, whole, as a document or the failure that stands for it."""
        raise NotImplementedError


class LineReader(Reader):
    """A reader of one record per line (LF or CRLF); its format implements ``parse``."""

    # With long_documents: split, the byte limit is raised to split_line_bytes when that is higher, and a
    # line over it is streamed into parts (streams_long_lines) or else dead-lettered unread.
    streams_long_lines = False
    split_line_bytes = 0
    bom_on_every_line = False  # a byte-order mark is stripped from every line, not the shard's first only

    def parse(self, raw: bytes, source: str, offset: int) -> Document | Failure:
        """One line, without its line ending, as a document or a failure."""
        raise NotImplementedError

    def records(self, split: Split) -> Iterator[Document | Failure]:
        """The split's lines, opened (the whole shard decompressed, or its byte range as stored) and checked
        for content that cannot be text, each parsed on its own; a line over 4 x ``max_chars`` bytes is
        dead-lettered unread or streamed into parts. Reading stops at the first unreadable byte."""
        settings = self.settings
        try:
            stream = _open(split, settings)
        except Exception as exc:
            raise_if_store_failed(exc)
            message = f"cannot open shard: {exc}"
            yield Failure.of("read", exc, message, source=split.uri, offset=split.first_offset)
            return
        offset = split.first_offset
        with stream:
            try:
                head = stream.peek(len(BOM) + 16) if split.start == 0 else b""
            except Exception as exc:
                raise_if_store_failed(exc)
                yield Failure.of("decode", exc, unreadable(split.uri, 0, exc), source=split.uri, offset=0)
                return
            wrong = sniff(head)
            if wrong:
                name = split.uri.rsplit("/", 1)[-1]
                message = f"the content of {name} is {wrong[0]}, not {split.format} text: {wrong[1]}"
                yield Failure.of("decode", "WrongFormat", message, source=split.uri, offset=0, raw=head[:64])
                return
            max_bytes = 4 * settings.max_chars
            if settings.split:
                max_bytes = max(max_bytes, self.split_line_bytes)
            lines = _lines(stream, max_bytes, keep_long=settings.split and self.streams_long_lines)
            while True:
                try:
                    line = next(lines)
                except StopIteration:
                    return
                except Exception as exc:
                    raise_if_store_failed(exc)
                    message = unreadable(split.uri, offset, exc)
                    yield Failure.of("decode", exc, message, source=split.uri, offset=offset)
                    return
                if isinstance(line, LongLine):
                    yield from long_line_parts(line.chunks(), split.uri, offset, settings)
                elif isinstance(line, Skipped):
                    yield _skipped(line, split.uri, offset, settings)
                else:
                    if offset == 0 or self.bom_on_every_line:
                        line = line.removeprefix(BOM)  # a byte-order mark, not text
                    yield self._guarded(line, split.uri, offset)
                offset += 1

    def _guarded(self, raw: bytes, source: str, offset: int) -> Document | Failure:
        """One line, whatever it holds: an error nobody foresaw costs this line, not the rest of the shard."""
        try:
            return self.parse(raw, source, offset)
        except Exception as exc:
            message = f"cannot read record: {type(exc).__name__}: {exc}"
            return Failure.of("parse", exc, message, source=source, offset=offset, raw=raw)


def _open(split: Split, settings: ReadSettings) -> IO[bytes]:
    """A peekable stream of the split's bytes: the whole shard decompressed, or its range as stored."""
    if split.whole:
        stream = settings.location(split.uri).open_input()
        return stream if hasattr(stream, "peek") else io.BufferedReader(stream)  # type: ignore[arg-type]
    raw = settings.location(split.uri).open_raw()  # uncompressed: a split never is
    return io.BufferedReader(ByteRange(raw, split.start, split.end), buffer_size=1 << 16)


def _skipped(line: Skipped, source: str, offset: int, settings: ReadSettings) -> Failure:
    """The dead-letter row of a line over the byte limit."""
    message = (
        f"line longer than {line.limit} bytes (4 x input.max_chars); skipped unread, raise "
        "input.max_chars to read it, or set input.long_documents: split" + cr_hint(line.head)
    )
    if settings.split:  # only a reader that does not stream long lines skips one when splitting
        message = (
            f"JSON line longer than {line.limit} bytes; a JSON line is parsed whole, so it is "
            "not split; skipped unread" + cr_hint(line.head)
        )
    return Failure.of("read", "TooLong", message, source=source, offset=offset, raw=line.head)


def cr_hint(raw: bytes) -> str:
    """A hint for a line that holds carriage returns, which do not end records; empty otherwise."""
    if b"\r" not in raw.rstrip(b"\r"):
        return ""
    return (
        "; the line holds carriage returns (CR): records end at LF or CRLF only, so a file with CR line "
        "endings reads as one line (convert it: tr '\\r' '\\n')"
    )


def unreadable(uri: str, offset: int, exc: BaseException) -> str:
    """The message for a shard that broke after ``offset`` records, with a guess at why when there is one."""
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
        """Reads past whatever of the line the taker left."""
        for _ in self.chunks():
            pass


def _lines(stream: IO[bytes], max_bytes: int, keep_long: bool) -> Iterator[bytes | Skipped | LongLine]:
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
