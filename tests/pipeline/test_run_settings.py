"""The config keys of scheduled runs, and which settings count as a change that re-annotates every shard."""

from __future__ import annotations

import pytest

from distilbeam.pipeline import config
from distilbeam.pipeline.plan import annotation_sha256
from tests.conftest import REPO

BASE = {
    "input": {"paths": ["a/*.jsonl"]},
    "tasks": {"sentiment": {"kind": "classify", "model": "m"}},
    "output": {"path": "out"},
}
IDENTITY = {"sentiment": {"weights_sha256": "w1", "max_length": 512, "labels": ["NEG", "POS"]}}


def load(*overrides: str) -> config.Config:
    data = {k: dict(v) for k, v in BASE.items()}
    for override in overrides:
        config.apply_override(data, override)
    return config.from_dict(data)


def test_scheduled_config_is_incremental_and_valid():
    cfg = config.load(REPO / "configs" / "scheduled.yaml")
    assert cfg.output.mode == "incremental"
    assert cfg.output.partition_by == "run_date" and cfg.output.max_failed_fraction is not None


def test_defaults_keep_one_off_runs_as_they_were():
    cfg = load()
    assert (cfg.output.mode, cfg.output.partition_by, cfg.output.run_date) == ("overwrite", None, None)
    assert cfg.output.max_failed_fraction is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("output.mode=append", "output.mode: expected one of overwrite, incremental"),
        ("output.partition_by=day", "output.partition_by: expected one of run_date"),
        ("output.run_date=2026-13-01", "output.run_date: expected a date as YYYY-MM-DD, got '2026-13-01'"),
        ("output.run_date=2026-2-1", "output.run_date: expected a date as YYYY-MM-DD"),
        ("output.run_date=20260101", "output.run_date: expected a non-empty string"),
        ("output.max_failed_fraction=1.5", "output.max_failed_fraction: expected a number from 0 to 1"),
    ],
)
def test_bad_run_keys_are_named(override, message):
    with pytest.raises(config.ConfigError, match=message):
        load(override)


def test_annotation_hash_follows_what_shapes_the_rows_only():
    same = annotation_sha256(load(), IDENTITY)
    for override in (
        "input.paths=[b/*.jsonl, c/*.txt]",
        "output.path=gs://elsewhere",
        "output.mode=incremental",
        "batching.max_tokens=512",
        "runtime.device=cpu",
        "beam.runner=DataflowRunner",
    ):
        assert annotation_sha256(load(override), IDENTITY) == same, override
    for override in ("tasks.sentiment.model=other", "output.keep_text=true", "input.text_field=body"):
        assert annotation_sha256(load(override), IDENTITY) != same, override
    retrained = {"sentiment": {**IDENTITY["sentiment"], "weights_sha256": "w2"}}
    assert annotation_sha256(load(), retrained) != same


def test_run_date_may_be_written_as_a_yaml_date():
    assert load("output.run_date=2026-01-31").output.run_date == "2026-01-31"
