"""A local run keeps every core busy: as many worker threads as it has splits to annotate side by side, up to
the cores, with the cores divided between them as torch threads; a user's own runner flags win."""

from __future__ import annotations

import gzip

import pytest
from apache_beam.options.pipeline_options import DirectOptions

from pipeline import runs
from pipeline.config import from_dict
from pipeline.options import pipeline_options
from pipeline.plan import prepare


@pytest.fixture
def plan_for(models_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "cpu_cores", lambda: 4)
    monkeypatch.setattr("transforms.devices.cpu_cores", lambda: 4)

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


def test_many_shards_one_worker_thread_per_core(plan_for):
    plan = plan_for({f"{i}.txt": b"hello\n" for i in range(8)})
    assert workers_and_threads(plan) == (4, 1, "multi_threading")


def test_one_shard_one_worker_on_every_core(plan_for):
    plan = plan_for({"a.txt": b"hello\n"})
    assert workers_and_threads(plan) == (1, 4, "in_memory")


def test_a_large_shard_counts_as_its_splits(plan_for):
    big = b"hello there\n" * 30_000  # about 350 KB: four splits of 0.1 MiB, read side by side
    assert workers_and_threads(plan_for({"a.txt": big}, split_mb=0.1))[:2] == (4, 1)
    compressed = gzip.compress(big)  # read whole
    assert workers_and_threads(plan_for({"b.txt.gz": compressed}, split_mb=0.001, format="text"))[:2] == (
        1,
        4,
    )


def test_the_users_runner_flags_win(plan_for):
    plan = plan_for({f"{i}.txt": b"hello\n" for i in range(8)})
    assert workers_and_threads(plan, ["--direct_num_workers=1"]) == (1, 4, "in_memory")
    flags = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    assert workers_and_threads(plan, flags) == (2, 2, "multi_processing")
