"""Run statistics: per-shard profiles that add up exactly, throughput over time and the run status."""

from __future__ import annotations

import functools

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from distilbeam.transforms import report
from tests.transforms.report.samples import failure, row, summary


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
