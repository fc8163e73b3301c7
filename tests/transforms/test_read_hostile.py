"""Hostile input at the reader: every file and record of the catalogue comes out as exactly the documents
(with their warnings) and dead-letter rows (with stage, error and message) it should, and never raises."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from distilbeam.transforms import SetupError
from distilbeam.transforms.read import ReadSettings, Shard, derived_id, find_shards, read_shard, shard_format
from distilbeam.transforms.schema import RAW_LIMIT, Document, Failure
from tests.conftest import REPO

_WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
_RNG = random.Random(0)
RECORDS = [
    {"id": f"r{i}", "text": " ".join(_RNG.choice(_WORDS) for _ in range(12)) + f" {_RNG.random()}"}
    for i in range(4000)
]
JSONL = "".join(json.dumps(r) + "\n" for r in RECORDS).encode()
COMPRESS = {
    ".gz": gzip.compress,
    ".zst": lambda data: zstandard.ZstdCompressor().compress(data),
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
}


def settings(**overrides) -> ReadSettings:
    values = {
        "format": None,
        "id_field": "id",
        "text_field": "text",
        "max_chars": 1000,
    }
    return ReadSettings(**{**values, **overrides})


def read(path: Path, fmt: str | None = None, **overrides) -> list[Document | Failure]:
    s = settings(**overrides)
    records = list(read_shard(Shard(str(path), fmt or shard_format(str(path), s.format)), s))
    assert [r.offset for r in records] == list(range(len(records))), "offsets run 0, 1, 2... once each"
    return records


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def only_failure(records: list) -> Failure:
    assert len(records) == 1 and isinstance(records[0], Failure), records
    return records[0]


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


# -- files -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["empty.txt", "empty.jsonl", "empty.parquet", "e.jsonl.gz", "e.txt.zst", "e.jsonl.bz2", "e.txt.xz"],
)
def test_a_zero_byte_shard_holds_no_records(tmp_path, name):
    assert read(write(tmp_path / name, b"")) == []


def test_a_shard_that_is_a_directory_is_a_read_failure(tmp_path):
    (tmp_path / "d.jsonl").mkdir()
    failure = only_failure(read(tmp_path / "d.jsonl"))
    assert (failure.stage, failure.error) == ("read", "IsADirectoryError")
    assert "cannot open shard" in failure.message


def test_globs_skip_directories_and_must_match_a_file(tmp_path):
    (tmp_path / "dir.jsonl").mkdir()
    write(tmp_path / "a.jsonl", b'{"text": "x"}\n')
    shards = find_shards((str(tmp_path / "*.jsonl"),), settings())
    assert [s.uri for s in shards] == [str(tmp_path / "a.jsonl")]
    with pytest.raises(SetupError, match=r"input.paths: no file matches .*nothing-\*.jsonl"):
        find_shards((str(tmp_path / "nothing-*.jsonl"),), settings())
    with pytest.raises(SetupError, match=r"no file matches .*dir\*"):
        find_shards((str(tmp_path / "dir*"),), settings())
    with pytest.raises(SetupError, match=r"dir.jsonl is a directory; name its files, e.g. .*dir.jsonl/\*"):
        find_shards((str(tmp_path / "dir.jsonl"),), settings())


def test_a_file_name_that_is_not_utf8_is_refused_before_the_run(tmp_path):
    write(Path(os.fsdecode(bytes(tmp_path) + b"/bad\xff.txt")), b"hello\n")
    with pytest.raises(SetupError, match=r"file name b'.*bad\\xff.txt' is not valid UTF-8; rename the file"):
        find_shards((str(tmp_path / "*.txt"),), settings())


@pytest.mark.timeout(30)
def test_a_named_pipe_is_refused_not_read(tmp_path):
    os.mkfifo(tmp_path / "pipe.jsonl")  # opening it for reading would wait for a writer forever
    assert [s.uri for s in find_shards((str(tmp_path / "*.jsonl"),), settings())] == [
        str(tmp_path / "pipe.jsonl")
    ]
    for fmt in ("jsonl", "parquet"):
        failure = only_failure(read(tmp_path / "pipe.jsonl", fmt))
        assert (failure.stage, failure.error) == ("read", "NotRegularFile")
        assert (
            failure.message
            == f"{tmp_path / 'pipe.jsonl'} is a named pipe, not a regular file; it is not read"
        )


def test_a_broken_symlink_is_a_read_failure(tmp_path):
    (tmp_path / "gone.jsonl").symlink_to(tmp_path / "deleted.jsonl")
    assert [s.uri for s in find_shards((str(tmp_path / "*.jsonl"),), settings())] == [
        str(tmp_path / "gone.jsonl")
    ]
    for fmt in ("jsonl", "parquet"):
        failure = only_failure(read(tmp_path / "gone.jsonl", fmt))
        assert (failure.stage, failure.error) == ("read", "FileNotFoundError")
        assert "No such file or directory" in failure.message


UNPRIVILEGED_READ = """
import json, os, sys
from distilbeam.transforms.read import ReadSettings, Shard, read_shard
s = ReadSettings(None, "id", "text", 1000)
if os.geteuid() == 0:  # root reads any file: drop to nobody, after the imports
    # A read as root first imports what reading imports lazily: nobody may not reach the code's folder.
    for path in sys.argv[1:]:
        list(read_shard(Shard(path, "jsonl"), s))
    os.setgid(65534)
    os.setuid(65534)
