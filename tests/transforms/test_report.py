"""Run-report statistics (per-shard profiles that add up exactly) and their Markdown and HTML rendering."""

from __future__ import annotations

import functools
import re
from html.parser import HTMLParser

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from distilbeam.transforms import report
from distilbeam.transforms.schema import Failure


def row(n_tokens: int, label: str, spans: list[tuple[str, str]]) -> dict:
    return {
        "id": "x",
        "n_tokens": n_tokens,
        "sentiment": {"label": label, "score": 0.9, "scores": []},
        "entities": [{"label": lab, "text": text, "start": 0, "end": 1, "score": 0.5} for lab, text in spans],
    }


def failure(stage: str, error: str) -> Failure:
    return Failure.of(stage, error, "m", source="s", offset=0)


def test_profile_counts_labels_entities_lengths_and_dead_letter():
    rows = [
        row(0, "POS", []),
        row(5, "POS", [("PER", "Alice"), ("LOC", "Paris")]),
        row(12, "NEG", [("PER", " Alice  "), ("PER", "Bob")]),
    ]
    p = report.profile_table(
        pa.Table.from_pylist(rows),
        [failure("parse", "BadRecord"), failure("infer", "RuntimeError")],
        ["sentiment", "entities"],
    )
    assert (p.docs, p.tokens) == (3, 17)
    assert p.lengths == {"0": 1, "4-7": 1, "8-15": 1}
    assert p.labels == {"sentiment": {"POS": 2, "NEG": 1}}
    assert p.entities == {"entities": {"PER": 3, "LOC": 1}}
    assert report.top_entities(p, "entities") == [("PER", "Alice", 2), ("LOC", "Paris", 1), ("PER", "Bob", 1)]
    assert p.dead_letter == {"parse": {"BadRecord": 1}, "infer": {"RuntimeError": 1}}


def test_length_buckets_are_powers_of_two():
    assert [report.length_bucket(n) for n in (0, 1, 2, 3, 4, 7, 8, 511, 512)] == [
        "0",
        "1",
        "2-3",
        "2-3",
        "4-7",
        "4-7",
        "8-15",
        "256-511",
        "512-1023",
    ]


labels = st.sampled_from(["A", "B", "C"])
shard_rows = st.lists(
    st.builds(
        row, st.integers(0, 600), labels, st.lists(st.tuples(labels, st.sampled_from(["x", "y"])), max_size=3)
    ),
    max_size=6,
)


@given(st.lists(shard_rows, min_size=1, max_size=5))
def test_profiles_add_up_to_the_profile_of_all_rows(shards):
    tasks = ["sentiment", "entities"]
    merged = functools.reduce(
        report.Profile.merge,
        (report.profile_table(pa.Table.from_pylist(rows), [], tasks) for rows in shards),
        report.Profile(),
    )
    whole = report.profile_table(pa.Table.from_pylist([r for rows in shards for r in rows]), [], tasks)
    assert merged.to_json() == whole.to_json()


def test_top_entities_are_trimmed_to_the_most_frequent():
    rows = [row(1, "A", [("PER", f"name{i}")] * (i + 1)) for i in range(report.TOP_ENTITIES_KEPT + 50)]
    p = report.profile_table(pa.Table.from_pylist(rows), [], ["entities"])
    kept = [t for texts in p.top_entities["entities"].values() for t in texts]
    assert len(kept) == report.TOP_ENTITIES_KEPT
    assert "name0" not in kept and f"name{report.TOP_ENTITIES_KEPT + 49}" in kept
    assert p.entities["entities"]["PER"] == sum(range(1, report.TOP_ENTITIES_KEPT + 51))  # counts stay exact


def test_throughput_series_bins_documents_per_second():
    timeline = {1000: 10, 1001: 30, 1005: 20}
    assert report.throughput_series(timeline, started=998.4) == [
        [0.0, 0.0],
        [1.0, 0.0],
        [2.0, 10.0],
        [3.0, 30.0],
        [4.0, 0.0],
        [5.0, 0.0],
        [6.0, 0.0],
        [7.0, 20.0],
    ]
    long = {1000 + s: 1 for s in range(600)}
    series = report.throughput_series(long, started=1000, points=60)
    assert len(series) == 60 and all(rate == 1.0 for _, rate in series)


def test_status_follows_completeness_and_the_dead_letter_limit():
    base = {"complete": True, "max_failed_fraction": 0.1, "output": {"failed_fraction": 0.1}}
    assert report.run_status(base) == "ok"
    assert report.run_status({**base, "output": {"failed_fraction": 0.11}}) == "dead_letter_exceeded"
    assert report.run_status({**base, "complete": False}) == "incomplete"
    assert (
        report.run_status({**base, "max_failed_fraction": None, "output": {"failed_fraction": 1.0}}) == "ok"
    )
    assert (
        report.output_totals(
            {"shards": 2, "docs_read": 10, "docs_failed": 1}, {"shards": 1, "docs_read": 10}
        )["failed_fraction"]
        == 0.05
    )


def summary(profile: report.Profile) -> dict:
    return {
        "run_id": "20260101T000000Z-abcdef",
        "status": "ok",
        "mode": "incremental",
        "run_date": "2026-01-01",
        "finished_at": "2026-01-01T00:01:00+00:00",
        "shards": 2,
        "docs_read": 4,
        "docs_written": 3,
        "docs_failed": 1,
        "tokens": 40,
        "wall_seconds": 60.0,
        "selection": {"new": 2, "kept": 3},
        "output": report.output_totals({"shards": 3, "docs_read": 6}, {"shards": 2, "docs_read": 4}),
        "max_failed_fraction": 0.5,
        "throughput": [[0.0, 1.0], [30.0, 2.5]],
        "profile": profile.to_json(),
    }


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


def test_nice_ticks_cover_the_peak():
    for peak in (0.3, 1, 7, 20, 99, 1234.5):
        top, ticks = report._nice_ticks(peak)
        assert top >= peak and ticks[0] == 0 and ticks[-1] == top and len(ticks) <= 6


def test_results_of_other_shapes_are_left_out():
    rows = [
        {
            "n_tokens": 4,
            "vector": [0.1, 0.2, 0.3],
            "answers": [{"question": "who?", "answer": "Bob", "start": 0, "end": 3, "score": 0.9}],
            "entities": [],
        }
    ]
    p = report.profile_table(pa.Table.from_pylist(rows), [], ["vector", "answers", "entities"])
    assert (p.labels, p.entities, p.top_entities) == ({}, {}, {})
    assert (
        "entities" not in report.render_markdown(summary(p))
        and report.render_html(summary(p)).count("<svg") == 2
    )
