"""The run's summary and report: every split's ``SplitResult`` added up once every shard is committed, and
written with the run's identity, its choice of shards and the whole output's totals under
``_state/runs/<run id>/`` and, for a run that changed the output, as its top-level summary and report."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import apache_beam as beam

from distilbeam.transforms import report, state
from distilbeam.transforms.schema import ShardStats
from distilbeam.transforms.storage import Location
from distilbeam.transforms.write import AddUpResults, SplitResult


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


class WriteRunReport(beam.PTransform):
    """Every split's ``SplitResult`` -> the run's summary and report, written once every shard is in."""

    def __init__(self, out: Location, facts: Mapping[str, Any], run: state.RunSettings):
        super().__init__()
        self._fn = WriteRunReportFn(out, facts, run)

    def expand(self, results: beam.PCollection) -> beam.PCollection:
        return (
            results
            | "AddUp" >> beam.CombineGlobally(AddUpResults()).with_output_types(SplitResult)
            | "WriteSummaryAndReport" >> beam.ParDo(self._fn)
        )


class WriteRunReportFn(beam.DoFn):
    """Once every shard is committed: the run's summary and report under ``_state/runs/<run id>/``, and
    the output's top-level ``_SUMMARY.json`` and ``_REPORT.*``."""

    def __init__(self, out: Location, facts: Mapping[str, Any], run: state.RunSettings):
        self._out = out
        self._facts = facts
        self._run = run

    def process(self, result: SplitResult) -> Iterator[dict[str, Any]]:
        summary = run_summary(
            result.stats, result.profile, result.timeline, self._facts, self._run, time.time()
        )
        latest = result.stats.shards > 0 or self._run.summary_behind  # a run that changed nothing leaves them
        report.write_run_record(self._out, summary, latest=latest)
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
