"""Scheduled runs through the CLI: a second identical run annotates nothing and leaves the output byte for
byte; a new shard alone is annotated; a changed model re-annotates every shard; the exit status tells a
scheduler about dead letters and about a run already in progress."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pyarrow.parquet as pq

from tests.conftest import REPO, run_cli
from tests.e2e import helpers as h


def test_rerun_annotates_nothing_and_a_new_shard_alone_is_annotated(models_dir, write_config, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    h.corpus(inputs, shards=2)
    cfg = write_config(h.config(models_dir, inputs, out))

    first = run_cli("run", "--config", str(cfg))
    assert first.returncode == 0, first.stderr
    assert "distilbeam: progress: 9 / 9 documents (100%)" in first.stderr  # 8 annotated, 1 dead-lettered
    s1 = h.run_summary(out, first.stdout)
    assert (s1["status"], s1["shards"], s1["selection"]["new"]) == ("ok", 2, 2)
    assert len(h.rows(out)) == 8 and len(h.dead_rows(out)) == 1
    assert {e["run_id"] for e in h.entries(out).values()} == {s1["run_id"]}
    check_report_matches_output(out, s1)
    before, before_mtimes = h.snapshot(out), h.mtimes(out)

    second = run_cli("run", "--config", str(cfg))
    assert second.returncode == 0, second.stderr
    assert "nothing to annotate (2 kept)" in second.stdout
    s2 = h.run_summary(out, second.stdout)
    assert (s2["shards"], s2["docs_read"], s2["output"]["docs_read"]) == (0, 0, 9)
    assert h.snapshot(out) == before and h.mtimes(out) == before_mtimes  # not a byte rewritten
    assert (out / "_state" / "runs" / s2["run_id"] / "report.html").exists()

    strict = run_cli("run", "--config", str(cfg), "--set", "output.max_failed_fraction=0.05")
    assert strict.returncode == 3, strict.stderr  # 1 of 9 documents dead-lettered: over 5%
    assert "1 of the output's 9 documents are dead-lettered (11.11%)" in strict.stderr
    assert h.run_summary(out, strict.stdout)["status"] == "dead_letter_exceeded"
    assert h.snapshot(out) == before

    h.write_jsonl(
        inputs / "shard9.jsonl",
        [{"id": "new1", "text": "Bob flew to Tokyo."}, {"id": "new2", "text": "Fine."}],
    )
    third = run_cli("run", "--config", str(cfg))
    assert third.returncode == 0, third.stderr
    s3 = h.run_summary(out, third.stdout)
    assert (s3["shards"], s3["docs_read"], s3["selection"]["new"], s3["selection"]["kept"]) == (1, 2, 1, 2)
    after = h.snapshot(out)
    for name, data in before.items():  # the two earlier shards' files are untouched
        if name.endswith(".parquet"):
            assert after[name] == data, name
    by_run = {e["source"].rsplit("/", 1)[-1]: e["run_id"] for e in h.entries(out).values()}
    assert by_run == {"shard0.jsonl": s1["run_id"], "shard1.txt": s1["run_id"], "shard9.jsonl": s3["run_id"]}
    ids = [r[2] for r in h.rows(out)]
    assert len(ids) == 10 and len(set(ids)) == 10
    top = json.loads((out / "_SUMMARY.json").read_text())
    assert top["run_id"] == s3["run_id"] and top["output"]["docs_read"] == 11 and top["output"]["shards"] == 3


def check_report_matches_output(out, summary):
    """The report's statistics, gathered while writing, agree with the output read back with DuckDB."""
    profile = summary["profile"]
    labels = dict(h.duck(out, "select sentiment.label, count(*) from docs group by 1"))
    assert profile["labels"]["sentiment"] == labels
    entities = dict(h.duck(out, "select e.label, count(*) from docs, unnest(entities) as t(e) group by 1"))
    assert profile["entities"].get("entities", {}) == entities
    assert profile["tokens"] == h.duck(out, "select sum(n_tokens) from docs")[0][0] == summary["tokens"]
    assert sum(profile["lengths"].values()) == 8
    assert profile["dead_letter"] == {"parse": {"JSONDecodeError": 1}}
    md = (out / "_REPORT.md").read_text()
    assert f"# distilbeam run {summary['run_id']}" in md and "| parse | JSONDecodeError | 1 |" in md
    page = (out / "_REPORT.html").read_text()
    assert page.count("<svg") == 3 + bool(entities) and "<script" not in page
    for name in ("summary.json", "report.md", "report.html"):
        assert (out / "_state" / "runs" / summary["run_id"] / name).exists()


