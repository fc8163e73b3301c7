"""Writing enriched Parquet, the dead letter and the run summary.

Rows are gathered per input shard and written as one Parquet file per shard, named from the shard, sorted
by offset, so a re-run replaces a file instead of adding a duplicate. Each shard's record count from the
reader is checked against what was written plus what failed: no document disappears unnoticed."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from transforms import report, state, storage
from transforms.schema import (
    DEAD_LETTER_SCHEMA,
    Annotated,
    Failure,
    ShardStats,
    dead_letter_row,
    output_row,
)

log = logging.getLogger(__name__)
ERRORS_DIR = state.ERRORS_DIR
SUMMARY_FILE = report.SUMMARY_FILE


@dataclasses.dataclass(frozen=True)
class WriteSettings:
    path: str
    schema: pa.Schema  # with the key-value metadata every file carries
    keep_text: bool
    compression: str
    storage_options: Mapping[str, Any] = dataclasses.field(repr=False)  # may hold credentials
    # Scheduled and resumable runs (see transforms/state.py): the run this write belongs to, whose
    # manifest entries commit each shard; and the task columns the run report profiles.
    run: state.RunSettings | None = None
    tasks: tuple[str, ...] = ()


def shard_file_name(source: str) -> str:
    return f"part-{hashlib.blake2b(source.encode(), digest_size=8).hexdigest()}.parquet"


def parquet_bytes(rows: list[dict[str, Any]], schema: pa.Schema, compression: str) -> bytes:
    table = pa.Table.from_pylist(rows, schema=schema)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=None if compression == "none" else compression)
    return sink.getvalue()


def split_writable(
    items: list[Annotated], schema: pa.Schema, keep_text: bool
) -> tuple[list[dict[str, Any]], list[Failure]]:
    """Rows that convert to the output schema, and a write-stage failure for each one that does not."""
    rows = [output_row(item, keep_text) for item in items]
    try:
        pa.Table.from_pylist(rows, schema=schema)
        return rows, []
    except (pa.ArrowException, TypeError, ValueError):
        pass
    good, bad = [], []
    for item, row in zip(items, rows, strict=True):
        try:
            pa.Table.from_pylist([row], schema=schema)
            good.append(row)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            doc = item.doc
            bad.append(
                Failure.of(
                    "write",
                    exc,
                    f"result does not fit the output schema: {exc}",
                    source=doc.source,
                    offset=doc.offset,
                    id=doc.id,
                    raw=doc.text[:1024],
                )
            )
    return good, bad


def mark_duplicate_ids(items: list[Annotated]) -> list[Annotated]:
    """Rows of one shard that share an id: each stays (every input record is one row, told apart by its
    offset) and each gets the ``duplicate_id`` warning: none of them is more the original than another."""
    counts = collections.Counter(item.doc.id for item in items)
    duplicate = [counts[item.doc.id] > 1 for item in items]
    return [
        dataclasses.replace(item, doc=item.doc.with_warnings("duplicate_id")) if dup else item
        for item, dup in zip(items, duplicate, strict=True)
    ]


class WriteShardFn(beam.DoFn):
    """(shard, {docs, failed, counts}) -> the shard's Parquet file and dead-letter file, and its stats."""

    def __init__(self, settings: WriteSettings):
        self._settings = settings
        self._written = Metrics.counter("distilbeam", "docs_written")
        self._failed = Metrics.counter("distilbeam", "docs_failed")
        self._tokens = Metrics.counter("distilbeam", "tokens")
        self._lost = Metrics.counter("distilbeam", "docs_unaccounted")

    def process(self, element: tuple[str, Mapping[str, Iterable[Any]]]) -> Iterator[ShardStats]:
        source, grouped = element
        s = self._settings
        items = sorted(grouped["docs"], key=lambda a: (a.doc.offset, a.doc.char_offset, a.doc.id))
        items = mark_duplicate_ids(items)
        rows, write_failures = split_writable(items, s.schema, s.keep_text)
        failures = sorted(
            [*grouped["failed"], *write_failures], key=lambda f: (f.offset, f.stage, f.id or "")
        )
        read = sum(grouped["counts"])
        data_file, errors_file = shard_files(source, s.run.partition if s.run else "")

        data = parquet_bytes(rows, s.schema, s.compression)
        storage.write_atomic(state.output_uri(s.path, data_file), _halting_writer(data), s.storage_options)
        state.crash_point("after_data")
        errors_uri = state.output_uri(s.path, errors_file)
        if failures:
            dead = parquet_bytes([dead_letter_row(f) for f in failures], DEAD_LETTER_SCHEMA, s.compression)
            storage.write_atomic(errors_uri, lambda f: f.write(dead), s.storage_options)
            state.crash_point("after_errors")
        else:  # a dead letter left by an earlier run of this shard would be stale
            storage.remove(errors_uri, s.storage_options)

        tokens = sum(row["n_tokens"] for row in rows)
        if read != len(rows) + len(failures):
            log.error(
                "shard %s: %d records read but %d written + %d failed", source, read, len(rows), len(failures)
            )
            self._lost.inc(abs(read - len(rows) - len(failures)))
        self._written.inc(len(rows))
        self._failed.inc(len(failures))
        self._tokens.inc(tokens)
        by_stage: dict[str, int] = {}
        for failure in failures:
            by_stage[failure.stage] = by_stage.get(failure.stage, 0) + 1
        if s.run is not None:
            if read == len(rows) + len(failures):  # an incomplete shard stays uncommitted: re-run redoes it
                counts = (read, len(rows), len(failures), tokens)
                files = (data_file, errors_file if failures else None)
                state.commit_shard(s.path, s.run, source, files, counts, s.storage_options)
            yield beam.pvalue.TaggedOutput("profiles", report.profile_shard(rows, failures, s.tasks))
        yield ShardStats(1, read, len(rows), len(failures), tokens, by_stage)


