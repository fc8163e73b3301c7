"""One run against an output directory, around the pipeline itself: what the output already holds, which
shards to annotate, clean-up after a crashed run, the progress line, and the exit status a scheduler reads.

Exit status: 0 the run succeeded; 1 it failed (the pipeline raised, or documents went unaccounted for);
2 a mistake in the config or the command line; 3 it succeeded but dead-letter rows exceed
``output.max_failed_fraction`` of the output's documents; 4 another run holds the output directory."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, PortableOptions

from distilbeam.pipeline.config import Config
from distilbeam.pipeline.options import given, runner_name, worker_processes
from distilbeam.pipeline.plan import Plan, read_settings
from distilbeam.transforms import layout, report, state, storage
from distilbeam.transforms.progress import ProgressLine
from distilbeam.transforms.schema import ShardStats
from distilbeam.transforms.summary import run_summary

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_DEAD_LETTER = 3
EXIT_LOCKED = 4
EXIT_STATUS = {"ok": EXIT_OK, "incomplete": EXIT_FAILED, "dead_letter_exceeded": EXIT_DEAD_LETTER}
LOCAL_RUNNERS = {
    "DirectRunner",
    "direct",
    "SwitchingDirectRunner",
    "BundleBasedDirectRunner",
    "FnApiRunner",
    "PrismRunner",
    "prism",
}


def choose_shards(
    plan: Plan, run_id: str, full_refresh: bool, progress_dir: str | None, read_output: bool = True
) -> Plan:
    """The plan narrowed to the shards this run annotates, with the run's settings. This also removes what
    a crashed run left behind and, after a settings change or with --full-refresh, the outputs of shards
    that are no longer among the inputs. Without ``read_output`` (a dry run) the output is neither read
    nor changed, and every shard counts as new."""
    cfg = plan.cfg
    out = cfg.output.location
    read = read_settings(cfg)
    identities = state.identify_shards([read.location(s.uri) for s in plan.shards])
    entries = state.read_entries(out) if read_output else {}
    removed = state.remove_unreferenced(out, entries) if read_output else []
    if removed:
        log.info("removed %d files an interrupted run left behind: %s", len(removed), ", ".join(removed[:5]))
    annotation = plan.facts["annotation_sha256"]
    selection = state.select_shards(identities, entries, annotation, full_refresh)
    if selection.remove_stale:
        for entry in selection.stale:
            state.remove_shard_outputs(out, entry)
    elif selection.stale:
        log.info(
            "%d shards in the output are no longer among the inputs; their rows stay", len(selection.stale)
        )
    newest = max((e.run_id for e in entries.values()), default="")
    top = _read_json(out.join(layout.SUMMARY_FILE)) if newest else None
    summary_behind = bool(newest) and (top is None or str(top.get("run_id", "")) < newest)
    run_date = cfg.output.run_date or datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    carried = selection.kept + ([] if selection.remove_stale else selection.stale)
    todo = set(selection.todo)
    run = state.RunSettings(
        run_id=run_id,
        mode=cfg.output.mode,
        run_date=run_date,
        partition=layout.partition_folder(run_date) if cfg.output.partition_by == "run_date" else "",
        annotation_sha256=annotation,
        shards={uri: identities[uri] for uri in selection.todo},
        previous={uri: tuple(entries[uri].files()) for uri in selection.todo if uri in entries},
        carried=state.carried_counts(carried),
        selection=selection.counts(),
        max_failed_fraction=cfg.output.max_failed_fraction,
        started=plan.started,
        progress_dir=progress_dir,
        summary_behind=summary_behind,
    )
    return dataclasses.replace(plan, shards=[s for s in plan.shards if s.uri in todo], run=run)


# Worker threads of a local GPU run: one thread's host work (reading, tokenizing, writing) goes on while
# another's model calls run on the device. On a CPU one worker runs every core. Two worker threads of half
# the cores each overlap host work with model calls there too, and ran 1.10x faster on 2 cores (the demo
# models on 58,144 tweets in 8 shards, ``distilbeam bench --scale``), but with two shards in progress at
# once the first one is committed later (at 35% of the run, against 22%) and a worker holds two shards'
# rows (918 MB against 781 MB): a user who wants the speed asks for them with the DirectRunner's flags,
# as for processes, which are as fast and hold twice the memory.
GPU_LOCAL_WORKERS = 2


def choose_local_workers(plan: Plan, options: PipelineOptions) -> int:
    """How many splits a local run annotates side by side, set on the DirectRunner's options unless its
    flags already say (``direct_running_mode``, ``direct_num_workers``): on a GPU ``GPU_LOCAL_WORKERS``
    threads of one process (never more than the run has splits), on a CPU one worker. The handlers' torch
    threads follow, so that workers x threads = cores. Returns the number of workers."""
    handlers = [h for g in plan.groups for h in g.handlers]
    if runner_name(options) not in LOCAL_RUNNERS or given(
        options, "direct_running_mode", "direct_num_workers"
    ):
        workers = worker_processes(options)
    else:
        split_bytes = plan.cfg.input.split_mb and plan.cfg.input.split_mb * (1 << 20)
        splits = sum(_splits_of(uri, shard.size, split_bytes) for uri, shard in plan.run.shards.items())
        on_gpu = bool(handlers) and handlers[0].runtime.planned_device == "cuda"
        workers = max(1, min(GPU_LOCAL_WORKERS if on_gpu else 1, splits))
        if workers > 1:
            direct = options.view_as(DirectOptions)
            direct.direct_running_mode, direct.direct_num_workers = "multi_threading", workers
    for handler in handlers:
        handler.runtime = dataclasses.replace(handler.runtime, worker_processes=workers)
    return workers


def _splits_of(uri: str, size: int, split_bytes: float | None) -> int:
    if not split_bytes or storage.strip_compression(uri) != uri:
        return 1
    return max(1, math.ceil(size / split_bytes))


def record_idle_run(plan: Plan) -> dict[str, Any]:
    """A local run with nothing to annotate writes its summary and report under _state/runs/ and nothing
    else: the output stays byte for byte as it was. Unless an earlier run committed shards but died before
    its summary: then the top-level summary and report are brought up to date as well."""
    summary = run_summary(ShardStats(), report.Profile(), {}, plan.facts, plan.run, time.time())
    report.write_run_record(plan.cfg.output.location, summary, latest=plan.run.summary_behind)
    return summary


def _read_json(file: storage.Location) -> dict[str, Any] | None:
    fs, path = file.filesystem()
    fs.invalidate_cache()
    try:
        return json.loads(fs.cat_file(path))
    except (FileNotFoundError, ValueError):
        return None


def read_run_summary(cfg: Config, run_id: str) -> dict[str, Any] | None:
    return _read_json(layout.run_record_location(cfg.output.location, run_id, layout.RUN_SUMMARY))


def exit_status(summary: Mapping[str, Any]) -> int:
    return EXIT_STATUS.get(str(summary.get("status")), EXIT_FAILED)


def runs_locally(options: PipelineOptions) -> bool:
    """Whether the pipeline's workers share this machine, so they can leave progress files for it."""
    runner = runner_name(options)
    if runner in LOCAL_RUNNERS:
        return True
    return runner == "PortableRunner" and options.view_as(PortableOptions).environment_type == "LOOPBACK"


class Progress:
    """The progress line's folder and thread for a local run; does nothing for a remote one."""

    def __init__(self, enabled: bool):
        self.dir = tempfile.mkdtemp(prefix="distilbeam-progress-") if enabled else None
        self._line: ProgressLine | None = None

    def start(self, plan: Plan) -> None:
        if self.dir and plan.run is not None:
            total = sum(s.size for s in plan.run.shards.values())
            self._line = ProgressLine(self.dir, total).start()

    def stop(self) -> None:
        if self._line is not None:
            self._line.stop()
            self._line = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
