"""Large shards through the CLI in splits: each split is a part file of its own, the shard's manifest entry
lists them all once the last split is done, and the rows are those of reading the shard whole, in a clean
run and after a run killed between splits."""

from __future__ import annotations

import signal

import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import run_cli, write_jsonl
from tests.crashes import run_crashing
from tests.e2e import helpers as h

SPLIT_MB = 0.002  # about 2 KB: the shards below are read in several splits


def corpus(directory):
    directory.mkdir(parents=True)
    texts = [
        f"Alice visited Paris on day {i} and the hotel was {'very ' * (i % 5)}lovely." for i in range(60)
    ]
    write_jsonl(directory / "big.jsonl", [{"id": f"j{i}", "text": t} for i, t in enumerate(texts)])
    with open(directory / "big.jsonl", "a") as f:
        f.write("{not json\n")
    table = pa.table({"id": [f"p{i}" for i in range(60)], "text": texts})
    pq.write_table(table, directory / "big.parquet", row_group_size=10)
    (directory / "small.txt").write_text("Bob went to Berlin.\n")


def test_split_shards_give_the_rows_of_whole_shards(models_dir, write_config, tmp_path):
    inputs = tmp_path / "in"
    corpus(inputs)
    whole_cfg = h.config(models_dir, inputs, tmp_path / "whole")
    whole_cfg["input"]["split_mb"] = None
    assert run_cli("run", "--config", str(write_config(whole_cfg, "whole.yaml"))).returncode == 0

    out = tmp_path / "split"
    cfg = h.config(models_dir, inputs, out)
    cfg["input"]["split_mb"] = SPLIT_MB
    path = write_config(cfg, "split.yaml")
    done = run_cli("run", "--config", str(path))
    assert done.returncode == 0, done.stderr
    assert h.annotations(out) == h.annotations(tmp_path / "whole")
    assert h.dead_rows(out) == h.dead_rows(tmp_path / "whole")
    entries = h.entries(out)
    for name in ("big.jsonl", "big.parquet"):
        e = entries[str(inputs / name)]
        assert len(e["outputs"]) > 1 and all(
            p.endswith(f"-{k:05d}.parquet") for k, p in enumerate(e["outputs"])
        )
        assert sum(pq.read_metadata(out / p).num_rows for p in e["outputs"]) == e["docs_written"]
    assert entries[str(inputs / "big.jsonl")]["docs_failed"] == 1
    assert len(entries[str(inputs / "small.txt")]["outputs"]) == 1  # small: read whole
    summary = h.run_summary(out, done.stdout)
    assert (summary["shards"], summary["docs_read"]) == (3, 122)
    assert not (out / "_state" / "splits").exists()

    again = run_cli("run", "--config", str(path))
    assert again.returncode == 0 and "nothing to annotate (3 kept)" in again.stdout


def test_a_run_killed_between_splits_leaves_the_shard_uncommitted(models_dir, write_config, tmp_path):
    inputs = tmp_path / "in"
    corpus(inputs)
    (inputs / "big.parquet").unlink()
    (inputs / "small.txt").unlink()
    out = tmp_path / "out"
    cfg = h.config(models_dir, inputs, out)
    cfg["input"]["split_mb"] = SPLIT_MB
    path = write_config(cfg)
    killed = run_crashing("after_data:2", "run", "--config", str(path))
    assert killed.returncode == -signal.SIGKILL
    assert h.entries(out) == {}  # two splits' files in place, the shard not committed
    assert len(h.data_files(out)) == 2
    final = run_cli("run", "--config", str(path))
    assert final.returncode == 0, final.stderr
    (entry,) = h.entries(out).values()
    assert {p.relative_to(out).as_posix() for p in h.data_files(out)} == set(entry["outputs"])
    ids = [r[2] for r in h.rows(out)]
    assert len(ids) == 60 == len(set(ids))
