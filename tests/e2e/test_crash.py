"""Crash safety: a run killed with SIGKILL at any moment (inside the pipeline at the points tests/crashes.py
names, including half-way through writing a file and between writing a shard and committing it, or after a
random delay) and run again ends with exactly the documents of a clean run, each once; nothing half-written
is ever visible, and each re-run annotates only the shards the killed run had not committed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import REPO, run_cli
from tests.crashes import POINTS, inject, run_crashing
from tests.e2e import helpers as h

SHARDS, DOCS = 6, 3
# Each run is killed at one point, then the next run (the same command) resumes, until the last finishes.
# Every shard has a dead-letter row (a line over input.max_chars), so every point is reached in every run.
CHAIN = [
    ("annotate:2", 0),  # documents annotated, nothing written yet
    ("after_entry:2", 2),  # two shards committed
    ("write_data:2", 1),  # one shard committed, the next one's file torn half-way through writing
    ("after_errors:1", 0),  # a shard's files in place, its manifest entry not yet
    ("before_summary", None),  # every remaining shard committed, the summary not yet written
]


def test_a_crash_point_kills_on_its_nth_passage():
    code = (
        "from tests.crashes import Countdown\n"
        "countdown = Countdown(3)\n"
        "for i in range(1, 5):\n"
        "    print(i, flush=True)\n"
        "    countdown.count(0)\n"
        "    countdown.count()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.split() == ["1", "2", "3"]


def test_every_crash_point_is_reached_by_a_test():
    chained = {point.split(":")[0] for point, _ in CHAIN}
    assert set(POINTS) - chained == {"after_data"}  # tests/e2e/test_split_shards.py kills there
    with pytest.raises(ValueError, match="unknown crash point 'nowhere'"):
        inject("nowhere")


def long_corpus(directory):
    paths = h.corpus(directory, shards=SHARDS, docs=DOCS, bad=False)
    for path in paths:  # one record per shard over input.max_chars: a dead-letter row in every shard
        line = (
            json.dumps({"id": f"{path.stem}-long", "text": "x" * 300}) + "\n"
            if path.suffix == ".jsonl"
            else "y" * 300 + "\n"
        )
        path.write_text(path.read_text() + line)
    return paths


def crash_config(models_dir, inputs, out, **output):
    cfg = h.config(models_dir, inputs, out, **output)
    cfg["input"]["max_chars"] = 200
    cfg["beam"] = {"direct_num_workers": 1}  # one split at a time: the Nth crash point falls where counted
    return cfg


def check_visible_state(out, crash: str) -> None:
    """What a reader sees after a crash: only complete files, no document twice, and every committed
    shard's files present with the counts its manifest entry records."""
    for path in h.data_files(out) + h.error_files(out):
        pq.read_table(path)  # a torn file would not parse
    keys = [(r[0], r[1]) for r in h.rows(out)]
    assert len(keys) == len(set(keys)), crash
    for e in h.entries(out).values():
        assert pq.read_metadata(out / e["outputs"][0]).num_rows == e["docs_written"], crash
        assert pq.read_metadata(out / e["errors"][0]).num_rows == e["docs_failed"] == 1, crash


@pytest.fixture(scope="module")
def clean(models_dir, tmp_path_factory):
    """The corpus, and the output of a run that nobody killed, with how long that run took."""
    root = tmp_path_factory.mktemp("crash")
    inputs, out = root / "in", root / "clean"
    long_corpus(inputs)
    cfg = root / "clean.yaml"
    cfg.write_text(yaml.safe_dump(crash_config(models_dir, inputs, out)))
    started = time.monotonic()
    done = run_cli("run", "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    assert len(h.annotations(out)) == SHARDS * DOCS and len(h.dead_rows(out)) == SHARDS
    return inputs, out, time.monotonic() - started


def test_killed_runs_resume_to_exactly_the_documents_of_a_clean_run(
    models_dir, write_config, tmp_path, clean
):
    inputs, clean_out, _ = clean
    expected = h.annotations(clean_out)
    out = tmp_path / "out"
    cfg = write_config(crash_config(models_dir, inputs, out))
    for point, commits in CHAIN:
        before = h.entries(out)
        before_mtimes = {s: (out / e["outputs"][0]).stat().st_mtime_ns for s, e in before.items()}
        killed = run_crashing(point, "run", "--config", str(cfg))
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr[-2000:])
        check_visible_state(out, point)
        after = h.entries(out)
        new = {s for s, e in after.items() if s not in before or e["run_id"] != before[s]["run_id"]}
        assert not new & set(before), point  # committed shards were not annotated again
        for source, e in before.items():
            assert after[source] == e and (out / e["outputs"][0]).stat().st_mtime_ns == before_mtimes[source]
        if commits is not None:
            assert len(new) == commits, (point, new)
        else:
            assert len(after) == SHARDS, point
    final = run_cli("run", "--config", str(cfg))
    assert final.returncode == 0, final.stderr
    assert "nothing to annotate (6 kept)" in final.stdout  # the killed runs committed everything
    assert_same_as_clean(out, clean_out, expected)


