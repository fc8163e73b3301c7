"""Beam's ``PipelineOptions`` from the config's ``beam:`` section and the flags given on the command line
(the command line wins)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from apache_beam.options.pipeline_options import (
    DebugOptions,
    DirectOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
)

# ``worker_processes`` when the runner starts one SDK process per core of each worker machine.
ONE_PER_CORE = 0


def beam_flags(section: Mapping[str, Any]) -> list[str]:
    flags = []
    for key, value in section.items():
        if isinstance(value, bool):
            if value:
                flags.append(f"--{key}")
        elif isinstance(value, list | tuple):
            flags += [f"--{key}={v}" for v in value]
        elif value is not None:
            flags.append(f"--{key}={value}")
    return flags


def pipeline_options(section: Mapping[str, Any], argv: Sequence[str]) -> PipelineOptions:
    return PipelineOptions([*beam_flags(section), *argv])


def runner_name(options: PipelineOptions) -> str:
    return (options.view_as(StandardOptions).runner or "DirectRunner").rsplit(".", 1)[-1]


def worker_processes(options: PipelineOptions) -> int:
    """Workers (processes, or the DirectRunner's threads) that run user code side by side on one machine,
    so torch threads can divide its cores between them (workers x threads <= cores); ``ONE_PER_CORE`` when
    the runner starts one process per core."""
    runner = runner_name(options)
    if runner == "DataflowRunner":
        # Dataflow runs one Python SDK process per vCPU unless told to run a single one (the GPU setup).
        experiments = options.view_as(DebugOptions).experiments or []
        return 1 if "no_use_multiple_sdk_containers" in experiments else ONE_PER_CORE
    direct = options.view_as(DirectOptions)
    if runner in ("DirectRunner", "FnApiRunner") and direct.direct_running_mode != "in_memory":
        # multi_processing or multi_threading; direct_num_workers=0 means one worker per core.
        return direct.direct_num_workers or os.cpu_count() or 1
    # Portable runners (Flink, a worker pool) start sdk_worker_parallelism SDK processes per worker.
    # (0 lets the runner choose; count it as one.)
    return max(1, int(options.view_as(PortableOptions).sdk_worker_parallelism or 1))


def given(options: PipelineOptions, *names: str) -> bool:
    """Whether any of these options was given as a flag (or in the config's ``beam:`` section), even at its
    default value, which Beam's own view of the options cannot tell apart from one left unset."""
    flags = getattr(options, "_flags", None) or []
    return any(f == f"--{n}" or f.startswith(f"--{n}=") for f in flags for n in names)
