"""The whole pipeline on one screen: shards are cut into splits, each split is read, annotated with every task
and written to Parquet in one step (documents never cross a shuffle), and the splits' small results add up
to the run's summary and report."""

from __future__ import annotations

import dataclasses
import os

import apache_beam as beam

from distilbeam.pipeline.plan import Plan, read_settings
from distilbeam.transforms import storage
from distilbeam.transforms.annotate import AnnotateSplits
from distilbeam.transforms.read import Shard, Split, SplitShardFn
from distilbeam.transforms.summary import WriteRunReport
from distilbeam.transforms.write import WriteSettings


def build(p: beam.Pipeline, plan: Plan) -> beam.PCollection:
    cfg = plan.cfg
    read = read_settings(cfg)
    out = dataclasses.replace(cfg.output.location, url=worker_path(cfg.output.path))
    write = WriteSettings(
        out, plan.schema, cfg.output.keep_text, cfg.output.compression, run=plan.run, tasks=tuple(cfg.tasks)
    )
    sizes = {uri: shard.size for uri, shard in plan.run.shards.items()}
    split_bytes = None if cfg.input.split_mb is None else round(cfg.input.split_mb * (1 << 20))
    return (
        p
        | "ListShards" >> beam.Create(plan.shards).with_output_types(Shard)
        | "SpreadShards" >> beam.Reshuffle().with_output_types(Shard)
        | "SplitShards" >> beam.ParDo(SplitShardFn(read, split_bytes, sizes)).with_output_types(Split)
        | "SpreadSplits" >> beam.Reshuffle().with_output_types(Split)
        | "AnnotateSplits" >> AnnotateSplits(plan.groups, read, write, cfg.batching.sort_window)
        | "WriteRunReport" >> WriteRunReport(out, plan.facts, plan.run)
    )


def worker_path(path: str) -> str:
    """A local path as workers get it: absolute, since a worker may run in another directory."""
    return os.path.abspath(path.removeprefix("file://")) if storage.is_local(path) else path
