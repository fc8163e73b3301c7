"""End to end through the CLI, with shards, models and outputs in object stores: the S3 server, the GCS
emulator, ``file://`` URLs, and both stores behind a proxy that injects transient faults. Each run must give
the same rows, dead letter and counts as the same run on local files; a run with faults must still hold
every document exactly once. Secrets given in ``storage_options`` must not appear in any output or log."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import re
import uuid
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from distilbeam.pipeline import demo
from distilbeam.transforms.read import derived_id
from distilbeam.transforms.storage import WRITE_CHECK_PREFIX
from tests.conftest import run_cli
from tests.object_stores import FaultProxy

MAX_CHARS = 2000


def _texts(n: int, seed: int) -> list[str]:
    return demo.corpus(n, seed=seed)


def write_corpus(root: Path) -> Path:
    """Five shards, one per way a shard can be stored (plain, gzip, zstd, xz, Parquet), with a few records
    that belong in the dead letter: bad JSON, a missing text field, a document over max_chars."""
    root.mkdir(parents=True, exist_ok=True)
    reviews = [json.dumps({"id": f"r{i}", "text": t}) for i, t in enumerate(_texts(90, 1))]
    reviews[17] = '{"id": "r17", "text": "unterminated'
    reviews[40] = json.dumps({"id": "r40", "text": "word " * (MAX_CHARS // 4)})
    (root / "reviews.jsonl").write_text("\n".join(reviews) + "\n", encoding="utf-8")
    news = [json.dumps({"id": f"n{i}", "text": t}) for i, t in enumerate(_texts(80, 2))]
    news[5] = json.dumps({"id": "n5", "body": "no text field"})
    (root / "news.jsonl.gz").write_bytes(gzip.compress(("\n".join(news) + "\n").encode()))
    notes = "\n".join(_texts(70, 3)) + "\n"
    (root / "notes.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(notes.encode()))
    (root / "chat.txt.xz").write_bytes(lzma.compress(("\n".join(_texts(40, 4)) + "\n").encode()))
    (root / "legacy.txt.bz2").write_bytes(bz2.compress(("\n".join(_texts(30, 6)) + "\n").encode()))
    table = pa.table({"id": [f"p{i}" for i in range(60)], "text": _texts(60, 5)})
    pq.write_table(table, root / "table.parquet")
    return root


def run_config(inputs: list[str], models: dict[str, str], output: str, **storage_options) -> dict:
    """The config of every run here; ``storage_options`` go to the input, the output and both models."""
    options = {"storage_options": storage_options} if storage_options else {}
    return {
        "input": {"paths": inputs, "max_chars": MAX_CHARS, **options},
        "tasks": {
            "sentiment": {"kind": "classify", "model": models["classifier"], **options},
            "entities": {"kind": "ner", "model": models["ner"], "aggregation": "simple", **options},
        },
        "batching": {"max_tokens": 1024, "sort_window": 64},
        "output": {"path": output, **options},
        "beam": {"runner": "DirectRunner"},
    }


def globs(base: str) -> list[str]:
    return [f"{base}/*.jsonl*", f"{base}/*.txt.*", f"{base}/*.parquet"]


class Outputs:
    """One run's outputs read back from a local directory: rows, dead letter, summary, file metadata."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.files = sorted(directory.glob("part-*.parquet"))
        self.rows = [r for f in self.files for r in pq.read_table(f).to_pylist()]
        errors = sorted((directory / "_errors").glob("part-*.parquet"))
        self.errors = [r for f in errors for r in pq.read_table(f).to_pylist()]
        self.summary = json.loads((directory / "_SUMMARY.json").read_text())
        self.metadata = [pq.read_metadata(f).metadata for f in self.files]
        self.leftovers = [p.name for p in directory.rglob("*") if _is_leftover(p.name)]

    def by_place(self, rows: list[dict]) -> dict[tuple[str, int, str], dict]:
        """Rows keyed by (shard file name, offset, stage), the same wherever the shards were stored."""
        keyed = {}
        for row in rows:
            key = (row["source"].rsplit("/", 1)[-1], row["offset"], row.get("stage", ""))
            assert key not in keyed, f"{key} appears twice"
            keyed[key] = row
        return keyed


def _is_leftover(name: str) -> bool:
    """A temporary file of an atomic write, or the probe of the write check."""
    return name.startswith(WRITE_CHECK_PREFIX) or name.endswith((".tmp", ".partial"))


def fetch(store, url: str, local: Path) -> Outputs:
    """Copies a run's output directory out of a store (directly, not through any proxy) and reads it."""
    fs = store.fs()
    fs.invalidate_cache()
    fs.get(url.split("://", 1)[1] + "/", str(local) + "/", recursive=True)
    return Outputs(local)


