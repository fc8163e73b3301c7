"""The same pipeline on every runner a user moves through: the DirectRunner in one process and in several,
the portable runner with the SDK harness in the launching process (LOOPBACK) and in separate processes
started by a worker pool (EXTERNAL, as on Flink and Dataflow). Every run is the CLI a user runs; all must
write the same rows, the same dead letter and the same summary, load each model once per worker process,
and size torch threads so that processes x threads <= cores."""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, run_cli, write_jsonl

CORES = len(os.sched_getaffinity(0))
# What differs from run to run of the same job: its timing, and its run id and when it ran.
TIMING_KEYS = ("wall_seconds", "docs_per_second", "run_id", "started_at", "finished_at", "throughput")
REPORT = re.compile(r"task (\w+): model loaded (\d+) times by workers, ([\d-]+) torch threads each")

RUNNERS = {
    "direct": [],
    "direct-multiprocess": ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
    "portable-loopback": ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"],
    # The worker pool's address is added by the test.
    "portable-external": ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=EXTERNAL"],
}
# Workers each runner runs user code in side by side on this machine.
PROCESSES = {"direct": 1, "direct-multiprocess": 2, "portable-loopback": 1, "portable-external": 1}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, models_dir) -> Path:
    """A launch directory with a config whose paths are all relative to it, as users write them."""
    root = tmp_path_factory.mktemp("launch")
    (root / "shards").mkdir()
    write_jsonl(
        root / "shards" / "reviews.jsonl",
        [
            {"id": "r1", "text": "The hotel in Paris was lovely and the staff were very helpful."},
            {"id": "r2", "text": "Bob and Carol flew from Tokyo to Madrid with Initech."},
            {"id": "r3", "text": ""},
            {"id": "r4", "text": "one two three four five six seven eight nine ten " * 12},
            {"id": "r5", "text": None},  # dead letter: text is null
        ],
    )
    with gzip.open(root / "shards" / "news.jsonl.gz", "wt", encoding="utf-8") as f:
        for i in range(6):
            record = {"id": f"n{i}", "text": f"Alice visited the museum in Vienna on day {i}."}
            f.write(json.dumps(record) + "\n")
        f.write("{not json\n")  # dead letter: parse
    (root / "shards" / "notes.txt").write_text(
        "Grace wrote a boring book.\nGlobex opened a station in Oslo!\n\nVery good film, really.\n",
        encoding="utf-8",
    )
    (root / "models").symlink_to(models_dir, target_is_directory=True)
    config = {
        "input": {"paths": ["shards/*.jsonl*", "shards/*.txt"]},
        "tasks": {
            "sentiment": {"kind": "classify", "model": "models/classifier"},
            "entities": {"kind": "ner", "model": "models/ner", "aggregation": "simple"},
        },
        "batching": {"max_tokens": 256, "sort_window": 4},
        "runtime": {"device": "cpu"},
        "output": {"path": "out/placeholder"},
    }
    (root / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def worker_pool(tmp_path_factory):
    """A Beam worker pool in its own process, started from another directory than the launcher's: each job
    it serves runs in a fresh SDK-harness process, which imports distilbeam through PYTHONPATH."""
    cwd = tmp_path_factory.mktemp("pool")
    log_path = cwd / "pool.log"
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        # The pool starts its workers as `python`: the interpreter running these tests.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    with open(log_path, "wb") as log:
        pool = subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so its workers stop with it
        )
    try:
        _wait_for_port(port, pool, log_path)
        yield {"address": f"localhost:{port}", "log": log_path}
    finally:
        _stop_group(pool)


@pytest.fixture(scope="module")
def runs(workdir, worker_pool) -> dict[str, dict]:
    """Runs the CLI once per runner (one at a time: the machine is small) and keeps what each printed."""
    results = {}
    for name, flags in RUNNERS.items():
        if name == "portable-external":
            flags = [*flags, f"--environment_config={worker_pool['address']}"]
        out = f"out/{name}"
        started = time.monotonic()
        proc = run_cli(
            "run", "--config", "config.json", "--set", f"output.path={out}", *flags, cwd=workdir, timeout=300
        )
        assert proc.returncode == 0, f"{name}:\n{proc.stdout}\n{proc.stderr[-6000:]}"
        results[name] = {
            "out": workdir / out,
            "stderr": proc.stderr,
            "stdout": proc.stdout,
            "seconds": time.monotonic() - started,
        }
    return results


