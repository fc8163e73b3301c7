"""The progress tap on a real DirectRunner pipeline, and the launcher's progress line."""

from __future__ import annotations

import io
import json

import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that

from transforms import progress, report
from transforms.schema import Annotated, Document, Failure


def test_track_progress_counts_documents_and_read_shards(tmp_path):
    docs = [Annotated(Document(str(i), "a", i, "t"), 1, {}) for i in range(7)]
    failed = [Failure.of("parse", "BadRecord", "m", source="b", offset=0)]
    counts = [("a", 7), ("b", 1)]

    def total_is_eight(timelines):
        merged = report.merge_timelines(timelines)
        assert sum(merged.values()) == 8, merged

    with test_pipeline.TestPipeline() as p:
        timelines = (
            (
                p | "Docs" >> beam.Create(docs),
                p | "Failed" >> beam.Create(failed),
                p | "Counts" >> beam.Create(counts),
            )
            | beam.Flatten()
            | beam.ParDo(progress.TrackProgressFn(str(tmp_path), {"a": 700, "b": 100}))
        )
        assert_that(timelines, total_is_eight)
    assert progress.read_totals(str(tmp_path)) == {"done": 8, "read": 8, "bytes": 800}


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