def assert_same_results(got: Outputs, want: Outputs) -> None:
    """Same documents, labels, entities, scores and dead letter as the run on local files, up to where the
    shards were stored (the ``source`` column, and the ids derived from it for lines without one)."""
    assert got.leftovers == [], "temporary or probe files were left behind"
    assert len(got.files) == len(want.files)
    for name, table in (("rows", (got.rows, want.rows)), ("dead letter", (got.errors, want.errors))):
        mine, theirs = (got.by_place(t) for t in table)
        assert mine.keys() == theirs.keys(), name
        for key, row in mine.items():
            expected = theirs[key]
            if expected["id"] == derived_id(expected["source"], expected["offset"]):
                assert row["id"] == derived_id(row["source"], row["offset"]), key
            else:
                assert row["id"] == expected["id"], key
            strip = {"id", "source"}
            assert {k: v for k, v in row.items() if k not in strip} == {
                k: v for k, v in expected.items() if k not in strip
            }, key
    counts = ("docs_read", "docs_written", "docs_failed", "complete", "tokens", "shards", "failed_by_stage")
    assert {k: got.summary[k] for k in counts} == {k: want.summary[k] for k in counts}
    assert got.summary["complete"] is True
    for task in ("sentiment", "entities"):
        assert got.summary["tasks"][task]["weights_sha256"] == want.summary["tasks"][task]["weights_sha256"]
    con = duckdb.connect()
    total, distinct = con.execute(
        f"select count(*), count(distinct (source, \"offset\")) from '{got.directory}/part-*.parquet'"
    ).fetchone()
    assert total == distinct == len(want.rows)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def reference(corpus, models_dir, tmp_path_factory) -> Outputs:
    """The run every other run is compared with: shards, models and output on local disk."""
    tmp = tmp_path_factory.mktemp("reference")
    models = {m: str(models_dir / m) for m in ("classifier", "ner")}
    config = tmp / "config.yaml"
    config.write_text(json.dumps(run_config(globs(str(corpus)), models, str(tmp / "out"))))
    result = run_cli("run", "--config", str(config), env={"TMPDIR": str(tmp), "DISTILBEAM_CACHE": str(tmp)})
    assert result.returncode == 0, result.stderr
    out = Outputs(tmp / "out")
    assert out.summary["docs_failed"] == 3 and out.summary["complete"]
    assert out.summary["docs_read"] == 90 + 80 + 70 + 40 + 30 + 60
    return out


def upload(store, corpus: Path, models_dir: Path) -> str:
    bucket = store.new_bucket("run")
    store.put_tree(corpus, f"{bucket}/corpus")
    for model in ("classifier", "ner"):
        store.put_tree(models_dir / model, f"{bucket}/models/{model}")
    return bucket


def remote_models(store, bucket: str) -> dict[str, str]:
    return {m: store.url(bucket, "models", m) for m in ("classifier", "ner")}


def test_s3_with_endpoint_and_credentials_in_storage_options(
    s3_store, corpus, models_dir, reference, write_config, tmp_path, monkeypatch
):
    """Inputs, models and output on the S3 server, reached only through ``storage_options`` (as for MinIO):
    no endpoint or credentials in the environment. The secret must not leak into outputs or logs."""
    bucket = upload(s3_store, corpus, models_dir)
    secret = f"canary-{uuid.uuid4().hex}"
    for variable in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(variable)
    options = {"endpoint_url": s3_store.endpoint, "key": "AKIDCANARY", "secret": secret}
    out_url = s3_store.url(bucket, "out")
    cfg = run_config(
        globs(s3_store.url(bucket, "corpus")), remote_models(s3_store, bucket), out_url, **options
    )
    result = run_cli("run", "--config", str(write_config(cfg)))
    assert result.returncode == 0, result.stderr
    got = fetch(s3_store, out_url, tmp_path / "got")
    assert_same_results(got, reference)
    assert {r["source"].split("://")[0] for r in got.rows + got.errors} == {"s3"}
    assert_not_leaked(secret, [result.stdout, result.stderr], got)

    # The same secret in a run that fails: the error names the URL, and only the URL.
    cfg["output"]["path"] = "s3://no-such-bucket-anywhere/out"
    failed = run_cli("run", "--config", str(write_config(cfg)))
    assert failed.returncode == 2
    assert "output.path: cannot write to s3://no-such-bucket-anywhere/out: no such bucket" in failed.stderr
    assert_not_leaked(secret, [failed.stdout, failed.stderr])


def assert_not_leaked(secret: str, logs: list[str], outputs: Outputs | None = None) -> None:
    texts = list(logs)
    if outputs is not None:
        texts += [
            json.dumps(outputs.summary),
            repr(outputs.rows),
            repr(outputs.errors),
            repr(outputs.metadata),
        ]
        texts += [p.read_bytes().decode("latin-1") for p in outputs.directory.rglob("*") if p.is_file()]
    for text in texts:
        assert secret not in text


