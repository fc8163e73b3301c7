"""What --force removes from an earlier output, and which folders each output mode accepts."""

from __future__ import annotations

import pytest

from distilbeam.transforms import SetupError, layout
from distilbeam.transforms.storage import Location

OURS = [
    "part-0123456789abcdef.parquet",
    "_errors/part-0123456789abcdef.parquet",
    "run_date=2026-01-01/part-0123456789abcdef.parquet",
    "_errors/run_date=2026-01-01/part-0123456789abcdef.parquet",
    "_SUMMARY.json",
    "_REPORT.md",
    "_REPORT.html",
    "_state/shards/0123456789abcdef.json",
]
KEPT = ["_state/runs/20260101T000000Z-abcdef/summary.json"]


def make(root, names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")


def files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_force_removes_distilbeam_outputs_and_keeps_run_records_and_other_files(tmp_path):
    make(tmp_path, [*OURS, *KEPT, "notes.txt"])
    with pytest.raises(SetupError, match="is not empty"):
        layout.prepare_output(Location(str(tmp_path)), force=False)
    layout.prepare_output(Location(str(tmp_path)), force=True)
    assert files(tmp_path) == sorted([*KEPT, "notes.txt"])


def test_incremental_mode_accepts_an_output_of_its_own_files_only(tmp_path):
    make(tmp_path, [*OURS, *KEPT, ".part-0123456789abcdef.parquet.0123456789abcdef0123456789abcdef.tmp"])
    layout.prepare_output(
        Location(str(tmp_path)), force=False, mode="incremental"
    )  # resumes: nothing removed
    assert len(files(tmp_path)) == len(OURS) + len(KEPT) + 1
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SetupError, match="is not empty"):
        layout.prepare_output(Location(str(tmp_path)), force=False, mode="incremental")
    layout.prepare_output(Location(str(tmp_path)), force=True, mode="incremental")  # starts over
    assert files(tmp_path) == sorted(
        [*KEPT, ".part-0123456789abcdef.parquet.0123456789abcdef0123456789abcdef.tmp", "notes.txt"]
    )


def test_run_records_alone_do_not_make_an_output_non_empty(tmp_path):
    make(tmp_path, KEPT)
    layout.prepare_output(Location(str(tmp_path)), force=False)
    assert files(tmp_path) == KEPT