out = {}
for path in sys.argv[1:]:
    out[path] = [(type(r).__name__, getattr(r, "stage", None), getattr(r, "error", None)) for r in
                 read_shard(Shard(path, "jsonl"), s)]
print(json.dumps(out))
"""


def test_an_unreadable_file_is_a_read_failure(tmp_path):
    # Tests may run as root, which reads any file whatever its mode: the read then runs in a child process
    # that gives up root first. Pytest's temporary directories are 0700: let others pass through them, so
    # that it is the file's own mode that refuses the read.
    locked = write(tmp_path / "locked.jsonl", b'{"text": "secret"}\n')
    readable = write(tmp_path / "readable.jsonl", b'{"text": "open"}\n')
    locked.chmod(0)
    for directory in [tmp_path, *tmp_path.parents]:
        if directory.stat().st_mode & 0o001:
            break  # from here up, others may pass already
        directory.chmod(directory.stat().st_mode | 0o001)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", UNPRIVILEGED_READ, str(locked), str(readable)],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    assert results[str(readable)] == [["Document", None, None]]
    assert results[str(locked)] == [["Failure", "read", "PermissionError"]]


@pytest.mark.parametrize("ext", list(COMPRESS))
def test_a_truncated_compressed_shard_keeps_what_was_read_and_dead_letters_the_rest(tmp_path, ext):
    blob = COMPRESS[ext](JSONL)
    records = read(write(tmp_path / f"t.jsonl{ext}", blob[: len(blob) * 3 // 4]))
    *docs, failure = records
    assert docs or ext == ".bz2"  # bzip2 works in 900 kB blocks: nothing of a cut first block can be read
    assert [d.id for d in docs] == [r["id"] for r in RECORDS[: len(docs)]]
    assert all(isinstance(d, Document) and d.text == RECORDS[i]["text"] for i, d in enumerate(docs))
    assert (failure.stage, failure.error) == ("decode", "EOFError")
    assert failure.message.startswith(f"shard unreadable after {len(docs)} records")
    assert failure.message.endswith("the rest of it is lost")


def test_a_corrupt_gzip_shard_keeps_what_was_read_and_dead_letters_the_rest(tmp_path):
    blob = bytearray(gzip.compress(JSONL))
    blob[len(blob) * 3 // 4 : len(blob) * 3 // 4 + 64] = b"\x00" * 64
    records = read(write(tmp_path / "c.jsonl.gz", bytes(blob)))
    *before, failure = records
    # Records before the damage are intact; gzip may hand out damaged ones before its checksum fails.
    assert [d.text for d in before[:2000]] == [r["text"] for r in RECORDS[:2000]]
    assert all(isinstance(r, Document) or r.stage == "parse" for r in before)
    assert (failure.stage, failure.error) == ("decode", "BadGzipFile")
    assert failure.message.startswith(f"shard unreadable after {len(before)} records (BadGzipFile: CRC check")
    assert failure.message.endswith(
        "the stream failed its checksum, so records read before this point may be damaged too"
    )


def _zip(data: bytes) -> bytes:
    sink = io.BytesIO()
    with zipfile.ZipFile(sink, "w") as z:
        z.writestr("a.jsonl", data)
    return sink.getvalue()


LIES = {
    "gzip.jsonl": (gzip.compress(JSONL), "gzip-compressed data", "end its name in .gz"),
    "zstd.txt": (COMPRESS[".zst"](JSONL), "zstd-compressed data", "end its name in .zst"),
    "bzip2.jsonl": (bz2.compress(JSONL), "bzip2-compressed data", "end its name in .bz2"),
    "xz.txt": (lzma.compress(JSONL), "xz-compressed data", "end its name in .xz"),
    "twice.jsonl.gz": (gzip.compress(gzip.compress(JSONL)), "gzip-compressed data", "end its name in .gz"),
    "parquet.txt": (
        parquet_bytes(pa.table({"text": ["a", "b"]})),
        "a Parquet file",
        "set input.format: parquet",
    ),
    "zip.jsonl": (_zip(JSONL), "a zip archive", "distilbeam does not read zip archives"),
    "utf16.txt": ("hello\nworld\n".encode("utf-16"), "UTF-16 text", "iconv -f UTF-16 -t UTF-8"),
    "utf32.jsonl": ('{"text": "x"}\n'.encode("utf-32"), "UTF-32 text", "convert it to UTF-8"),
}


@pytest.mark.parametrize("name", list(LIES))
def test_a_file_whose_name_lies_about_its_content_is_one_decode_failure(tmp_path, name):
    data, what, todo = LIES[name]
    failure = only_failure(read(write(tmp_path / name, data)))
    assert (failure.stage, failure.error, failure.id) == ("decode", "WrongFormat", None)
    fmt = shard_format(name, None)
    assert failure.message.startswith(f"the content of {name} is {what}, not {fmt} text: ")
    assert todo in failure.message


def test_plain_text_named_as_compressed_is_a_decode_failure(tmp_path):
    failure = only_failure(read(write(tmp_path / "plain.jsonl.gz", JSONL)))
    assert (failure.stage, failure.error) == ("decode", "BadGzipFile")
    assert failure.message.endswith("is it compressed as its name plain.jsonl.gz says?")


@pytest.mark.parametrize(
    ("name", "data", "fragment"),
    [
        ("json.parquet", JSONL, "not a readable Parquet file: "),
        ("half.parquet", parquet_bytes(pa.table({"text": ["a"] * 100}))[:300], "not a readable Parquet file"),
        ("p.parquet.gz", gzip.compress(JSONL), "not a readable Parquet file"),
    ],
)
def test_a_file_that_is_not_parquet_is_a_decode_failure(tmp_path, name, data, fragment):
    failure = only_failure(read(write(tmp_path / name, data)))
    assert failure.stage == "decode" and fragment in failure.message


def test_parquet_without_the_text_column_dead_letters_every_row(tmp_path):
    path = write(tmp_path / "p.parquet", parquet_bytes(pa.table({"id": ["a", "b", "c"], "body": ["x"] * 3})))
    records = read(path)
    assert [(r.id, r.stage, r.error) for r in records] == [(i, "parse", "BadColumn") for i in "abc"]
    assert {r.message for r in records} == {"column 'text' not found; the file has id, body"}


def test_parquet_with_integer_text_dead_letters_every_row(tmp_path):
    path = write(tmp_path / "p.parquet", parquet_bytes(pa.table({"text": [1, 2]})))
    records = read(path)
    assert [(r.stage, r.error, r.raw) for r in records] == [
        ("parse", "BadColumn", "1"),
        ("parse", "BadColumn", "2"),
    ]
    assert {r.message for r in records} == {"column 'text' is int64, expected a string column"}
    assert [r.id for r in records] == [derived_id(str(path), 0), derived_id(str(path), 1)]


def test_parquet_null_texts_are_dead_lettered_and_the_others_read(tmp_path):
    path = write(tmp_path / "p.parquet", parquet_bytes(pa.table({"id": [1, 2, 3], "text": ["a", None, "c"]})))
    first, null, last = read(path)
    assert (first.id, first.text, last.id, last.text) == ("1", "a", "3", "c")
    assert (null.id, null.stage, null.error, null.message) == (
        "2",
        "parse",
        "BadRecord",
        "text field 'text' is null",
    )


def test_parquet_invalid_utf8_is_replaced_and_flagged_and_the_rest_is_read(tmp_path):
    offsets = pa.py_buffer(b"".join(n.to_bytes(4, "little") for n in (0, 2, 6, 8)))
    bad = pa.Array.from_buffers(pa.string(), 3, [None, offsets, pa.py_buffer(b"okno\xff!ok")])
    path = write(tmp_path / "p.parquet", parquet_bytes(pa.table({"text": bad})))
    records = read(path)
    assert [(r.text, r.warnings) for r in records] == [
        ("ok", ()),
        ("no\ufffd!", ("invalid_utf8",)),
        ("ok", ()),
    ]


@pytest.mark.parametrize(
    "column",
    [
        pa.array(["a", "b", "a"]).dictionary_encode(),
        pa.array(["a", "b", "a"], type=pa.large_string()),
        pa.array(["a", "b", "a"], type=pa.string_view()),
    ],
)
def test_parquet_string_columns_of_every_string_type_are_text(tmp_path, column):
    path = write(tmp_path / "p.parquet", parquet_bytes(pa.table({"text": column})))
    assert [r.text for r in read(path)] == ["a", "b", "a"]


def test_parquet_bad_ids_are_dead_lettered_one_by_one(tmp_path):
    table = pa.table({"id": [1.5, 2.0], "text": ["a", "b"]})
    records = read(write(tmp_path / "p.parquet", parquet_bytes(table)))
    assert [(r.stage, r.error) for r in records] == [("parse", "BadId")] * 2
    assert records[0].message == "id is 1.5 (a number); expected a non-empty string or an integer"


def test_csv_in_a_jsonl_shard_is_dead_lettered_line_by_line(tmp_path):
    csv = b'id,text\n1,hello world\n2,"quoted, text"\n'
    records = read(write(tmp_path / "data.jsonl", csv))
    assert [(r.stage, r.error) for r in records] == [("parse", "JSONDecodeError")] * 3
    assert records[1].message == "not valid JSON: Extra data: line 1 column 2 (char 1)"
    assert records[2].raw == '2,"quoted, text"'


# -- records -----------------------------------------------------------------------------------------------


def test_invalid_utf8_is_replaced_and_flagged_not_rejected(tmp_path):
    text_shard = write(tmp_path / "a.txt", b"caf\xe9 ok\nfine\n\xff\xfe\xfd\n")
    assert [(r.text, r.warnings) for r in read(text_shard)] == [
        ("caf\ufffd ok", ("invalid_utf8",)),
        ("fine", ()),
        ("\ufffd\ufffd\ufffd", ("invalid_utf8",)),
    ]
    jsonl = write(tmp_path / "a.jsonl", b'{"id": "x", "text": "caf\xe9 \xed\xa0\x80 ok"}\n')
    (doc,) = read(jsonl)
    assert (doc.id, doc.text, doc.warnings) == ("x", "caf\ufffd \ufffd\ufffd\ufffd ok", ("invalid_utf8",))


def test_nul_and_control_characters_are_kept_and_flagged(tmp_path):
    text_shard = write(tmp_path / "a.txt", b"a\x00b\nbell\x07 and \x1b[0m escape\ntab\tand\x0ccr\r\n")
    assert [(r.text, r.warnings) for r in read(text_shard)] == [
        ("a\x00b", ("control_chars",)),
        ("bell\x07 and \x1b[0m escape", ("control_chars",)),
        ("tab\tand\x0ccr", ("control_chars",)),  # the form feed; a tab is ordinary text
    ]
    lines = [b'{"text": "raw\x00nul"}', b'{"text": "escaped\\u0000nul"}', b'{"text": "raw\ttab"}']
    jsonl = write(tmp_path / "a.jsonl", b"\n".join([*lines, b'{"text": "c1 \\u0085"}']))
    assert [(r.text, r.warnings) for r in read(jsonl)] == [
        ("raw\x00nul", ("control_chars",)),
        ("escaped\x00nul", ("control_chars",)),
        ("raw\ttab", ()),
        ("c1 \x85", ("control_chars",)),
    ]


def test_a_bom_starting_the_file_is_dropped(tmp_path):
    for name in ("a.txt", "a.jsonl", "a.jsonl.gz"):
        data = b"\xef\xbb\xbf" + b'{"text": "first"}\n{"text": "second"}\n'
        if name.endswith(".gz"):
            data = gzip.compress(data)
        records = read(write(tmp_path / name, data))
        first = '{"text": "first"}' if name == "a.txt" else "first"
        assert (records[0].text, records[0].warnings) == (first, ()), name


def test_a_bom_inside_the_file_is_dropped_before_json_and_kept_in_text(tmp_path):
    data = b'{"text": "a"}\n\xef\xbb\xbf{"text": "b"}\n'
    assert [r.text for r in read(write(tmp_path / "cat.jsonl", data))] == ["a", "b"]
    assert [r.text for r in read(write(tmp_path / "cat.txt", b"a\n\xef\xbb\xbfb\n"))] == ["a", "\ufeffb"]


def test_crlf_ends_a_record_and_a_lone_cr_does_not(tmp_path):
    crlf = read(write(tmp_path / "crlf.txt", b"one\r\ntwo\r\n\r\nthree"))
    assert [(r.text, r.warnings) for r in crlf] == [
        ("one", ()),
        ("two", ()),
        ("", ("empty_text",)),
        ("three", ()),
    ]
    lone = read(write(tmp_path / "cr.txt", b"old\rmac\nline two\r\r\n"))
    assert [r.text for r in lone] == ["old\rmac", "line two\r"]
    jsonl = read(write(tmp_path / "crlf.jsonl", b'{"text": "a"}\r\n{"text": "b\\r\\nc"}\r\n'))
    assert [r.text for r in jsonl] == ["a", "b\r\nc"]
    (failure,) = read(write(tmp_path / "cr.jsonl", b'{"text": "a"}\r{"text": "b"}\r'))
    assert (failure.stage, failure.error) == ("parse", "JSONDecodeError")
    assert "records end at LF or CRLF only" in failure.message and "tr '\\r' '\\n'" in failure.message


def test_empty_and_whitespace_documents_are_annotated_and_flagged(tmp_path):
    records = read(write(tmp_path / "a.jsonl", b'{"text": ""}\n{"text": " \\t\\n "}\n{"text": "\\u3000"}\n'))
    assert [(r.text, r.warnings) for r in records] == [
        ("", ("empty_text",)),
        (" \t\n ", ("empty_text",)),
        ("\u3000", ("empty_text",)),
    ]
    blank = read(write(tmp_path / "b.jsonl", b'{"text": "x"}\n\n   \n'))
    assert [(r.stage, r.message) for r in blank[1:]] == [
        ("parse", "blank line where a JSON object was expected")
    ] * 2


@pytest.mark.parametrize(
    ("line", "error", "message"),
    [
        (b'{"text": "unterminated', "JSONDecodeError", "not valid JSON: Unterminated string starting at"),
        (b"{'text': 'single quotes'}", "JSONDecodeError", "not valid JSON: Expecting property name"),
        (b'{"text": "a",}', "JSONDecodeError", "not valid JSON: "),
        (b"[" * 100_000, "RecursionError", "not valid JSON: nested too deeply to parse"),
        (b"1" * 5000, "ValueError", "not valid JSON: Exceeds the limit (4300 digits)"),
        (b'[{"text": "in a list"}]', "BadRecord", "JSON line is a list, expected an object"),
        (b'"just a string"', "BadRecord", "JSON line is a string, expected an object"),
        (b"42", "BadRecord", "JSON line is a number, expected an object"),
        (b"null", "BadRecord", "JSON line is null, expected an object"),
        (b'{"body": "no text"}', "BadRecord", "text field 'text' is missing, expected a string"),
        (b'{"text": null}', "BadRecord", "text field 'text' is null, expected a string"),
        (b'{"text": 3.5}', "BadRecord", "text field 'text' is a number, expected a string"),
        (b'{"text": ["a", "b"]}', "BadRecord", "text field 'text' is a list, expected a string"),
        (b'{"text": {"a": 1}}', "BadRecord", "text field 'text' is an object, expected a string"),
        (b'{"text": true}', "BadRecord", "text field 'text' is a boolean, expected a string"),
        (
            b'{"id": 1.5, "text": "a"}',
            "BadId",
            "id is 1.5 (a number); expected a non-empty string or an integer",
        ),
        (b'{"id": true, "text": "a"}', "BadId", "id is True (a boolean); expected a non-empty string"),
        (b'{"id": "", "text": "a"}', "BadId", "id is '' (a string); expected a non-empty string"),
        (b'{"id": ["a"], "text": "a"}', "BadId", "id is ['a'] (a list)"),
        (b'{"id": "\\ud800", "text": "a"}', "BadId", "id '\\ud800' holds an unpaired UTF-16 surrogate"),
        (b'{"id": "' + b"i" * 1025 + b'", "text": "a"}', "BadId", "id is 1025 bytes long, over the 1024"),
    ],
)
def test_a_record_that_cannot_be_a_document_is_dead_lettered_at_parse(tmp_path, line, error, message):
    shard = write(tmp_path / "a.jsonl", b'{"text": "before"}\n' + line + b'\n{"text": "after"}\n')
    before, failure, after = read(shard, max_chars=1_000_000)
    assert (before.text, after.text) == ("before", "after")
    assert isinstance(failure, Failure) and (failure.stage, failure.error) == ("parse", error)
    assert failure.message.startswith(message), failure.message
    assert failure.raw.encode() == line[:RAW_LIMIT]
    assert len(failure.message.encode()) <= 1024


def test_ids_are_kept_as_given_and_integers_become_strings(tmp_path):
    data = b'{"id": "../../etc/x", "text": "a"}\n{"id": 7, "text": "b"}\n'
    data += b'{"id": null, "text": "c"}\n{"text": "d"}\n'
    path = write(tmp_path / "a.jsonl", data)
    assert [r.id for r in read(path)] == [
        "../../etc/x",
        "7",
        derived_id(str(path), 2),
        derived_id(str(path), 3),
    ]


def test_a_lone_surrogate_escape_is_replaced_and_flagged(tmp_path):
    path = write(tmp_path / "a.jsonl", b'{"text": "half \\ud83d of an emoji, \\ud83d\\ude00 whole"}\n')
    (doc,) = read(path)
    assert (doc.text, doc.warnings) == ("half \ufffd of an emoji, \U0001f600 whole", ("lone_surrogate",))


def test_a_10mb_line_is_skipped_unread_and_its_neighbours_survive(tmp_path):
    long_line = b'{"text": "' + b"word " * (2 * 1024 * 1024) + b'"}'
    path = write(tmp_path / "a.jsonl", b'{"text": "before"}\n' + long_line + b'\n{"text": "after"}\n')
    before, failure, after = read(path, max_chars=1_000_000)
    assert (before.text, after.text) == ("before", "after")
    assert (failure.stage, failure.error) == ("read", "TooLong")
    assert failure.message.startswith("line longer than 4000000 bytes (4 x input.max_chars); skipped unread")
    assert failure.raw.encode() == long_line[:RAW_LIMIT]
    text_path = write(tmp_path / "a.txt", b"x" * (10 * 1024 * 1024) + b"\nafter\n")
    failure, after = read(text_path, max_chars=1_000_000)
    assert (failure.error, len(failure.raw.encode()), after.text) == ("TooLong", RAW_LIMIT, "after")


def test_a_10mb_line_is_read_whole_when_max_chars_allows_it(tmp_path):
    path = write(tmp_path / "a.txt", b"x" * (10 * 1024 * 1024) + b"\nafter\n")
    doc, after = read(path, max_chars=20_000_000)
    assert (len(doc.text), doc.warnings, after.text) == (10 * 1024 * 1024, (), "after")


def test_a_document_over_max_chars_is_dead_lettered_at_read(tmp_path):
    (failure,) = read(write(tmp_path / "a.jsonl", b'{"id": "big", "text": "' + b"y" * 1500 + b'"}\n'))
    assert (failure.id, failure.stage, failure.error) == ("big", "read", "TooLong")
    assert failure.message == "document has 1500 characters, over input.max_chars (1000)"


def test_exotic_unicode_is_read_as_given(tmp_path):
    texts = [
        "שלום עולם مرحبا بالعالم",  # right to left
        "e\u0301 a\u0308\u0323 Z\u0351\u0352\u0357",  # combining marks
        "👩🏽‍💻 👨‍👩‍👧‍👦 🏳️‍🌈 👍🏿",  # skin tones and ZWJ sequences
        "東京都 北京市 서울 ｶﾀｶﾅ",  # CJK, Hangul, half-width
        "\U0001d518\U0001d52b \u16a0\u16c7\u16bb \ua66e \U00013000",  # astral; no vocabulary knows these
        "a" * 100_000,  # one word of 100k characters
    ]
    path = write(
        tmp_path / "a.jsonl",
        "".join(
            json.dumps({"text": t}, ensure_ascii=i % 2 == 0) + "\n" for i, t in enumerate(texts)
        ).encode(),
    )
    assert [(r.text, r.warnings) for r in read(path, max_chars=200_000)] == [(t, ()) for t in texts]


def test_an_error_nobody_foresaw_costs_one_record_not_the_shard(tmp_path, monkeypatch):
    from distilbeam.transforms.read.jsonl import JsonlReader

    parse = JsonlReader.parse

    def fragile(self, raw, *args):
        if b"boom" in raw:
            raise MemoryError("no room for this one")
        return parse(self, raw, *args)

    monkeypatch.setattr(JsonlReader, "parse", fragile)
    path = write(tmp_path / "a.jsonl", b'{"text": "a"}\n{"text": "boom"}\n{"text": "c"}\n')
    first, failure, last = read(path)
    assert (first.text, last.text) == ("a", "c")
    assert (failure.stage, failure.error, failure.raw) == ("parse", "MemoryError", '{"text": "boom"}')
    assert failure.message == "cannot read record: MemoryError: no room for this one"
