"""Reading text shards: globs expanded when the pipeline is built (``discovery``), large shards cut into
splits that workers read on their own (``splits``), then each split streamed record by record into
documents by the reader of its format: text lines (``text``), JSON lines (``jsonl``) or Parquet rows
(``parquet``), on what they share (``base``, ``documents``). A record that cannot become a document
becomes a dead-letter row; a shard that breaks part-way keeps what was read and dead-letters the rest."""

from __future__ import annotations

from collections.abc import Iterator

from distilbeam.transforms.read.base import Reader
from distilbeam.transforms.read.discovery import BOM, ReadSettings, Shard, find_shards, shard_format, sniff
from distilbeam.transforms.read.documents import derived_id, split_text
from distilbeam.transforms.read.jsonl import JsonlReader
from distilbeam.transforms.read.parquet import ParquetReader
from distilbeam.transforms.read.splits import ShardCoder, Split, SplitCoder, SplitShardFn, plan_splits
from distilbeam.transforms.read.text import TextReader
from distilbeam.transforms.schema import Document, Failure

READERS: dict[str, type[Reader]] = {"text": TextReader, "jsonl": JsonlReader, "parquet": ParquetReader}

__all__ = [
    "BOM",
    "READERS",
    "ReadSettings",
    "Shard",
    "ShardCoder",
    "Split",
    "SplitCoder",
    "SplitShardFn",
    "derived_id",
    "find_shards",
    "plan_splits",
    "read_shard",
    "read_split",
    "shard_format",
    "sniff",
    "split_text",
]


def read_split(split: Split, settings: ReadSettings) -> Iterator[Document | Failure]:
    """Every record of one split, in order, as a document or a failure. Never raises for bad data."""
    return READERS[split.format](settings).read(split)


def read_shard(shard: Shard, settings: ReadSettings) -> Iterator[Document | Failure]:
    """Every record of one shard, in order, as a document or a failure. Never raises for bad data."""
    return read_split(Split(shard.uri, shard.format), settings)