def test_gcs_with_the_emulator_from_the_environment(
    gcs_store, corpus, models_dir, reference, write_config, tmp_path
):
    bucket = upload(gcs_store, corpus, models_dir)
    out_url = gcs_store.url(bucket, "out")
    cfg = run_config(globs(gcs_store.url(bucket, "corpus")), remote_models(gcs_store, bucket), out_url)
    result = run_cli("run", "--config", str(write_config(cfg)))
    assert result.returncode == 0, result.stderr
    got = fetch(gcs_store, out_url, tmp_path / "got")
    assert_same_results(got, reference)
    assert {r["source"].split("://")[0] for r in got.rows + got.errors} == {"gs"}


def test_file_urls_give_the_same_files(corpus, models_dir, reference, write_config, tmp_path):
    """file:// URLs name the same files as plain paths: even sources and file names match."""
    models = {m: f"file://{models_dir / m}" for m in ("classifier", "ner")}
    cfg = run_config(globs(f"file://{corpus}"), models, f"file://{tmp_path / 'out'}")
    result = run_cli("run", "--config", str(write_config(cfg)))
    assert result.returncode == 0, result.stderr
    got = Outputs(tmp_path / "out")
    assert_same_results(got, reference)
    assert [f.name for f in got.files] == [f.name for f in reference.files]
    assert got.rows == reference.rows and got.errors == reference.errors


def test_a_run_through_transient_faults_has_every_document_once(
    store, fault_proxy, corpus, models_dir, reference, write_config, tmp_path
):
    """Every request of the run (listing, model copy, shard reads, Parquet and summary writes) goes through
    a proxy that fails the first few (one of each kind: a 503, a reset connection, a body cut short) and then
    about one in ten, at random."""
    bucket = upload(store, corpus, models_dir)
    via = fault_proxy.store
    out_url = via.url(bucket, "out")
    cfg = run_config(globs(via.url(bucket, "corpus")), remote_models(via, bucket), out_url)
    fault_proxy.rate = 0.1
    result = run_cli("run", "--config", str(write_config(cfg)), env=via.env)
    assert result.returncode == 0, result.stderr
    got = fetch(store, store.url(bucket, "out"), tmp_path / "got")
    assert_same_results(got, reference)
    assert all(fault_proxy.counts[kind] > 0 for kind in ("503", "reset", "cut")), fault_proxy.counts


@pytest.mark.parametrize("store", ["gs"], indirect=True)  # both stores at the storage layer: test_storage
def test_a_denied_output_ends_the_run_before_it_starts(
    store, fault_proxy, corpus, models_dir, write_config, tmp_path
):
    bucket = upload(store, corpus, models_dir)
    denied = store.new_bucket("denied")
    fault_proxy.deny.add(denied)
    via = fault_proxy.store
    out_url = via.url(denied, "out")
    cfg = run_config(globs(via.url(bucket, "corpus")), remote_models(via, bucket), out_url)
    fault_proxy.rate = 0.0
    result = run_cli("run", "--config", str(write_config(cfg)), env=via.env)
    assert result.returncode == 2, result.stderr
    assert f"output.path: cannot look up {out_url}: access denied" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any(bucket in path and "/corpus" in path for _, path in fault_proxy.log), "shards were read"


def test_a_write_refused_mid_run_ends_it_naming_the_file(s3_store, models_dir, write_config, tmp_path):
    """The output bucket accepts everything until the first shard's data file, then refuses every request
    (its policy changed under the run): the run stops at that write, and says which file it was."""
    proxy = FaultProxy(s3_store, rate=0.0)
    proxy.start()
    try:
        bucket, out_bucket = s3_store.new_bucket("in"), s3_store.new_bucket("out")
        s3_store.put(f"{bucket}/docs.jsonl", (corpus_lines(20) + "\n").encode())

        def refuse_from_the_first_data_file(method: str, path: str) -> None:
            if method == "PUT" and "/part-" in path:
                proxy.deny.add(out_bucket)

        proxy.on_request = refuse_from_the_first_data_file
        models = {m: str(models_dir / m) for m in ("classifier", "ner")}
        cfg = run_config([proxy.store.url(bucket, "*.jsonl")], models, proxy.store.url(out_bucket, "out"))
        result = run_cli("run", "--config", str(write_config(cfg)), env=proxy.store.env)
    finally:
        proxy.stop()
    assert result.returncode == 1, result.stderr
    (last,) = [line for line in result.stderr.splitlines() if line.startswith("distilbeam: error:")]
    file = rf"s3://{out_bucket}/out/part-[0-9a-f]{{16}}\.parquet"
    assert re.match(f"distilbeam: error: the pipeline failed: cannot write {file}: access denied", last), last


def corpus_lines(n: int) -> str:
    return "\n".join(json.dumps({"id": str(i), "text": t}) for i, t in enumerate(_texts(n, 7)))