# Module-level (not lambdas) so the graph pickles them by name: workers run their installed copy.
def _by_shard_of_doc(item: Annotated) -> tuple[str, Annotated]:
    return item.doc.source, item


def _by_shard(failure: Failure) -> tuple[str, Failure]:
    return failure.source, failure


def shard_files(source: str, partition: str = "") -> tuple[str, str]:
    """A shard's output and dead-letter files, relative to output.path: named from the shard alone (in
    the run's date partition, if any), so annotating a shard again replaces its files in place."""
    name = shard_file_name(source)
    folder = f"{partition}/" if partition else ""
    return f"{folder}{name}", f"{ERRORS_DIR}/{folder}{name}"


def _halting_writer(data: bytes) -> Any:
    """Writes ``data``; the crash-test point ``write_data`` falls half-way through, leaving a partly written
    temporary file as a real crash would."""

    def write(f: Any) -> None:
        half = len(data) // 2
        f.write(data[:half])
        f.flush()
        state.crash_point("write_data")
        f.write(data[half:])

    return write


class WriteSummaryFn(beam.DoFn):
    """Writes ``_SUMMARY.json`` once every shard is written: the run's counts and the facts it was given."""

    def __init__(
        self, path: str, facts: Mapping[str, Any], started: float, storage_options: Mapping[str, Any]
    ):
        self._path = path
        self._facts = facts
        self._started = started
        self._storage_options = storage_options

    def process(self, stats: ShardStats) -> Iterator[dict[str, Any]]:
        summary = summary_dict(stats, self._facts, time.time() - self._started)
        text = json.dumps(summary, indent=2, sort_keys=False) + "\n"
        uri = storage.join(self._path, SUMMARY_FILE)
        storage.write_atomic(uri, lambda f: f.write(text.encode()), self._storage_options)
        yield summary


