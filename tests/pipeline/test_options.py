"""Worker processes per machine, from the Beam options of each runner, and the torch threads each gets."""

from __future__ import annotations

import os

import pytest

from distilbeam.pipeline.options import ONE_PER_CORE, pipeline_options, worker_processes
from distilbeam.transforms.tasks import Runtime

CORES = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("flags", "processes"),
    [
        ([], 1),
        (["--runner=DirectRunner"], 1),
        (["--direct_num_workers=3", "--direct_running_mode=multi_processing"], 3),
        (["--direct_num_workers=0", "--direct_running_mode=multi_processing"], os.cpu_count()),
        (["--direct_num_workers=4", "--direct_running_mode=multi_threading"], 4),  # threads sharing cores
        (["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"], 1),
        (["--runner=FlinkRunner", "--sdk_worker_parallelism=4"], 4),
        (["--runner=FlinkRunner", "--sdk_worker_parallelism=0"], 1),
        (["--runner=DataflowRunner"], ONE_PER_CORE),
        (["--runner=DataflowRunner", "--experiments=no_use_multiple_sdk_containers"], 1),
    ],
)
def test_worker_processes(flags, processes):
    assert worker_processes(pipeline_options({}, flags)) == processes


def test_config_beam_section_counts_like_flags():
    section = {"direct_num_workers": 2, "direct_running_mode": "multi_processing"}
    assert worker_processes(pipeline_options(section, [])) == 2


@pytest.mark.parametrize("processes", [1, 2, 3, CORES, CORES * 2])
def test_threads_divide_the_cores_between_processes(processes):
    threads = Runtime(worker_processes=processes).threads()
    assert threads == max(1, CORES // processes)
    assert processes * threads <= max(CORES, processes)


def test_one_process_per_core_gets_one_thread_and_configured_threads_win():
    assert Runtime(worker_processes=ONE_PER_CORE).threads() == 1
    assert Runtime(torch_threads=3, worker_processes=ONE_PER_CORE).threads() == 3