def test_a_changed_model_reannotates_every_shard_into_the_new_partition(models_dir, write_config, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    h.corpus(inputs, shards=2)
    day1 = h.config(models_dir, inputs, out, partition_by="run_date", run_date="2026-03-01")
    first = run_cli("run", "--config", str(write_config(day1)))
    assert first.returncode == 0, first.stderr
    assert {p.parent.name for p in h.data_files(out) + h.error_files(out)} == {"run_date=2026-03-01"}

    day2 = h.config(models_dir, inputs, out, partition_by="run_date", run_date="2026-03-02")
    day2["tasks"]["sentiment"]["model"] = str(models_dir / "single-logit")
    second = run_cli("run", "--config", str(write_config(day2, "day2.yaml")))
    assert second.returncode == 0, second.stderr
    s2 = h.run_summary(out, second.stdout)
    assert (s2["shards"], s2["selection"]["config"], s2["selection"]["kept"]) == (2, 2, 0)
    assert {e["run_id"] for e in h.entries(out).values()} == {s2["run_id"]}
    assert sorted(
        p.relative_to(out).as_posix().split("/part-")[0] for p in h.data_files(out) + h.error_files(out)
    ) == [
        "_errors/run_date=2026-03-02",
        "run_date=2026-03-02",
        "run_date=2026-03-02",
    ]
    assert (
        not (out / "run_date=2026-03-01").exists() and not (out / "_errors" / "run_date=2026-03-01").exists()
    )
    assert h.duck(out, "select distinct sentiment.label from docs") == [("relevant",)]
    ids = [r[2] for r in h.rows(out)]
    assert len(ids) == 8 and len(set(ids)) == 8
    metadata = pq.read_schema(h.data_files(out)[0]).metadata
    assert metadata[b"distilbeam.annotation_sha256"].decode() == s2["annotation_sha256"]


def test_a_run_refuses_an_output_another_run_holds_until_that_run_dies(models_dir, write_config, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    h.corpus(inputs, shards=1)
    cfg = write_config(h.config(models_dir, inputs, out))
    holder = subprocess.Popen(  # another process holding the output's lock, as a running run does
        [sys.executable, "-c", HOLD_LOCK, str(out)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused = run_cli("run", "--config", str(cfg))
        assert refused.returncode == 4
        assert "output.path is in use by run 20260101T000000Z-other" in refused.stderr.splitlines()[-1]
        assert not h.data_files(out)
    finally:
        holder.send_signal(signal.SIGKILL)  # the holder dies without releasing its lock
        holder.wait()
    assert (out / "_state" / "lock.json").exists()
    taken_over = run_cli("run", "--config", str(cfg))
    assert taken_over.returncode == 0, taken_over.stderr
    assert "taking over the stale lock of run 20260101T000000Z-other" in taken_over.stderr
    assert len(h.rows(out)) == 4 and not (out / "_state" / "lock.json").exists()


HOLD_LOCK = """
import sys, time
import distilbeam.transforms.lock as lock
from distilbeam.transforms.storage import Location
lock.OutputLock(Location(sys.argv[1]), "20260101T000000Z-other").acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_output_folders_holding_other_files_are_refused(models_dir, write_config, tmp_path, capsys):
    from distilbeam.pipeline import cli

    inputs, out = tmp_path / "in", tmp_path / "out"
    h.corpus(inputs, shards=1)
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for mode in ("overwrite", "incremental"):
        cfg = h.config(models_dir, inputs, out)
        cfg["output"]["mode"] = mode
        assert cli.main(["run", "--config", str(write_config(cfg))]) == 2
        assert "is not empty" in capsys.readouterr().err, mode
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # the lock came and went


def test_with_nothing_new_a_remote_runner_still_gets_a_job_that_leaves_the_output(
    models_dir, write_config, tmp_path, monkeypatch, capsys
):
    """A Flex Template launch expects a job even on a night with nothing new: on a runner that is not local
    the (empty) pipeline runs, records the run, and leaves the output's files as they were."""
    from distilbeam.pipeline import cli, runs

    inputs, out = tmp_path / "in", tmp_path / "out"
    h.corpus(inputs, shards=1)
    cfg = write_config(h.config(models_dir, inputs, out))
    assert cli.main(["run", "--config", str(cfg)]) == 0
    before = h.snapshot(out)
    built = []
    monkeypatch.setattr(runs, "runs_locally", lambda options: False)
    monkeypatch.setattr(runs, "record_idle_run", lambda plan: built.append("idle"))
    assert cli.main(["run", "--config", str(cfg)]) == 0
    assert built == []  # the pipeline ran instead of the local shortcut
    summary = h.run_summary(out, capsys.readouterr().out.split("\n")[-2])
    assert (summary["status"], summary["shards"], summary["selection"]["kept"]) == ("ok", 0, 1)
    assert h.snapshot(out) == before