def test_every_runner_writes_the_same_rows(runs):
    reference = _rows(runs["direct"]["out"])
    assert reference.num_rows == 14  # 16 records, 2 dead-lettered
    for name, run in runs.items():
        rows = _rows(run["out"])
        assert rows.schema.equals(reference.schema), f"{name} wrote another schema than the DirectRunner"
        same = _close(rows.to_pylist(), reference.to_pylist())
        assert same, f"{name} wrote other rows than the DirectRunner"


def test_every_runner_writes_the_same_dead_letter_and_summary(runs):
    reference = runs["direct"]["out"]
    dead = _dead_letter(reference)
    assert sorted(dead.column("stage").to_pylist()) == ["parse", "parse"]
    summary = _summary(reference)
    assert (summary["docs_read"], summary["docs_written"], summary["docs_failed"]) == (16, 14, 2)
    for name, run in runs.items():
        assert _dead_letter(run["out"]).equals(dead), name
        assert _summary(run["out"]) == summary, name
        assert sorted(p.name for p in run["out"].glob("*.parquet")) == sorted(
            p.name for p in reference.glob("*.parquet")
        ), name


def test_rows_read_back_with_duckdb(runs):
    # Another reader sees the same thing in every runner's output: per shard, the same ids and labels.
    query = "select source, id, sentiment.label as label, len(entities) as n from '{}/*.parquet' order by all"
    reference = duckdb.sql(query.format(runs["direct"]["out"])).fetchall()
    assert len(reference) == 14
    for name, run in runs.items():
        assert duckdb.sql(query.format(run["out"])).fetchall() == reference, name


@pytest.mark.parametrize("name", list(RUNNERS))
def test_models_load_once_per_worker_process_with_threads_sized_to_cores(runs, name):
    report = {m[1]: (int(m[2]), m[3]) for m in REPORT.finditer(runs[name]["stderr"])}
    assert set(report) == {"sentiment", "entities"}, runs[name]["stderr"][-3000:]
    threads = str(max(1, CORES // PROCESSES[name]))
    for task, (loads, seen) in report.items():
        assert 1 <= loads <= PROCESSES[name], f"{name}: {task} loaded {loads} times"
        assert seen == threads, f"{name}: {task} ran with {seen} torch threads, expected {threads}"
        assert PROCESSES[name] * int(seen.split("-")[-1]) <= max(CORES, PROCESSES[name])


def test_external_environment_runs_user_code_in_the_pools_own_workers(runs, worker_pool):
    # The pool started an SDK harness process for the job: the models were loaded there, not in the CLI.
    assert "Starting worker with command" in worker_pool["log"].read_text(errors="replace")
    loads = [int(m[2]) for m in REPORT.finditer(runs["portable-external"]["stderr"])]
    assert loads and all(n >= 1 for n in loads)


def _rows(out: Path) -> pa.Table:
    table = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("part-*.parquet"))])
    return table.sort_by([("source", "ascending"), ("offset", "ascending")]).replace_schema_metadata(None)


def _close(a: object, b: object) -> bool:
    """Equal, but for float rounding: worker processes run torch with other thread counts and batches,
    so the same scores can differ in their last bits. Labels, spans, ids and counts must match exactly."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _dead_letter(out: Path) -> pa.Table:
    table = pa.concat_tables([pq.read_table(p) for p in sorted((out / "_errors").glob("*.parquet"))])
    return table.sort_by([("source", "ascending"), ("offset", "ascending")]).replace_schema_metadata(None)


def _summary(out: Path) -> dict:
    summary = json.loads((out / "_SUMMARY.json").read_text())
    return {k: v for k, v in summary.items() if k not in TIMING_KEYS}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"worker pool exited with {process.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"worker pool did not listen on port {port} within {timeout}s")


def _stop_group(process: subprocess.Popen) -> None:
    """Stops the pool and the SDK workers it started (its process group)."""
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
