"""Records of any length: over ``input.max_chars`` they go to the dead letter, or with
``long_documents: split`` they are annotated in parts. A 10 MB single line is read in bounded memory
either way."""

from __future__ import annotations

import json
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distilbeam.transforms.read import ReadSettings, Shard, derived_id, read_shard, split_text
from distilbeam.transforms.read.jsonl import JsonlReader
from distilbeam.transforms.schema import Document, Failure

TEN_MB = 10 * 1024 * 1024


def read_each(path, fmt, max_chars, long_documents="dead-letter"):
    settings = ReadSettings(fmt, "id", "text", max_chars, long_documents=long_documents)
    return read_shard(Shard(str(path), fmt), settings)


def read_all(path, fmt, max_chars, long_documents="dead-letter"):
    return list(read_each(path, fmt, max_chars, long_documents))


@given(st.text(alphabet=st.sampled_from("ab c\t\n\u3000é👍"), max_size=400), st.integers(1, 60))
@settings(max_examples=300, deadline=None)
def test_split_text_parts_are_bounded_and_add_up(text, max_chars):
    chunks = [text[i : i + 7] for i in range(0, len(text), 7)] or [""]
    parts = list(split_text(chunks, max_chars))
    assert "".join(p for _, p in parts) == text
    assert all(len(p) <= max_chars for _, p in parts)
    assert all(p for _, p in parts) or parts == [(0, "")]
    position = 0
    for start, part in parts:
        assert start == position
        position += len(part)
    for _, part in parts[:-1]:  # a part ends after whitespace when its second half has some
        half = part[max_chars // 2 :] if len(part) == max_chars else part
        if any(c in " \t\n\r\u3000" for c in half) and len(part) == max_chars:
            assert part[-1] in " \t\n\r\u3000"


def test_split_text_keeps_words_whole():
    text = "alpha beta gamma delta epsilon " * 10
    parts = [p for _, p in split_text([text], 32)]
    assert all(p.endswith(" ") for p in parts[:-1])
    assert "".join(parts) == text


def write_text_shard(path, long_line: bytes, crlf: bool = False) -> list[bytes]:
    end = b"\r\n" if crlf else b"\n"
    lines = [b"first line", long_line, b"last line"]
    with open(path, "wb") as f:
        f.write(b"\xef\xbb\xbf" + end.join(lines) + end)
    return lines


def long_text(n_bytes: int) -> bytes:
    words = b"paris london berlin the museum opened in march and the hotel closed caf\xc3\xa9 "
    return (words * (n_bytes // len(words) + 1))[:n_bytes].rstrip(b" \xc3")


def peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_ten_megabyte_line_is_dead_lettered_without_being_held(tmp_path):
    path = tmp_path / "shard.txt"
    lines = write_text_shard(path, long_text(TEN_MB))
    records = []
    peak = peak_bytes(lambda: records.extend(read_all(path, "text", 100_000)))
    assert peak < TEN_MB // 2  # the line alone would take 10 MB, and as much again decoded
    assert [type(r) for r in records] == [Document, Failure, Document]
    assert records[1].stage == "read" and records[1].error == "TooLong" and records[1].offset == 1
    assert "longer than 400000 bytes (4 x input.max_chars)" in records[1].message
    assert [records[0].text, records[2].text] == [lines[0].decode(), lines[2].decode()]


@pytest.mark.parametrize("crlf", [False, True])
def test_ten_megabyte_line_is_split_in_bounded_memory(tmp_path, crlf):
    path = tmp_path / "shard.txt"
    lines = write_text_shard(path, long_text(TEN_MB) + b"\xff tail", crlf=crlf)
    line = lines[1].decode("utf-8", "replace")
    count = 0
    parts: list[tuple[str, int, int, str, tuple]] = []  # id, char_offset, length, last characters, warnings

    def consume():
        nonlocal count
        for record in read_each(path, "text", 100_000, "split"):
            count += 1
            if record.offset == 1:
                assert len(record.text) <= 100_000
                assert line[record.char_offset : record.char_offset + len(record.text)] == record.text
                parts.append(
                    (record.id, record.char_offset, len(record.text), record.text[-5:], record.warnings)
                )

    assert peak_bytes(consume) < TEN_MB // 4
    base = derived_id(str(path), 1)
    assert [p[0] for p in parts] == [f"{base}#{k}" for k in range(len(parts))]
    assert len(parts) > 100 and count == len(parts) + 2
    assert [p[1] for p in parts] == [sum(q[2] for q in parts[:k]) for k in range(len(parts))]
    assert sum(p[2] for p in parts) == len(line)
    assert parts[-1][3] == " tail" and "\ufffd" in line[parts[-1][1] :]  # the invalid byte, replaced
    assert [p[4] for p in parts] == [()] * (len(parts) - 1) + [("invalid_utf8",)]
    assert all(p[3].endswith(" ") for p in parts[:-1])


def test_split_line_memory_does_not_grow_with_the_line(tmp_path):
    """Reading a split 10 MB line takes no more memory than reading a split 2.5 MB one."""
    peaks = []
    for size in (TEN_MB // 4, TEN_MB):
        path = tmp_path / f"{size}.txt"
        write_text_shard(path, long_text(size))
        peaks.append(peak_bytes(lambda p=path: sum(1 for _ in read_each(p, "text", 100_000, "split"))))
    assert peaks[1] < 1.5 * peaks[0] + 256 * 1024
    assert peaks[1] < TEN_MB // 4


def test_jsonl_and_parquet_records_are_split_with_their_ids(tmp_path):
    text = "word " * 30  # over max_chars (60), under the JSON line cap (4 x 60 bytes)
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(
        json.dumps({"id": "short", "text": "tiny"}) + "\n" + json.dumps({"id": 7, "text": text}) + "\n"
    )
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": ["short", "7"], "text": ["tiny", text]}), parquet)
    for path, fmt in ((jsonl, "jsonl"), (parquet, "parquet")):
        records = read_all(path, fmt, 60, "split")
        assert records[0] == Document("short", str(path), 0, "tiny")
        parts = records[1:]
        assert [p.id for p in parts] == [f"7#{k}" for k in range(len(parts))]
        assert all(p.offset == 1 and len(p.text) <= 60 for p in parts)
        assert "".join(p.text for p in parts) == text
        assert [p.char_offset for p in parts] == [
            sum(len(q.text) for q in parts[:k]) for k in range(len(parts))
        ]
        dead = read_all(path, fmt, 60)
        assert isinstance(dead[1], Failure) and dead[1].error == "TooLong" and dead[1].offset == 1


def test_a_json_line_too_long_to_parse_is_dead_lettered_when_splitting(tmp_path, monkeypatch):
    monkeypatch.setattr(JsonlReader, "split_line_bytes", 1000)
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"id": "big", "text": "x " * 5000}) + "\n" + json.dumps({"text": "ok"}) + "\n")
    first, second = read_all(path, "jsonl", 100, "split")
    assert isinstance(first, Failure) and first.error == "TooLong" and "parsed whole" in first.message
    assert second.text == "ok"