def test_a_kill_at_a_random_moment_resumes_to_the_documents_of_a_clean_run(
    models_dir, write_config, tmp_path, clean
):
    inputs, clean_out, clean_seconds = clean
    expected = h.annotations(clean_out)
    out = tmp_path / "out"
    cfg = write_config(crash_config(models_dir, inputs, out))
    rng = random.Random(7)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-m", "distilbeam.pipeline.cli", "run", "--config", str(cfg)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(rng.uniform(0.3, 0.95) * clean_seconds)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    check_visible_state(out, "random")

    uncommitted = {str(p) for p in inputs.iterdir()} - set(h.entries(out))
    final = run_cli("run", "--config", str(cfg))
    assert final.returncode == 0, final.stderr
    assert h.run_summary(out, final.stdout)["shards"] == len(uncommitted)
    assert_same_as_clean(out, clean_out, expected)


def test_a_kill_half_way_keeps_the_shards_committed_before_it(models_dir, write_config, tmp_path, clean):
    """Shards are committed as they are done: killed while annotating the fourth of six shards, a run has
    committed three (a run that committed only at its end would have committed none), and the next run
    annotates the other three alone."""
    inputs, clean_out, _ = clean
    expected = h.annotations(clean_out)
    out = tmp_path / "out"
    cfg = write_config(crash_config(models_dir, inputs, out))
    per_shard = DOCS + 1  # annotated documents and the dead-lettered one
    killed = run_crashing(f"annotate:{3 * per_shard + 1}", "run", "--config", str(cfg))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    check_visible_state(out, "half-way")
    committed = h.entries(out)
    assert len(committed) == 3
    final = run_cli("run", "--config", str(cfg))
    assert final.returncode == 0, final.stderr
    assert h.run_summary(out, final.stdout)["selection"]["kept"] == 3
    assert {s: e for s, e in h.entries(out).items() if s in committed} == committed  # not redone
    assert_same_as_clean(out, clean_out, expected)


def assert_same_as_clean(out, clean_out, expected) -> None:
    assert h.annotations(out) == expected  # every document once, annotated as in the clean run
    assert h.dead_rows(out) == h.dead_rows(clean_out)
    assert len(h.entries(out)) == SHARDS
    leftovers = [p.name for p in out.rglob("*") if p.name.endswith((".tmp", ".stale"))]
    assert leftovers == [] and not (out / "_state" / "lock.json").exists()
    assert {p.relative_to(out).as_posix() for p in h.data_files(out) + h.error_files(out)} == {
        p.relative_to(clean_out).as_posix() for p in h.data_files(clean_out) + h.error_files(clean_out)
    }
    summary = h.snapshot(out)["_SUMMARY.json"]
    assert b'"docs_read": %d' % (SHARDS * (DOCS + 1)) in summary  # the output totals, brought up to date


def test_a_kill_after_moving_a_shard_to_a_new_partition_is_cleaned_up(models_dir, write_config, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    paths = h.corpus(inputs, shards=2, bad=False)
    day1 = write_config(h.config(models_dir, inputs, out, partition_by="run_date", run_date="2026-05-01"))
    assert run_cli("run", "--config", str(day1)).returncode == 0

    with paths[1].open("a") as f:
        f.write("Carol opened a museum in Oslo.\n")
    day2 = write_config(
        h.config(models_dir, inputs, out, partition_by="run_date", run_date="2026-05-02"), "d2.yaml"
    )
    killed = run_crashing("after_entry", "run", "--config", str(day2))
    assert killed.returncode == -signal.SIGKILL
    # Committed to the new partition, the old file not yet removed: the manifest lists each shard once.
    assert sorted(e["outputs"][0].split("/")[0] for e in h.entries(out).values()) == [
        "run_date=2026-05-01",
        "run_date=2026-05-02",
    ]
    assert len(h.data_files(out)) == 3

    again = run_cli("run", "--config", str(day2))
    assert again.returncode == 0, again.stderr
    assert "nothing to annotate (2 kept)" in again.stdout
    assert len(h.data_files(out)) == 2
    ids = [r[2] for r in h.rows(out)]
    assert len(ids) == 9 and len(set(ids)) == 9
