"""The performance keys of the config: the token budget (auto by device, or an integer that is honoured),
int8 precision (CPU only), torch threads; and how many worker processes share the machine's cores."""

from __future__ import annotations

import pytest

from distilbeam.pipeline.config import ConfigError, from_dict
from distilbeam.pipeline.options import pipeline_options, worker_processes


def config(**sections):
    data = {
        "input": {"paths": ["in.jsonl"]},
        "tasks": {"sentiment": {"kind": "classify", "model": "m"}},
        "output": {"path": "out"},
    }
    data.update(sections)
    return from_dict(data)


def test_the_token_budget_is_chosen_by_device_unless_set():
    assert config().batching.max_tokens == "auto"
    assert config(batching={"max_tokens": "auto"}).batching.max_tokens == "auto"
    assert config(batching={"max_tokens": 8192}).batching.max_tokens == 8192


@pytest.mark.parametrize("value", ["lots", 1.5, True, [2048]])
def test_a_budget_that_is_neither_a_number_nor_auto_is_refused(value):
    with pytest.raises(ConfigError, match=r"batching\.max_tokens: expected an integer or auto"):
        config(batching={"max_tokens": value})


def test_a_budget_must_be_positive():
    with pytest.raises(ConfigError, match=r"batching\.max_tokens: must be a positive integer, got 0"):
        config(batching={"max_tokens": 0})


def test_int8_is_a_precision_and_runs_on_the_cpu_only():
    assert config(runtime={"precision": "int8"}).runtime.precision == "int8"
    assert config(runtime={"precision": "int8", "device": "cpu"}).runtime.device == "cpu"
    with pytest.raises(ConfigError, match=r"runtime\.precision: int8 runs on the CPU only"):
        config(runtime={"precision": "int8", "device": "cuda:0"})
    with pytest.raises(ConfigError, match=r"runtime\.precision: expected one of"):
        config(runtime={"precision": "int4"})


def test_torch_threads_are_configurable():
    assert config(runtime={"torch_threads": 3}).runtime.torch_threads == 3
    with pytest.raises(ConfigError, match=r"runtime\.torch_threads"):
        config(runtime={"torch_threads": 0})


@pytest.mark.parametrize(
    "flags,processes",
    [
        ([], 1),
        (["--direct_running_mode=multi_processing", "--direct_num_workers=2"], 2),
        (["--direct_running_mode=multi_threading", "--direct_num_workers=4"], 4),
        (["--sdk_worker_parallelism=3"], 3),
        (["--sdk_worker_parallelism=0"], 1),
    ],
)
def test_worker_processes_follow_the_runner_flags(flags, processes):
    assert worker_processes(pipeline_options({}, flags)) == processes
