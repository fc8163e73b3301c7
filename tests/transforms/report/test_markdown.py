"""The run report as Markdown."""

from __future__ import annotations

import json

import pyarrow as pa

from distilbeam.transforms import report
from tests.conftest import REPO
from tests.transforms.report.samples import failure, row, summary


def test_markdown_report_lists_what_the_run_did():
    rows = [row(3, "POS", [("PER", "Alice|Bob")]), row(9, "NEG", [])]
    md = report.render_markdown(
        summary(
            report.profile_table(
                pa.Table.from_pylist(rows), [failure("infer", "OOM")], ["sentiment", "entities"]
            )
        )
    )
    assert "Status: **ok**" in md
    assert "| documents read | 4 | 10 |" in md
    assert "| infer | OOM | 1 |" in md
    assert "| POS | 1 | 50.0% |" in md and "| NEG | 1 | 50.0% |" in md
    assert "| Alice\\|Bob | PER | 1 |" in md
    assert "| 2-3 | 1 |\n| 4-7 | 0 |\n| 8-15 | 1 |" in md
    assert "Peak 2.5 documents/s" in md


def test_the_committed_example_report_is_what_the_renderer_draws():
    example = json.loads((REPO / "docs/report/offline-demo-summary.json").read_text())
    assert report.render_markdown(example) == (REPO / "docs/report/offline-demo.md").read_text()
