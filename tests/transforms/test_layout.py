"""The output folder's names, spelled out independently of the code that makes them, and which names a run
takes for its own."""

from __future__ import annotations

import hashlib

import fsspec
import pytest

from distilbeam.transforms import SetupError, layout
from distilbeam.transforms.read import Split
from distilbeam.transforms.storage import Location

SOURCE = "gs://bucket/in/shard-0.jsonl"
OPTIONS = {"anon": True}  # carried to every place under the output
OUT = Location("/out", OPTIONS)
HASH = hashlib.blake2b(SOURCE.encode(), digest_size=8).hexdigest()


def test_a_shard_names_its_files_its_entry_and_its_split_records():
    assert layout.shard_files(SOURCE) == (f"part-{HASH}.parquet", f"_errors/part-{HASH}.parquet")
    split = Split(SOURCE, "jsonl", index=2, count=3)
    assert layout.shard_files(SOURCE, layout.partition_folder("2026-01-02"), split) == (
        f"run_date=2026-01-02/part-{HASH}-00002.parquet",
        f"_errors/run_date=2026-01-02/part-{HASH}-00002.parquet",
    )
    assert layout.shard_file_name(SOURCE, Split(SOURCE, "jsonl")) == f"part-{HASH}.parquet"  # read whole
    assert layout.entry_name(SOURCE) == f"{HASH}.json"
    assert layout.split_records_location(OUT, SOURCE) == Location(f"/out/_state/splits/{HASH}", OPTIONS)
    assert layout.split_record_name(7) == "00007.json"


def test_state_run_records_and_lock_live_under_state():
    assert layout.state_location(Location("s3://b/out", OPTIONS), "shards") == Location(
        "s3://b/out/_state/shards", OPTIONS
    )
    assert layout.run_record_location(OUT, "R", layout.RUN_SUMMARY).url == "/out/_state/runs/R/summary.json"
    assert layout.lock_location(OUT).url == "/out/_state/lock.json"
    assert layout.output_location(OUT, "_errors/part-x.parquet").url == "/out/_errors/part-x.parquet"
    assert (layout.SUMMARY_FILE, layout.REPORT_MD, layout.REPORT_HTML) == (
        "_SUMMARY.json",
        "_REPORT.md",
        "_REPORT.html",
    )


@pytest.mark.parametrize(
    ("relative", "ours"),
    [
        (f"part-{HASH}.parquet", True),
        (f"_errors/run_date=2026-01-02/part-{HASH}-00001.parquet", True),
        ("part-of-something-else.parquet", False),
        (f"other/part-{HASH}.parquet", False),
        (f"part-{HASH}.parquet.bak", False),
    ],
)
def test_part_files_are_known_by_their_exact_names(relative, ours):
    assert layout.is_part_file(relative) == ours


def test_temporary_names_and_the_lock_renewal():
    hex32 = "0123456789abcdef" * 2
    assert layout.is_temporary(f".part-{HASH}.parquet.{hex32}.tmp")
    assert not layout.is_temporary(f".lock.json.{hex32}.tmp")  # the lock's renewal, in flight
    assert not layout.is_temporary("notes.tmp")


def test_what_a_run_takes_for_its_own_at_the_top_of_an_output():
    for name in ["part-x.parquet", "_SUMMARY.json", "_REPORT.md", "_errors", "_state", "run_date=2026-01-01"]:
        assert layout.is_ours(f"/out/{name}"), name
    assert layout.is_ours("/out/.part-x.parquet.abc.tmp") and layout.is_ours("/out/_distilbeam_write_check-1")
    assert not layout.is_ours("/out/notes.txt") and not layout.is_ours("/out/_SUMMARY.json.old")


def test_a_state_folder_with_the_lock_and_run_records_only_is_no_earlier_output(tmp_path):
    fs = fsspec.filesystem("file")
    (tmp_path / "_state" / "runs").mkdir(parents=True)
    (tmp_path / "_state" / "lock.json").write_text("{}")
    assert layout.only_lock(fs, str(tmp_path / "_state"))
    (tmp_path / "_state" / "shards").mkdir()
    assert not layout.only_lock(fs, str(tmp_path / "_state"))
    assert not layout.only_lock(fs, str(tmp_path / "_errors"))


def test_an_output_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(SetupError, match="exists and is not a directory"):
        layout.check_output_folder(Location(str(tmp_path / "out")))
    layout.check_output_folder(Location(str(tmp_path / "new")), writable=True)
