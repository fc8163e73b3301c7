"""A local run keeps every core busy: workers x torch threads = cores. On a CPU one worker runs every core;
on a GPU two worker threads (never more than the run has splits) overlap one's host work with the other's
device work; a user's own runner flags win."""

from __future__ import annotations

import dataclasses
import gzip

import pytest
from apache_beam.options.pipeline_options import DirectOptions

from distilbeam.pipeline import runs
from distilbeam.pipeline.config import from_dict
from distilbeam.pipeline.options import pipeline_options
from distilbeam.pipeline.plan import prepare


@pytest.fixture
def plan_for(models_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("distilbeam.transforms.devices.cpu_cores", lambda: 4)

    def make(files: dict[str, bytes], **input_settings):
        folder = tmp_path / f"in-{len(list(tmp_path.glob('in-*')))}"
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        cfg = from_dict(
            {
                "input": {"paths": [str(folder / "*")], **input_settings},
                "tasks": {"s": {"kind": "classify", "model": str(models_dir / "classifier")}},
                "output": {"path": str(tmp_path / "out")},
            }
        )
        return runs.choose_shards(prepare(cfg), "run-1", False, None, read_output=False)

    return make


def workers_and_threads(plan, flags=()):
    options = pipeline_options({}, list(flags))
    workers = runs.choose_local_workers(plan, options)
    handler = plan.groups[0].handlers[0]
    return workers, handler.runtime.threads(), options.view_as(DirectOptions).direct_running_mode


def test_on_a_cpu_one_worker_runs_every_core(plan_for):
    assert workers_and_threads(plan_for({f"{i}.txt": b"hello\n" for i in range(8)})) == (1, 4, "in_memory")
    assert workers_and_threads(plan_for({"a.txt": b"hello\n"})) == (1, 4, "in_memory")


def test_on_a_gpu_two_worker_threads_when_there_are_two_splits(plan_for):
    def on_gpu(plan):
        for group in plan.groups:
            for handler in group.handlers:
                handler.runtime = dataclasses.replace(handler.runtime, planned_device="cuda")
        return plan

    assert workers_and_threads(on_gpu(plan_for({f"{i}.txt": b"hello\n" for i in range(8)}))) == (
        2,
        2,
        "multi_threading",
    )
    assert workers_and_threads(on_gpu(plan_for({"a.txt": b"hello\n"})))[:2] == (1, 4)
    big = b"hello there\n" * 30_000  # about 350 KB: four splits of 0.1 MiB
    assert workers_and_threads(on_gpu(plan_for({"a.txt": big}, split_mb=0.1)))[:2] == (2, 2)
    compressed = gzip.compress(big)  # read whole: one split
    plan = on_gpu(plan_for({"b.txt.gz": compressed}, split_mb=0.001, format="text"))
    assert workers_and_threads(plan)[:2] == (1, 4)


def test_the_users_runner_flags_win(plan_for):
    plan = plan_for({f"{i}.txt": b"hello\n" for i in range(8)})
    assert workers_and_threads(plan, ["--direct_num_workers=1"]) == (1, 4, "in_memory")
    flags = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    assert workers_and_threads(plan, flags) == (2, 2, "multi_processing")
