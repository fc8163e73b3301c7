"""``distilbeam`` end to end, as a user runs it: JSONL, text and Parquet shards (some gzip-compressed) in,
Parquet out with exactly the contract's schema, read back with pyarrow and DuckDB; every input record either
written or dead-lettered; config mistakes stopped before any pipeline starts, with one line and exit 2."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distilbeam.pipeline import __version__, config
from distilbeam.pipeline.plan import resolve_task
from distilbeam.transforms.batching import Batch, tokenize
from distilbeam.transforms.read import derived_id
from distilbeam.transforms.schema import Annotated, Document
from distilbeam.transforms.tasks import Runtime
from tests.conftest import REPO, run_cli, write_jsonl
from tests.transforms.test_write import CLASSIFY, NER

# (shard name, records): a record is (id or None for a derived one, text) or ("FAIL", stage) for a record
# that must land in the dead letter.
JSONL = [
    ("rev-1", "The hotel in Paris was lovely and the staff were very helpful."),
    ("rev-2", ""),
    ("FAIL", "parse"),  # not JSON
    ("rev-4", "   "),
    ("FAIL", "parse"),  # text is null
    ("rev-6", "Bob and Carol flew from Tokyo to Madrid with Initech; the flight was on time!"),
]
JSONL_GZ = [
    (None, "Alice visited the museum in Vienna on Monday morning."),
    ("g-2", "Très bon restaurant à Lyon — le service était impeccable! 👍"),
    (None, "one two three four five six seven eight nine ten " * 12),
    ("g-4", "x"),
    (None, "東京 and 北京 are capitals; مرحبا بالعالم"),
]
TEXT = [
    (None, "Acme sold ten thousand phones in March."),
    (None, ""),
    (None, "Grace and Dave liked the festival in Oslo."),
    (None, "\t tabs and  spaces\t"),
    (None, 'He said: "Don\'t!" -- then left... (quickly)'),
]
TEXT_GZ = [
    (None, "Globex bought the rest in October."),
    (None, "bad film, slow story, terrible staff " * 5),
    (None, "good"),
]
PARQUET = [
    ("p-0", "The restaurant in Rome was excellent."),
    ("p-1", None),  # a null text -> dead letter
    (None, "Wayne and Stark opened a station in Berlin."),
    ("p-3", "   "),
    ("p-4", "The camera was cheap and the service slow."),
    ("p-5", "Erin wrote a book about the river."),
    ("p-6", "Frank watched a game in Madrid on Friday."),
]
PARQUET_NO_IDS = ["Cairo, Lima and Oslo.", "", "The team played in Tokyo."]

LABELS = ("NEGATIVE", "POSITIVE")


def write_shards(root: Path) -> dict[str, list]:
    """Writes every shard; returns, per shard path, its records as (offset, id, text) or
    (offset, 'FAIL', stage)."""
    root.mkdir(parents=True)
    expected: dict[str, list] = {}

    jsonl = root / "reviews.jsonl"
    lines = []
    for offset, (id_, text) in enumerate(JSONL):
        if id_ == "FAIL":
            lines.append(
                "{not json" if offset == 2 else json.dumps({"id": f"rev-{offset + 1}", "text": None})
            )
        else:
            lines.append(json.dumps({"id": id_, "text": text}))
    jsonl.write_text("\n".join(lines) + "\n", encoding="utf-8")
    expected[str(jsonl)] = [(o, *r) for o, r in enumerate(JSONL)]

    gz = root / "more.jsonl.gz"
    records = [{"text": t} if i is None else {"id": i, "text": t} for i, t in JSONL_GZ]
    gz.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode()))
    expected[str(gz)] = [(o, *r) for o, r in enumerate(JSONL_GZ)]

    txt = root / "news.txt"
    txt.write_text("\n".join(t for _, t in TEXT) + "\n", encoding="utf-8")
    expected[str(txt)] = [(o, *r) for o, r in enumerate(TEXT)]

    txt_gz = root / "news-more.txt.gz"
    txt_gz.write_bytes(gzip.compress("\r\n".join(t for _, t in TEXT_GZ).encode()))
    expected[str(txt_gz)] = [(o, *r) for o, r in enumerate(TEXT_GZ)]

    parquet = root / "rows.parquet"
    table = pa.table(
        {"id": [i for i, _ in PARQUET], "text": [t for _, t in PARQUET], "lang": ["en"] * len(PARQUET)}
    )
    pq.write_table(table, parquet, row_group_size=3)
    expected[str(parquet)] = [
        (o, "FAIL", "parse") if t is None else (o, i, t) for o, (i, t) in enumerate(PARQUET)
    ]

    parquet2 = root / "plain.parquet"
    pq.write_table(pa.table({"text": PARQUET_NO_IDS}), parquet2)
    expected[str(parquet2)] = [(o, None, t) for o, t in enumerate(PARQUET_NO_IDS)]
    return expected


def run_config(models_dir: Path, shards: Path, out: Path) -> dict:
    return {
        "input": {
            "paths": [f"{shards}/*.jsonl*", f"{shards}/*.txt*", f"{shards}/*.parquet"],
            "id_field": "id",
        },
        "tasks": {
            "sentiment": {"kind": "classify", "model": str(models_dir / "classifier")},
            "entities": {"kind": "ner", "model": str(models_dir / "ner"), "aggregation": "simple"},
        },
        # small budget and window: many batches and flushes even for a few dozen documents
        "batching": {"max_tokens": 256, "sort_window": 4},
        "runtime": {"device": "cpu", "torch_threads": 1},
        "output": {"path": str(out)},
    }


@pytest.fixture(scope="module")
def run(models_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    expected = write_shards(root / "shards")
    cfg_path = root / "run.yaml"
    cfg_path.write_text(json.dumps(run_config(models_dir, root / "shards", root / "out")), encoding="utf-8")
    env = {"TMPDIR": str(root), "DISTILBEAM_CACHE": str(root / "cache")}
    result = run_cli("run", "--config", str(cfg_path), "--runner=DirectRunner", env=env)
    return {
        "result": result,
        "out": root / "out",
        "expected": expected,
        "config": config.load(cfg_path),
        "models_dir": models_dir,
    }


def good(expected: dict) -> dict[tuple[str, int], tuple[str, str]]:
    """(source, offset) -> (id, text) of every record that must be annotated."""
    out = {}
    for source, records in expected.items():
        for offset, id_, text in records:
            if id_ != "FAIL":
                out[(source, offset)] = (id_ or derived_id(source, offset), text)
    return out


def failed(expected: dict) -> set[tuple[str, int, str]]:
    return {(s, o, stage) for s, records in expected.items() for o, id_, stage in records if id_ == "FAIL"}


def expected_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("offset", pa.int64(), nullable=False),
            pa.field("n_tokens", pa.int32(), nullable=False),
            pa.field("warnings", pa.list_(pa.string()), nullable=False),
            pa.field("sentiment", CLASSIFY),
            pa.field("entities", NER),
        ]
    )


def read_rows(out: Path) -> list[dict]:
    return [row for path in sorted(out.glob("*.parquet")) for row in pq.read_table(path).to_pylist()]


# -- the run -------------------------------------------------------------------------------------------------


def test_run_exits_zero_and_reports_its_counts(run):
    result = run["result"]
    assert result.returncode == 0, result.stderr[-3000:]
    n_good, n_failed = len(good(run["expected"])), len(failed(run["expected"]))
    assert f"{n_good + n_failed} documents read, {n_good} written, {n_failed} dead-lettered" in result.stdout


def test_every_file_has_exactly_the_contract_schema(run):
    files = sorted(run["out"].glob("*.parquet"))
    assert len(files) == len(run["expected"]), "one Parquet file per input shard"
    for path in files:
        schema = pq.read_schema(path)
        assert schema.equals(expected_schema(), check_metadata=False), (path, schema)
        assert [(f.name, f.nullable) for f in schema] == [(f.name, f.nullable) for f in expected_schema()]
    for path in (run["out"] / "_errors").glob("*.parquet"):
        assert [(f.name, f.type, f.nullable) for f in pq.read_schema(path)] == [
            ("id", pa.string(), True),
            ("source", pa.string(), False),
            ("offset", pa.int64(), False),
            ("stage", pa.string(), False),
            ("error", pa.string(), False),
            ("message", pa.string(), False),
            ("raw", pa.string(), False),
        ]


def test_rows_plus_dead_letters_equal_input_documents(run):
    expected = run["expected"]
    rows = read_rows(run["out"])
    dead = pq.read_table(run["out"] / "_errors").to_pylist()
    assert len(rows) + len(dead) == sum(len(r) for r in expected.values())
    want = good(expected)
    assert {(r["source"], r["offset"]): r["id"] for r in rows} == {k: v[0] for k, v in want.items()}
    assert len(rows) == len(want), "no document written twice"
    assert {(d["source"], d["offset"], d["stage"]) for d in dead} == failed(expected)
    assert all(d["message"] and d["error"] for d in dead)


def test_rows_are_sorted_by_offset_within_each_file(run):
    for path in run["out"].glob("*.parquet"):
        offsets = pq.read_table(path, columns=["offset"]).column("offset").to_pylist()
        assert offsets == sorted(offsets)


def test_duckdb_reads_the_output(run):
    out = run["out"]
    con = duckdb.connect()
    described = con.sql(f"describe select * from read_parquet('{out}/*.parquet')").fetchall()
    types = {name: type_.replace('"', "") for name, type_, *_ in described}  # quoting varies by version
    assert types == {
        "id": "VARCHAR",
        "source": "VARCHAR",
        "offset": "BIGINT",
        "n_tokens": "INTEGER",
        "warnings": "VARCHAR[]",
        "sentiment": (
            "STRUCT(label VARCHAR, score FLOAT, scores STRUCT(label VARCHAR, score FLOAT)[], "
            "n_chunks INTEGER, truncated BOOLEAN)"
        ),
        "entities": "STRUCT(label VARCHAR, text VARCHAR, start INTEGER, end INTEGER, score FLOAT)[]",
    }
    required = con.sql(
        f"select distinct name, repetition_type from parquet_schema('{out}/*.parquet') "
        "where name in ('id', 'source', 'offset', 'n_tokens')"
    ).fetchall()
    assert sorted(required) == [(n, "REQUIRED") for n in ("id", "n_tokens", "offset", "source")]
    (written,) = con.sql(f"select count(*) from read_parquet('{out}/*.parquet')").fetchall()[0]
    (dead,) = con.sql(f"select count(*) from read_parquet('{out}/_errors/*.parquet')").fetchall()[0]
    assert written + dead == sum(len(r) for r in run["expected"].values())
    entities = con.sql(
        f"""select count(*), count(distinct e.label)
            from read_parquet('{out}/*.parquet'), unnest(entities) as t(e)
            where e."end" > e."start" and e.score between 0 and 1"""
    ).fetchall()[0]
    n_entities = sum(len(r["entities"]) for r in read_rows(out))
    assert entities[0] == n_entities > 0
    labels = {
        r[0] for r in con.sql(f"select sentiment.label from read_parquet('{out}/*.parquet')").fetchall()
    }
    assert labels <= set(LABELS)


def test_summary_invariant_and_model_identities(run):
    summary = json.loads((run["out"] / "_SUMMARY.json").read_text())
    n_good, n_failed = len(good(run["expected"])), len(failed(run["expected"]))
    assert summary["docs_read"] == n_good + n_failed
    assert summary["docs_written"] == n_good
    assert summary["docs_failed"] == n_failed
    assert summary["docs_read"] == summary["docs_written"] + summary["docs_failed"]
    assert summary["complete"] is True
    assert summary["shards"] == len(run["expected"])
    assert summary["failed_by_stage"] == {"parse": n_failed}
    assert summary["tokens"] == sum(r["n_tokens"] for r in read_rows(run["out"]))
    assert summary["wall_seconds"] > 0
    assert summary["version"] == __version__
    assert summary["config_sha256"] == run["config"].sha256()
    models_dir = run["models_dir"]
    for task, model, labels in (
        ("sentiment", "classifier", list(LABELS)),
        ("entities", "ner", ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]),
    ):
        identity = summary["tasks"][task]
        weights = (models_dir / model / "model.safetensors").read_bytes()
        assert identity["model"] == str(models_dir / model)
        assert identity["kind"] == {"sentiment": "classify", "entities": "ner"}[task]
        assert identity["weights_sha256"] == hashlib.sha256(weights).hexdigest()
        assert identity["labels"] == labels
        assert identity["random_weights"] is True


def test_parquet_metadata_names_version_config_and_models(run):
    summary = json.loads((run["out"] / "_SUMMARY.json").read_text())
    for path in run["out"].glob("*.parquet"):
        metadata = {k.decode(): v.decode() for k, v in pq.read_schema(path).metadata.items()}
        assert metadata["distilbeam.version"] == __version__
        assert metadata["distilbeam.config_sha256"] == run["config"].sha256()
        assert json.loads(metadata["distilbeam.tasks"]) == summary["tasks"]
    con = duckdb.connect()
    keys = {
        k.decode()
        for (k,) in con.sql(f"select key from parquet_kv_metadata('{run['out']}/*.parquet')").fetchall()
    }
    assert {"distilbeam.version", "distilbeam.config_sha256", "distilbeam.tasks"} <= keys


def test_empty_and_whitespace_documents_get_a_class_and_no_entities(run):
    want = good(run["expected"])
    blank = {key for key, (_, text) in want.items() if not text.strip()}
    assert len(blank) == 5
    rows = {(r["source"], r["offset"]): r for r in read_rows(run["out"])}
    for key in blank:
        row = rows[key]
        assert row["entities"] == []
        assert row["n_tokens"] == 0
        assert row["sentiment"]["label"] in LABELS
        assert sum(s["score"] for s in row["sentiment"]["scores"]) == pytest.approx(1.0, abs=1e-5)


def test_results_are_each_documents_own(run):
    """Through the whole pipeline (shards, shuffles, batches, groups), each row holds what its task's model
    gives its document run alone, and each entity's text is the document's own characters."""
    cfg = run["config"]
    want = good(run["expected"])
    rows = {(r["source"], r["offset"]): r for r in read_rows(run["out"])}
    for name, settings in cfg.tasks.items():
        handler, _, _ = resolve_task(
            name, settings, Runtime(device="cpu", torch_threads=1), cfg.batching.max_tokens
        )
        loaded = handler.load_model()
        for (source, offset), (id_, text) in want.items():
            tokenized, _ = tokenize(
                loaded.tokenizer, [Annotated(Document(id_, source, offset, text), -1, {})]
            )
            (out,) = handler.run_inference(Batch(tuple(tokenized)), loaded)
            alone = out.results[name][0]
            got = rows[(source, offset)][name]
            if name == "sentiment":
                assert got["label"] == alone["label"]
                assert got["score"] == pytest.approx(alone["score"], abs=1e-5)
                assert rows[(source, offset)]["n_tokens"] == len(tokenized[0].ids)
            else:
                assert [(e["label"], e["start"], e["end"]) for e in got] == [
                    (e["label"], e["start"], e["end"]) for e in alone
                ]
                for e in got:
                    assert e["text"] == text[e["start"] : e["end"]]


# -- configuration mistakes: one line, exit 2, nothing started -----------------------------------------------


def mistake_cases(root: Path, models_dir: Path) -> dict[str, tuple[list[str], str]]:
    no_config = root / "no-config-model"
    no_config.mkdir()
    shutil.copy(models_dir / "classifier" / "model.safetensors", no_config)
    busy = root / "busy-out"
    busy.mkdir()
    (busy / "someone-elses.txt").write_text("keep me", encoding="utf-8")
    return {
        "unknown key": (["--set", "batching.max_token=100"], "batching.max_token: unknown key"),
        "wrong type": (
            ["--set", "output.keep_text=maybe"],
            "output.keep_text: expected true or false, got 'maybe'",
        ),
        "unknown kind": (
            ["--set", "tasks.sentiment.kind=summarize"],
            "tasks.sentiment.kind: expected one of",
        ),
        "no match": (
            ["--set", f'input.paths=["{root}/nowhere/*.jsonl"]'],
            f"input.paths: no file matches {root}/nowhere/*.jsonl",
        ),
        "no config.json": (
            ["--set", f"tasks.sentiment.model={no_config}"],
            f"tasks.sentiment.model: model {no_config} has no config.json",
        ),
        "output not empty": (
            ["--set", f"output.path={busy}"],
            f"output.path: {busy} is not empty; choose another path, or pass --force",
        ),
    }


MISTAKES = ["unknown key", "wrong type", "no match", "no config.json", "output not empty"]


@pytest.mark.parametrize("case", MISTAKES)
def test_config_mistake_ends_with_one_line_and_exit_2(models_dir, tmp_path, case):
    shards = tmp_path / "shards"
    shards.mkdir()
    write_jsonl(shards / "a.jsonl", [{"id": "1", "text": "hello"}])
    out = tmp_path / "out"
    cfg = tmp_path / "run.yaml"
    settings = run_config(models_dir, shards, out)
    settings["input"]["paths"] = [str(shards / "a.jsonl")]
    cfg.write_text(json.dumps(settings), encoding="utf-8")
    overrides, message = mistake_cases(tmp_path, models_dir)[case]
    result = run_cli("run", "--config", str(cfg), *overrides)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert lines == [lines[0]] and lines[0].startswith(f"distilbeam: error: {message}"), result.stderr
    assert result.stdout == ""
    assert not out.exists(), "nothing is written before the config is known to be good"
    if case == "output not empty":
        assert [p.name for p in (tmp_path / "busy-out").iterdir()] == ["someone-elses.txt"]


# -- the offline demo, as the README runs it -----------------------------------------------------------------


def test_offline_demo_runs_as_the_readme_says(tmp_path, monkeypatch):
    """`distilbeam demo-models demo-models` then `distilbeam run --config configs/offline-demo.yaml`, from a
    copy of the repository's configs, and the README's DuckDB query on the result."""
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    made = run_cli("demo-models", "demo-models", cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-3000:]
    assert (tmp_path / "demo-models" / "classifier" / "config.json").is_file()
    assert (tmp_path / "demo-models" / "ner" / "model.safetensors").is_file()

    result = run_cli("run", "--config", "configs/offline-demo.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out" / "offline-demo"
    summary = json.loads((out / "_SUMMARY.json").read_text())
    sample = [p for p in (tmp_path / "configs" / "sample").iterdir() if p.suffix in (".jsonl", ".txt")]
    n_records = sum(len(p.read_text(encoding="utf-8").splitlines()) for p in sample)
    assert summary["docs_read"] == n_records
    assert summary["docs_written"] + summary["docs_failed"] == n_records
    assert summary["complete"] is True
    assert summary["shards"] == len(sample)
    assert all(task["random_weights"] is True for task in summary["tasks"].values())

    table = pa.concat_tables([pq.read_table(p) for p in sorted(out.glob("*.parquet"))])
    assert table.column_names == [
        "id",
        "source",
        "offset",
        "n_tokens",
        "warnings",
        "text",
        "sentiment",
        "entities",
    ]
    for row in table.to_pylist():
        for entity in row["entities"]:
            assert entity["text"] == row["text"][entity["start"] : entity["end"]]

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    query = re.search(r'duckdb\.sql\("""(.*?)"""\)', readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    rows = duckdb.sql(query).fetchall()
    n_entities = sum(len(r["entities"]) for r in table.to_pylist())
    assert len(rows) == n_entities > 0
