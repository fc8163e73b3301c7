"""Reading shards: text, JSON lines and Parquet, plain or compressed, streamed record by record, each record
with its offset (line number or row index) and an id from the record or derived stably from where it is."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import random
import re
import string

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from distilbeam.transforms import SetupError, storage
from distilbeam.transforms.read import ReadSettings, Shard, derived_id, find_shards, parquet, read_shard
from distilbeam.transforms.schema import Document, Failure

SETTINGS = ReadSettings(format=None, id_field="id", text_field="text", max_chars=10_000)

COMPRESSORS = {
    "": lambda data: data,
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".zst": lambda data: zstandard.ZstdCompressor().compress(data),
    ".xz": lzma.compress,
}


def read_all(path, settings: ReadSettings = SETTINGS) -> list[Document | Failure]:
    (shard,) = find_shards((str(path),), settings)
    return list(read_shard(shard, settings))


def texts(records) -> list[str]:
    return [r.text for r in records]


# -- text ----------------------------------------------------------------------------------------------------


def test_text_lines_are_documents_with_line_numbers_and_derived_ids(tmp_path):
    path = tmp_path / "news.txt"
    path.write_bytes(b"first line\nsecond line\r\n\n   \nlast line without newline")
    records = read_all(path)
    source = str(path)
    assert [(r.offset, r.text) for r in records] == [
        (0, "first line"),
        (1, "second line"),
        (2, ""),
        (3, "   "),
        (4, "last line without newline"),
    ]
    assert all(r.source == source for r in records)
    assert [r.id for r in records] == [derived_id(source, i) for i in range(5)]


def test_derived_ids_are_stable_and_distinct(tmp_path):
    a = tmp_path / "a.txt"
    b = tmp_path / "b.txt"
    a.write_text("same\nsame\n", encoding="utf-8")
    b.write_text("same\nsame\n", encoding="utf-8")
    first, second = read_all(a), read_all(a)
    assert [r.id for r in first] == [r.id for r in second]
    ids = [r.id for r in first] + [r.id for r in read_all(b)]
    assert len(set(ids)) == 4, "the same text at another line or in another shard is another document"


def test_text_bom_is_dropped_and_bad_utf8_replaced(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfhello\ncaf\xe9\n")
    assert texts(read_all(path)) == ["hello", "caf\ufffd"]


# -- JSON lines ----------------------------------------------------------------------------------------------


def test_jsonl_ids_from_the_id_field_else_derived(tmp_path):
    path = tmp_path / "docs.jsonl"
    lines = [
        {"id": "doc-a", "text": "alpha"},
        {"text": "no id here"},
        {"id": 42, "text": "integer id"},
        {"id": None, "text": "null id"},
        {"id": "doc-e", "text": "", "extra": [1, 2]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    records = read_all(path)
    source = str(path)
    assert all(isinstance(r, Document) for r in records)
    assert [r.id for r in records] == ["doc-a", derived_id(source, 1), "42", derived_id(source, 3), "doc-e"]
    assert [r.offset for r in records] == [0, 1, 2, 3, 4]
    assert texts(records) == ["alpha", "no id here", "integer id", "null id", ""]


def test_jsonl_without_id_field_derives_every_id(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": "x", "body": "one"}\n{"id": "y", "body": "two"}\n', encoding="utf-8")
    settings = ReadSettings(None, None, "body", 10_000)
    records = read_all(path, settings)
    assert [r.id for r in records] == [derived_id(str(path), 0), derived_id(str(path), 1)]
    assert texts(records) == ["one", "two"]


def test_jsonl_bad_lines_fail_alone_and_keep_offsets(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        '{"id": "a", "text": "good"}\n'
        "{not json\n"
        '{"id": "c", "text": null}\n'
        '["a", "list"]\n'
        '{"id": "e", "text": "also good"}\n',
        encoding="utf-8",
    )
    records = read_all(path)
    assert [type(r).__name__ for r in records] == ["Document", "Failure", "Failure", "Failure", "Document"]
    assert [r.offset for r in records] == [0, 1, 2, 3, 4]
    failures = [r for r in records if isinstance(r, Failure)]
    assert {f.stage for f in failures} == {"parse"}
    assert failures[0].raw == "{not json"
    assert failures[1].id == "c"
    assert "'text' is null" in failures[1].message


# -- Parquet -------------------------------------------------------------------------------------------------


def test_parquet_rows_keep_their_row_index_across_row_groups_and_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(parquet, "PARQUET_BATCH_ROWS", 4)
    path = tmp_path / "rows.parquet"
    n = 23
    table = pa.table(
        {
            "id": [f"r{i}" if i % 5 else None for i in range(n)],
            "text": [f"row number {i}" for i in range(n)],
            "other": list(range(n)),
        }
    )
    pq.write_table(table, path, row_group_size=7)
    assert pq.ParquetFile(path).num_row_groups == 4
    records = read_all(path)
    assert [r.offset for r in records] == list(range(n))
    assert texts(records) == [f"row number {i}" for i in range(n)]
    assert [r.id for r in records] == [f"r{i}" if i % 5 else derived_id(str(path), i) for i in range(n)]


def test_parquet_integer_ids_and_missing_id_column(tmp_path):
    with_ids = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"id": pa.array([7, 8], pa.int64()), "text": ["a", "b"]}), with_ids)
    assert [r.id for r in read_all(with_ids)] == ["7", "8"]
    without = tmp_path / "noids.parquet"
    pq.write_table(pa.table({"text": ["a", "b"]}), without)
    assert [r.id for r in read_all(without)] == [derived_id(str(without), 0), derived_id(str(without), 1)]


def test_parquet_null_text_fails_alone(tmp_path):
    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"text": ["a", None, "c"]}), path)
    records = read_all(path)
    assert [type(r).__name__ for r in records] == ["Document", "Failure", "Document"]
    assert records[1].offset == 1
    assert records[1].stage == "parse"


# -- compression ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".gz", ".bz2", ".zst", ".xz"])
@pytest.mark.parametrize("kind", ["txt", "jsonl"])
def test_compressed_shards_read_like_plain_ones(tmp_path, kind, ext):
    docs = ["first", "", "unicode: Zürich 東京 👍", "last"]
    if kind == "txt":
        data = "\n".join(docs).encode()
    else:
        data = "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(docs)).encode()
    plain = tmp_path / f"plain.{kind}"
    plain.write_bytes(data)
    packed = tmp_path / f"packed.{kind}{ext}"
    packed.write_bytes(COMPRESSORS[ext](data))
    (shard,) = find_shards((str(packed),), SETTINGS)
    assert shard.format == ("text" if kind == "txt" else "jsonl")
    ours = read_all(packed)
    assert [(r.offset, r.text) for r in ours] == [(r.offset, r.text) for r in read_all(plain)]
    assert [r.offset for r in ours] == [0, 1, 2, 3]
    assert all(r.source == str(packed) for r in ours)


def test_zstd_shard_of_several_frames_is_read_to_the_end(tmp_path):
    """Parallel compressors (pzstd, zstd -T) write several frames; stopping after the first loses data."""
    compressor = zstandard.ZstdCompressor()
    path = tmp_path / "frames.jsonl.zst"
    frames = [
        compressor.compress(
            "".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(k, k + 3)).encode()
        )
        for k in (0, 3, 6)
    ]
    path.write_bytes(b"".join(frames))
    assert texts(read_all(path)) == [f"doc {i}" for i in range(9)]


@pytest.mark.parametrize("ext", [".gz", ".zst"])
def test_compressed_parquet_shard_is_read(tmp_path, ext):
    sink = io.BytesIO()
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["x", "", "z"]}), sink, row_group_size=2)
    path = tmp_path / f"rows.parquet{ext}"
    path.write_bytes(COMPRESSORS[ext](sink.getvalue()))
    (shard,) = find_shards((str(path),), SETTINGS)
    assert shard.format == "parquet"
    records = read_all(path)
    assert [(r.id, r.offset, r.text) for r in records] == [("a", 0, "x"), ("b", 1, ""), ("c", 2, "z")]


class CountingFile(io.RawIOBase):
    """A file that counts the bytes read from it."""

    def __init__(self, inner):
        self.inner = inner
        self.bytes_read = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self.inner.read(len(buffer))
        buffer[: len(data)] = data
        self.bytes_read += len(data)
        return len(data)

    def close(self):
        self.inner.close()
        super().close()


@pytest.fixture(scope="module")
def big_shard_lines() -> list[str]:
    rng = random.Random(0)
    return [
        json.dumps({"text": "".join(rng.choices(string.ascii_letters + " ", k=200))}) for _ in range(20_000)
    ]


@pytest.mark.parametrize("ext", [".gz", ".bz2", ".zst", ""])
def test_shards_are_streamed_not_read_whole(tmp_path, monkeypatch, big_shard_lines, ext):
    lines = big_shard_lines
    path = tmp_path / f"big.jsonl{ext}"
    path.write_bytes(COMPRESSORS[ext](("\n".join(lines) + "\n").encode()))
    size = path.stat().st_size
    assert size > 2_000_000

    opened = []
    real_filesystem = storage.Location.filesystem

    class CountingFS:
        def __init__(self, fs):
            self.fs = fs

        def open(self, path, mode="rb", **kwargs):
            handle = io.BufferedReader(CountingFile(self.fs.open(path, mode, **kwargs)))
            opened.append(handle.raw)
            return handle

    monkeypatch.setattr(
        storage.Location, "filesystem", lambda self: (CountingFS(real_filesystem(self)[0]), self.url)
    )
    records = read_shard(Shard(str(path), "jsonl"), SETTINGS)
    first = next(records)
    assert first.text == json.loads(lines[0])["text"]
    (handle,) = opened
    # A bzip2 block holds up to 900 kB: no reader can yield its first line before reading one whole block.
    assert handle.bytes_read < 1 << 20, f"{handle.bytes_read} of {size} bytes read for the first record"
    assert sum(1 for _ in records) == len(lines) - 1


# -- finding shards ------------------------------------------------------------------------------------------


def test_find_shards_expands_globs_infers_formats_and_dedupes(tmp_path):
    for name in ("a.jsonl", "b.jsonl.gz", "c.txt", "d.ndjson", "e.parquet", "f.txt.zst"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "dir.jsonl").mkdir()
    shards = find_shards(
        (str(tmp_path / "*.jsonl*"), str(tmp_path / "*"), str(tmp_path / "a.jsonl")), SETTINGS
    )
    formats = {s.uri.rsplit("/", 1)[-1]: s.format for s in shards}
    assert formats == {
        "a.jsonl": "jsonl",
        "b.jsonl.gz": "jsonl",
        "c.txt": "text",
        "d.ndjson": "jsonl",
        "e.parquet": "parquet",
        "f.txt.zst": "text",
    }
    assert len(shards) == len(formats)


def test_configured_format_wins_over_extension(tmp_path):
    (tmp_path / "data.log").write_text("a\nb\n", encoding="utf-8")
    settings = ReadSettings("text", None, "text", 100)
    (shard,) = find_shards((str(tmp_path / "*.log"),), settings)
    assert shard.format == "text"
    assert texts(read_shard(shard, settings)) == ["a", "b"]


def test_glob_matching_nothing_is_a_setup_error(tmp_path):
    pattern = str(tmp_path / "missing" / "*.jsonl")
    with pytest.raises(SetupError, match=f"^input.paths: no file matches {re.escape(pattern)}$"):
        find_shards((pattern,), SETTINGS)


def test_unknown_extension_is_a_setup_error(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(SetupError, match=r"cannot tell the format of .*data\.csv.*set input\.format"):
        find_shards((str(tmp_path / "data.csv"),), SETTINGS)


def test_over_long_record_fails_alone(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text("short\n" + "x" * 500 + "\nafter\n", encoding="utf-8")
    records = read_all(path, ReadSettings(None, None, "text", 100))
    assert [type(r).__name__ for r in records] == ["Document", "Failure", "Document"]
    assert [r.offset for r in records] == [0, 1, 2]
    assert records[1].stage == "read"
    assert records[2].text == "after"


# -- sentence pairs ------------------------------------------------------------------------------------------

PAIRS = ReadSettings(None, "id", "premise", 40, text_pair_field="hypothesis")


def test_jsonl_pairs_read_both_texts_and_every_bad_pair_field_is_a_dead_letter_row(tmp_path):
    path = tmp_path / "nli.jsonl"
    path.write_text(
        '{"id": "a", "premise": "A man eats.", "hypothesis": "Someone eats."}\n'
        '{"id": "b", "premise": "No pair here."}\n'
        '{"id": "c", "premise": "Null pair.", "hypothesis": null}\n'
        '{"id": "d", "premise": "Number pair.", "hypothesis": 3}\n'
        '{"id": "e", "hypothesis": "No premise."}\n'
        '{"id": "f", "premise": "Empty pair.", "hypothesis": ""}\n'
        '{"id": "g", "premise": "Bad \\ud800 half.", "hypothesis": "nul \\u0000 inside"}\n'
        '{"id": "h", "premise": "Twenty-five characters..", "hypothesis": "and twenty more chars"}\n',
        encoding="utf-8",
    )
    records = read_all(path, PAIRS)
    assert [type(r).__name__ for r in records] == ["Document"] + ["Failure"] * 4 + ["Document"] * 2 + [
        "Failure"
    ]
    assert [r.offset for r in records] == list(range(8))
    assert (records[0].text, records[0].text_pair) == ("A man eats.", "Someone eats.")
    bad = {r.id: r for r in records if isinstance(r, Failure)}
    assert {f.stage for f in bad.values()} == {"parse", "read"}
    assert "text pair field 'hypothesis' is missing, expected a string" in bad["b"].message
    assert "text pair field 'hypothesis' is null" in bad["c"].message
    assert "text pair field 'hypothesis' is a number" in bad["d"].message
    assert "text field 'premise' is missing" in bad["e"].message
    assert bad["b"].raw.startswith('{"id": "b"')
    assert (records[5].text_pair, records[5].warnings) == ("", ("empty_text",))
    assert records[6].warnings == ("lone_surrogate", "control_chars")
    assert (bad["h"].stage, bad["h"].error) == ("read", "TooLong")
    assert "sentence pair has 45 characters (24 + 21), over input.max_chars (40)" in bad["h"].message


def test_reading_one_text_leaves_the_pair_empty(tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_text('{"id": "a", "text": "one", "hypothesis": "unread"}\n', encoding="utf-8")
    (doc,) = read_all(path)
    assert doc == Document("a", str(path), 0, "one")


def test_parquet_pairs_read_both_columns_and_a_null_or_bad_pair_fails_alone(tmp_path):
    path = tmp_path / "nli.parquet"
    premises = pa.array([b"A man eats.", b"Null pair.", b"Bad \xff byte."], pa.binary()).cast(
        pa.string(), safe=False
    )
    pq.write_table(
        pa.table(
            {
                "id": ["a", "b", "c"],
                "premise": premises,
                "hypothesis": pa.array([b"Someone eats.", None, b"pair \xfe too"]).cast(
                    pa.string(), safe=False
                ),
            }
        ),
        path,
    )
    records = read_all(path, PAIRS)
    assert [type(r).__name__ for r in records] == ["Document", "Failure", "Document"]
    assert (records[0].text, records[0].text_pair) == ("A man eats.", "Someone eats.")
    assert (records[1].stage, records[1].id, records[1].offset) == ("parse", "b", 1)
    assert "text pair field 'hypothesis' is null" in records[1].message
    assert records[2].text_pair == "pair \ufffd too" and records[2].warnings == ("invalid_utf8",)


@pytest.mark.parametrize(
    ("column", "expected"),
    [(None, "column 'hypothesis' not found; the file has id, premise"), (pa.array([1, 2]), "is int64")],
)
def test_parquet_missing_or_non_string_pair_column_dead_letters_every_row(tmp_path, column, expected):
    path = tmp_path / "nli.parquet"
    columns = {"id": ["a", "b"], "premise": ["one", "two"]}
    if column is not None:
        columns["hypothesis"] = column
    pq.write_table(pa.table(columns), path)
    records = read_all(path, PAIRS)
    assert [(type(r).__name__, r.id, r.stage, r.error) for r in records] == [
        ("Failure", "a", "parse", "BadColumn"),
        ("Failure", "b", "parse", "BadColumn"),
    ]
    assert all(expected in r.message for r in records)
