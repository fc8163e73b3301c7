"""Beam's ``PipelineOptions`` from the config's ``beam:`` section and the flags given on the command line
(the command line wins)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, PortableOptions


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


def worker_processes(options: PipelineOptions) -> int:
    """Processes one machine runs the pipeline in, so torch threads can divide its cores between them."""
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode == "multi_processing":
        return max(1, direct.direct_num_workers or 1)
    parallelism = int(options.view_as(PortableOptions).sdk_worker_parallelism or 1)  # 0: the runner's choice
    return max(1, parallelism)