def summary_dict(stats: ShardStats, facts: Mapping[str, Any], wall_seconds: float) -> dict[str, Any]:
    return {
        "docs_read": stats.docs_read,
        "docs_written": stats.docs_written,
        "docs_failed": stats.docs_failed,
        "complete": stats.docs_read == stats.docs_written + stats.docs_failed,
        "tokens": stats.tokens,
        "shards": stats.shards,
        "failed_by_stage": dict(stats.failed_by_stage),
        "wall_seconds": round(wall_seconds, 3),
        "docs_per_second": round(stats.docs_read / wall_seconds, 3) if wall_seconds > 0 else None,
        **facts,
    }


class WriteEnrichedParquet(beam.PTransform):
    """Annotated documents, dead-letter rows and per-shard read counts -> Parquet files, then the summary."""

    def __init__(self, settings: WriteSettings, facts: Mapping[str, Any], started: float):
        super().__init__()
        self._settings = settings
        self._facts = facts
        self._started = started

    def expand(self, inputs: Mapping[str, beam.PCollection]) -> beam.PCollection:
        s = self._settings
        written = (
            {
                "docs": inputs["docs"] | "KeyDocs" >> beam.Map(_by_shard_of_doc),
                "failed": inputs["failed"] | "KeyFailures" >> beam.Map(_by_shard),
                "counts": inputs["counts"],
            }
            | "GroupByShard" >> beam.CoGroupByKey()
            | "WriteShards" >> beam.ParDo(WriteShardFn(s)).with_outputs("profiles", main="stats")
        )
        stats = written.stats | "AddUp" >> beam.CombineGlobally(sum, ShardStats())
        if s.run is None:
            return stats | "WriteSummary" >> beam.ParDo(
                WriteSummaryFn(s.path, self._facts, self._started, s.storage_options)
            )
        # A scheduled run: shards were committed to the manifest as they were written; their profiles and
        # the per-second timeline (input ``timeline``) add up to the run report.
        profile = written.profiles | "AddUpProfiles" >> beam.CombineGlobally(report.merge_profiles)
        timeline = inputs["timeline"] | "AddUpTimeline" >> beam.CombineGlobally(report.merge_timelines)
        return stats | "WriteRunReport" >> beam.ParDo(
            WriteRunReportFn(s.path, self._facts, s.run, s.storage_options),
            beam.pvalue.AsSingleton(profile),
            beam.pvalue.AsSingleton(timeline),
        )


class WriteRunReportFn(beam.DoFn):
    """Once every shard is committed: the run's summary and report under ``_state/runs/<run id>/``, and
    the output's top-level ``_SUMMARY.json`` and ``_REPORT.*``."""

    def __init__(
        self, path: str, facts: Mapping[str, Any], run: state.RunSettings, storage_options: Mapping[str, Any]
    ):
        self._path = path
        self._facts = facts
        self._run = run
        self._storage_options = storage_options

    def process(
        self, stats: ShardStats, profile: report.Profile, timeline: Mapping[int, int]
    ) -> Iterator[dict[str, Any]]:
        state.crash_point("before_summary")
        summary = run_summary(stats, profile, timeline, self._facts, self._run, time.time())
        latest = stats.shards > 0 or self._run.summary_behind  # a run that changed nothing leaves them
        report.write_run_record(self._path, summary, self._storage_options, latest=latest)
        yield summary


def run_summary(
    stats: ShardStats,
    profile: report.Profile,
    timeline: Mapping[int, int],
    facts: Mapping[str, Any],
    run: state.RunSettings,
    finished: float,
) -> dict[str, Any]:
    """``summary_dict`` for this run, plus the run's identity, what it chose to annotate, the whole
    output's totals, the report's statistics, and its status (see ``report.run_status``)."""
    base = summary_dict(stats, facts, finished - run.started)
    summary = {
        "run_id": run.run_id,
        "mode": run.mode,
        "run_date": run.run_date,
        "started_at": state.iso_time(run.started),
        "finished_at": state.iso_time(finished),
        **base,
        "selection": dict(run.selection),
        "output": report.output_totals(run.carried, base),
        "max_failed_fraction": run.max_failed_fraction,
        "profile": profile.to_json(),
        "throughput": report.throughput_series(timeline, run.started),
    }
    summary["status"] = report.run_status(summary)
    return summary
