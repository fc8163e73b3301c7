"""Parquet shards: each row is a document, its text from the ``input.text_field`` column (a sentence
pair's second text from the ``input.text_pair_field`` column) and its id from the ``input.id_field``
column when the file has one, its offset the row number. Strings are read as bytes
so that one row's invalid UTF-8 costs that row a warning, not the file; a compressed file
(``.parquet.gz``) is decompressed to a local temporary file first, as Parquet reads its footer first."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from distilbeam.transforms import storage
from distilbeam.transforms.read.base import Reader, unreadable
from distilbeam.transforms.read.discovery import ReadSettings, raise_if_store_failed
from distilbeam.transforms.read.documents import BadId, decode, document, record_id, short, too_long
from distilbeam.transforms.read.splits import Split
from distilbeam.transforms.schema import Document, Failure

PARQUET_BATCH_ROWS = 2048


class ParquetReader(Reader):
    """Parquet rows in, documents out."""

    def records(self, split: Split) -> Iterator[Document | Failure]:
        """The rows of the split's row groups, in order; a file that cannot be opened or read as Parquet,
        or that breaks part-way, is a dead-letter row for what is lost. A text (or pair text) column that is
        missing or not a string column makes every row a dead-letter row, each with its own id."""
        uri, settings = split.uri, self.settings
        try:
            handle = _open_parquet(uri, settings)
        except Exception as exc:
            raise_if_store_failed(exc)
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
            use_id = settings.id_field is not None and settings.id_field in names
            text_fields = [f for f in (settings.text_field, settings.text_pair_field) if f is not None]
            problem = next(filter(None, (_column_problem(schema, f) for f in text_fields)), None)
            columns = [f for f in text_fields if f in names]
            if use_id:
                columns.append(settings.id_field)
            offset = split.first_offset
            end = parquet.metadata.num_row_groups if split.end is None else split.end
            groups = list(range(split.start, end))
            batches = _batches(parquet, groups, columns, settings, use_id, problem)
            try:
                for n_rows, texts, pairs, ids in batches:
                    for i in range(n_rows):
                        text = texts[i] if texts is not None else None
                        pair = pairs[i] if pairs is not None else None
                        raw_id = ids[i] if ids is not None else None
                        try:
                            record = _record(uri, offset, text, pair, raw_id, problem, settings)
                        except Exception as exc:  # this row only, as for text and JSON lines
                            message = f"cannot read record: {type(exc).__name__}: {exc}"
                            raw = repr(text)
                            record = Failure.of("parse", exc, message, source=uri, offset=offset, raw=raw)
                        yield record
                        offset += 1
            except Exception as exc:
                raise_if_store_failed(exc)
                yield Failure.of("decode", exc, unreadable(uri, offset, exc), source=uri, offset=offset)


def _column_problem(schema: pa.Schema, field: str) -> str | None:
    """Why the file's column ``field`` cannot give texts, or None."""
    if field not in schema.names:
        return f"column {field!r} not found; the file has {', '.join(schema.names)}"
    type_ = schema.field(field).type
    return None if _is_text(type_) else f"column {field!r} is {type_}, expected a string column"


def _is_text(type_: pa.DataType) -> bool:
    """Whether the column holds strings, dictionary-encoded or not."""
    if pa.types.is_dictionary(type_):
        type_ = type_.value_type
    return pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_string_view(type_)


def _batches(
    parquet: pq.ParquetFile,
    groups: list[int],
    columns: list[str],
    settings: ReadSettings,
    use_id: bool,
    problem: str | None,
) -> Iterator[tuple[int, list[Any] | None, list[Any] | None, list[Any] | None]]:
    """(rows, texts, pair texts, ids) per batch of the given row groups; string columns come as bytes, so
    one row's invalid UTF-8 is that row's business (its bytes get replaced), not a reason to stop reading
    the file."""
    if not columns:  # nothing to read: only the row count matters
        for i in groups:
            yield parquet.metadata.row_group(i).num_rows, None, None, None
        return
    if not groups:
        return
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=groups, columns=columns):
        texts = _text_values(batch, settings.text_field, problem)
        pairs = _text_values(batch, settings.text_pair_field, problem)
        ids = None
        if use_id:
            column = batch.column(settings.id_field)
            ids = (_as_bytes(column) if _is_text(column.type) else column).to_pylist()
        yield batch.num_rows, texts, pairs, ids


def _text_values(batch: pa.RecordBatch, field: str | None, problem: str | None) -> list[Any] | None:
    """A text column's values, as bytes (as stored where a text column is unusable: the dead-letter rows
    quote them); None where there is no such column."""
    if field is None or field not in batch.schema.names:
        return None
    column = batch.column(field)
    return (_as_bytes(column) if problem is None else column).to_pylist()


def _as_bytes(column: pa.Array) -> pa.Array:
    """A string column as binary, dictionary-decoded."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return column.cast(pa.large_binary())


def _open_parquet(uri: str, settings: ReadSettings) -> IO[bytes]:
    """A seekable handle on the Parquet file. A compressed one (``.parquet.gz``) is decompressed into a
    local temporary file first, as Parquet reads its footer before its rows, never into memory."""
    if storage.strip_compression(uri) == uri:
        return settings.location(uri).open_raw()
    spool = tempfile.TemporaryFile()  # noqa: SIM115 (the caller closes it)
    try:
        with settings.location(uri).open_input() as stream:
            shutil.copyfileobj(stream, spool, 1 << 20)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool


def _record(
    uri: str, offset: int, text: Any, pair: Any, raw_id: Any, problem: str | None, settings: ReadSettings
) -> Document | Failure:
    """One row's text (and pair text) and id values as a document, or its dead-letter row."""
    if isinstance(raw_id, bytes):
        try:
            raw_id = raw_id.decode("utf-8")
        except UnicodeDecodeError:
            message = f"id {short(raw_id)} is not valid UTF-8"
            return Failure.of("parse", "BadId", message, source=uri, offset=offset)
    id_ = record_id(raw_id, uri, offset)
    if isinstance(id_, BadId):
        return Failure.of("parse", "BadId", id_.message, source=uri, offset=offset)
    if problem:
        raw = "" if text is None else repr(text)
        return Failure.of("parse", "BadColumn", problem, source=uri, offset=offset, id=id_, raw=raw)
    if text is None:
        message = f"text field {settings.text_field!r} is null"
        return Failure.of("parse", "BadRecord", message, source=uri, offset=offset, id=id_)
    decoded, warnings = decode(text)
    decoded_pair = None
    if settings.text_pair_field is not None:
        if pair is None:
            message = f"text pair field {settings.text_pair_field!r} is null, expected a string"
            return Failure.of("parse", "BadRecord", message, source=uri, offset=offset, id=id_, raw=text)
        decoded_pair, pair_warnings = decode(pair)
        warnings += pair_warnings
    return too_long(document(id_, uri, offset, decoded, warnings, decoded_pair), settings, text)
