"""Scheduled runs with input and output in S3 (a moto server on loopback): the manifest records S3 ETags,
a second run annotates nothing, and the lock works on a store with no exclusive create."""

from __future__ import annotations

import json

import pytest
import yaml

from distilbeam.transforms import lock
from distilbeam.transforms.storage import Location
from tests.conftest import run_cli


@pytest.fixture
def s3(monkeypatch):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    if not fs.exists("corpus"):  # moto keeps its buckets in this process, from server to server
        fs.mkdir("corpus")
    yield fs, env
    server.stop()


def test_incremental_runs_on_s3(s3, models_dir, tmp_path):
    fs, env = s3
    fs.pipe(
        "corpus/in/a.jsonl", b'{"id": "a1", "text": "Alice flew to Oslo."}\n{"id": "a2", "text": "Fine."}\n'
    )
    fs.pipe("corpus/in/b.txt", b"Bob liked the museum.\nThe train was late.\n")
    cfg = tmp_path / "s3.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "input": {"paths": ["s3://corpus/in/*"]},
                "tasks": {"sentiment": {"kind": "classify", "model": str(models_dir / "classifier")}},
                "output": {"path": "s3://corpus/out", "mode": "incremental", "partition_by": "run_date"},
            }
        )
    )
    first = run_cli("run", "--config", str(cfg), env=env)
    assert first.returncode == 0, first.stderr
    fs.invalidate_cache()
    names = sorted(fs.find("corpus/out/_state/shards"))
    entries = [json.loads(fs.cat(n)) for n in names]
    assert [e["identity"].split(":")[0] for e in entries] == ["ETag", "ETag"]
    assert sum(e["docs_written"] for e in entries) == 4
    before = {p: fs.cat(p) for p in fs.find("corpus/out") if "/_state/runs/" not in p}
    assert not any(p.endswith("lock.json") for p in before)

    second = run_cli("run", "--config", str(cfg), env=env)
    assert second.returncode == 0, second.stderr
    assert "nothing to annotate (2 kept)" in second.stdout
    fs.invalidate_cache()
    assert {p: fs.cat(p) for p in fs.find("corpus/out") if "/_state/runs/" not in p} == before


def test_lock_on_s3_refuses_a_second_run(s3):
    fs, _ = s3
    with lock.OutputLock(Location("s3://corpus/locked"), "run-1"):
        assert json.loads(fs.cat("corpus/locked/_state/lock.json"))["run_id"] == "run-1"
        with pytest.raises(lock.OutputLocked, match="in use by run run-1"):
            lock.OutputLock(Location("s3://corpus/locked"), "run-2").acquire()
    fs.invalidate_cache()
    assert not fs.exists("corpus/locked/_state/lock.json")
