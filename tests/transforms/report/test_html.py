"""The run report as one HTML page with inline SVG charts."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pyarrow as pa

from distilbeam.transforms import report
from tests.conftest import REPO
from tests.transforms.report.samples import failure, row, summary


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def test_html_report_draws_its_charts_inline_and_escapes_document_text():
    rows = [row(3, "POS", [("PER", "<script>alert(1)</script>")]), row(9, "NEG", []), row(9, "POS", [])]
    p = report.profile_table(
        pa.Table.from_pylist(rows), [failure("parse", "BadRecord")], ["sentiment", "entities"]
    )
    page = report.render_html(summary(p))
    parsed = _Collect()
    parsed.feed(page)
    tags = [t for t, _ in parsed.tags]
    assert "script" not in tags and "link" not in tags and "img" not in tags  # nothing runs or loads
    assert not re.search(r"(?:src|href)=", page)
    assert tags.count("svg") == 4  # throughput, label distribution, length histogram, entities by label
    assert "<script>alert(1)</script>" in "".join(parsed.text)  # shown as text, escaped in the markup
    bars = [a for t, a in parsed.tags if t == "rect"]
    assert len(bars) == 2 + 3 + 1  # two labels, length buckets 2-3, 4-7 (empty) and 8-15, one entity label
    assert "BadRecord" in page


def test_the_committed_example_report_is_what_the_renderer_draws():
    example = json.loads((REPO / "docs/report/offline-demo-summary.json").read_text())
    assert report.render_html(example) == (REPO / "docs/report/offline-demo.html").read_text()
