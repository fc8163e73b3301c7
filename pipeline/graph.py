"""The whole pipeline on one screen: read shards, annotate them with every task, write Parquet."""

from __future__ import annotations

import os

import apache_beam as beam

from pipeline.plan import Plan, read_settings
from transforms import storage
from transforms.annotate import AnnotateDocuments
from transforms.progress import TrackProgressFn
from transforms.read import ReadShards
from transforms.write import WriteEnrichedParquet, WriteSettings


def build(p: beam.Pipeline, plan: Plan) -> beam.PCollection:
    cfg = plan.cfg
    read = p | "ReadShards" >> ReadShards(plan.shards, read_settings(cfg))
    docs = read.docs | "SpreadDocuments" >> beam.Reshuffle()
    annotated = docs | "AnnotateDocuments" >> AnnotateDocuments(
        plan.groups, cfg.batching.max_tokens, cfg.batching.sort_window
    )
    failed = (read.failed, annotated["failed"]) | "AllFailures" >> beam.Flatten()
    write = WriteSettings(
        worker_path(cfg.output.path),
        plan.schema,
        cfg.output.keep_text,
        cfg.output.compression,
        cfg.output.storage_options,
        run=plan.run,
        tasks=tuple(cfg.tasks),
    )
    outputs = {"docs": annotated["annotated"], "failed": failed, "counts": read.counts}
    if plan.run is not None:  # finished documents per second for the report, and the local progress line
        sizes = {uri: shard.size for uri, shard in plan.run.shards.items()}
        outputs["timeline"] = (
            (annotated["annotated"], failed, read.counts)
            | "Finished" >> beam.Flatten()
            | "TrackProgress" >> beam.ParDo(TrackProgressFn(plan.run.progress_dir, sizes))
        )
    return outputs | "WriteEnrichedParquet" >> WriteEnrichedParquet(write, plan.facts, plan.started)


def worker_path(path: str) -> str:
    """A local path as workers get it: absolute, since a worker may run in another directory."""
    return os.path.abspath(path.removeprefix("file://")) if storage.is_local(path) else path
