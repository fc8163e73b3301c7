"""The run record: each run's summary and reports under _state/runs/, the top-level ones for the latest."""

from __future__ import annotations

import json

from distilbeam.transforms import report
from distilbeam.transforms.storage import Location

SUMMARY = {"run_id": "20260101T000000Z-abcdef", "status": "ok", "shards": 0, "profile": {}}


def test_every_run_keeps_its_record_and_only_the_latest_replaces_the_top_level_files(tmp_path):
    report.write_run_record(Location(str(tmp_path)), SUMMARY, latest=False)
    run_dir = tmp_path / "_state" / "runs" / SUMMARY["run_id"]
    assert json.loads((run_dir / "summary.json").read_text()) == SUMMARY
    assert (run_dir / "report.md").read_text() == report.render_markdown(SUMMARY)
    assert (run_dir / "report.html").read_text() == report.render_html(SUMMARY)
    assert not any((tmp_path / name).exists() for name in (report.SUMMARY_FILE, report.REPORT_MD))

    report.write_run_record(Location(str(tmp_path)), SUMMARY, latest=True)
    assert (tmp_path / report.SUMMARY_FILE).read_bytes() == (run_dir / "summary.json").read_bytes()
    assert (tmp_path / report.REPORT_MD).read_bytes() == (run_dir / "report.md").read_bytes()
    assert (tmp_path / report.REPORT_HTML).read_bytes() == (run_dir / "report.html").read_bytes()
