"""Workers' progress files and the launcher's progress line."""

from __future__ import annotations

import io
import json

from distilbeam.transforms import progress


def test_workers_progress_files_add_up_and_are_saved_at_most_twice_a_second(tmp_path):
    one, two = progress.ProgressFile(str(tmp_path)), progress.ProgressFile(str(tmp_path))
    one.add(done=7)
    one.add(read=7, bytes=700)  # within half a second of the first save: kept for the next
    two.add(done=1, read=1, bytes=100)
    assert progress.read_totals(str(tmp_path)) == {"done": 8, "read": 1, "bytes": 100}
    one.save()
    assert progress.read_totals(str(tmp_path)) == {"done": 8, "read": 8, "bytes": 800}
    nowhere = progress.ProgressFile(None)  # a remote runner: nothing to write, nothing fails
    nowhere.add(done=3)
    nowhere.save()


def test_progress_text_estimates_the_total_from_bytes_read():
    assert progress.progress_text({"done": 50, "read": 100, "bytes": 1000}, 4000, 10.0) == (
        "50 / ~400 documents (12%), 5.0 docs/s, ETA 1m10s"
    )
    assert progress.progress_text({"done": 400, "read": 400, "bytes": 4000}, 4000, 80.0) == (
        "400 / 400 documents (100%), 5.0 docs/s"
    )
    assert progress.progress_text({"done": 3, "read": 0, "bytes": 0}, 4000, 1.0) == "3 documents, 3.0 docs/s"


def test_progress_line_prints_and_survives_unreadable_files(tmp_path):
    (tmp_path / "w1.json").write_text(json.dumps({"done": 5, "read": 10, "bytes": 100}))
    (tmp_path / "w2.json").write_text("{torn")
    out = io.StringIO()
    line = progress.ProgressLine(str(tmp_path), 200, stream=out, interval=0.05).start()
    line.stop()
    assert out.getvalue().splitlines()[-1].startswith("distilbeam: progress: 5 / ~20 documents (25%)")
    empty = io.StringIO()
    progress.ProgressLine(str(tmp_path / "missing"), 200, stream=empty, interval=0.05).start().stop()
    assert empty.getvalue() == "distilbeam: progress: 0 documents, 0.0 docs/s\n"
