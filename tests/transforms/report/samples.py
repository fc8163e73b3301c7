"""Rows of the output schema, dead-letter rows and run summaries for the report's tests."""

from __future__ import annotations

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
