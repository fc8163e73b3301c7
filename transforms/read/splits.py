"""Splitting large shards so that several workers read one: a split is the whole shard, a byte range of an
uncompressed text or JSON Lines shard cut on line boundaries, or a range of a Parquet file's row groups.
Splits and shards cross Beam's stage boundaries with coders of their own, and ``SplitShardFn`` turns each
shard into the splits it is read in."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator, Mapping
from typing import IO, Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from distilbeam.transforms import storage
from distilbeam.transforms.read.discovery import (
    BOM,
    ReadSettings,
    Shard,
    not_a_regular_file,
    raise_if_store_failed,
    sniff,
)

SCAN_BLOCK = 8 << 20  # bytes read at a time when finding a large text shard's split boundaries


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


def plan_splits(shard: Shard, size: int, split_bytes: int | None, settings: ReadSettings) -> list[Split]:
    """The splits one shard of ``size`` bytes is read in: itself whole, unless it is larger than
    ``split_bytes`` and uncompressed. A text or JSON Lines shard is cut at the first line start after
    every ``split_bytes`` bytes, which takes one pass counting its line breaks (offsets are line numbers);
    a Parquet shard is cut between row groups, from its footer. A shard that cannot be planned (unreadable,
    not what its name says) is read whole, so that reading it reports why."""
    whole = [Split(shard.uri, shard.format)]
    compressed = storage.strip_compression(shard.uri) != shard.uri
    if split_bytes is None or size <= split_bytes or compressed or not_a_regular_file(shard.uri):
        return whole
    try:
        with settings.location(shard.uri).open_raw() as stream:
            if shard.format == "parquet":
                bounds = _row_group_bounds(pq.ParquetFile(stream), split_bytes)
            elif sniff(stream.read(len(BOM) + 16)) is None:
                stream.seek(0)
                bounds = _line_bounds(stream, size, split_bytes)
            else:
                return whole
    except Exception as exc:
        raise_if_store_failed(exc)
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
            fs, path = self._settings.location(shard.uri).filesystem()
            size = storage.retrying("look up", shard.uri, lambda: fs.size(path)) or 0
        splits = plan_splits(shard, size, self._split_bytes, self._settings)
        if len(splits) > 1:
            Metrics.counter("distilbeam", "shards_split").inc()
        yield from splits
