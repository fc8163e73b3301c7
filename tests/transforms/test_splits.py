"""Large shards read in splits: splits cover a shard exactly, start on record boundaries and number their
records as the whole shard does, so reading every split gives the records of reading the shard whole; a
split crosses Beam's stage boundaries with a coder of its own."""

from __future__ import annotations

import gzip
import itertools
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distilbeam.transforms.read import ReadSettings, Shard, Split, plan_splits, read_shard, read_split

SETTINGS = ReadSettings(None, "id", "text", 1_000)


def records(items) -> list[tuple]:
    return [(r.id, r.offset, getattr(r, "text", None), getattr(r, "stage", None)) for r in items]


def read_in_splits(path, fmt, split_bytes, settings=SETTINGS) -> tuple[list[Split], list[tuple]]:
    shard = Shard(str(path), fmt)
    splits = plan_splits(shard, path.stat().st_size, split_bytes, settings)
    return splits, [r for split in splits for r in records(read_split(split, settings))]


lines = st.lists(
    st.one_of(
        st.text(alphabet="ab é\t\r", max_size=40),
        st.just(""),
        st.just("x" * 5000),  # over 4 x max_chars: dead-lettered unread
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(lines=lines, split_bytes=st.integers(1, 300), newline_at_end=st.booleans())
def test_text_splits_read_as_the_whole_shard(tmp_path_factory, lines, split_bytes, newline_at_end):
    path = tmp_path_factory.mktemp("splits") / "shard.txt"
    text = "\n".join(lines) + ("\n" if newline_at_end and lines else "")
    path.write_bytes(text.encode())
    splits, read = read_in_splits(path, "text", split_bytes)
    assert read == records(read_shard(Shard(str(path), "text"), SETTINGS))
    assert [s.index for s in splits] == list(range(len(splits))) and {s.count for s in splits} == {
        len(splits)
    }
    data = path.read_bytes()
    for split, following in itertools.pairwise(splits):
        assert split.end == following.start and data[following.start - 1 : following.start] == b"\n"
        assert following.first_offset == data[: following.start].count(b"\n")
        assert following.start >= split.start + split_bytes  # each split at least split_bytes long
    cuts = [i + 1 for i, b in enumerate(data) if b == 10 and split_bytes <= i + 1 < len(data)]
    assert (len(splits) > 1) == bool(cuts)  # split wherever a line starts past split_bytes


def test_json_lines_splits_keep_ids_offsets_and_bad_records(tmp_path):
    path = tmp_path / "shard.jsonl"
    rows = [json.dumps({"id": f"r{i}", "text": f"record number {i} " * (i % 7)}) for i in range(200)]
    rows[57] = "{not json"
    path.write_text("\n".join(rows) + "\n")
    splits, read = read_in_splits(path, "jsonl", 1000)
    assert len(splits) > 5
    assert read == records(read_shard(Shard(str(path), "jsonl"), SETTINGS))
    assert [r[1] for r in read] == list(range(200)) and read[57][3] == "parse"


def test_parquet_splits_are_row_group_ranges(tmp_path):
    path = tmp_path / "shard.parquet"
    table = pa.table({"id": [f"r{i}" for i in range(1000)], "text": [f"text {i}" for i in range(1000)]})
    pq.write_table(table, path, row_group_size=100)
    splits, read = read_in_splits(path, "parquet", 1)
    assert [(s.start, s.end, s.first_offset) for s in splits] == [
        (g, g + 1 if g < 9 else None, 100 * g) for g in range(10)
    ]
    assert read == records(read_shard(Shard(str(path), "parquet"), SETTINGS))


def test_small_compressed_and_misnamed_shards_are_read_whole(tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("one\ntwo\n")
    compressed = tmp_path / "big.txt.gz"
    compressed.write_bytes(gzip.compress(b"line\n" * 10_000))
    misnamed = tmp_path / "zipped.txt"
    misnamed.write_bytes(gzip.compress(b"line\n" * 10_000))
    for path, fmt in ((small, "text"), (compressed, "text"), (misnamed, "text")):
        (split,) = plan_splits(Shard(str(path), fmt), path.stat().st_size, 10, SETTINGS)
        assert split == Split(str(path), fmt)
    assert plan_splits(Shard(str(small), "text"), small.stat().st_size, None, SETTINGS) == [
        Split(str(small), "text")
    ]


@pytest.mark.parametrize(
    "value",
    [
        Split("gs://bucket/ß/shard.jsonl", "jsonl"),
        Split("/data/x.txt", "text", index=3, count=7, start=1 << 40, end=(1 << 40) + 9, first_offset=12),
        Split("/data/x.parquet", "parquet", index=6, count=7, start=60, end=None, first_offset=6000),
    ],
)
def test_a_split_round_trips_through_its_coder(value):
    from apache_beam.coders import registry

    coder = registry.get_coder(Split)
    assert coder.decode(coder.encode(value)) == value
    assert coder.is_deterministic()
