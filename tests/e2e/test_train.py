"""``distilbeam train`` and ``distilbeam distil`` through the command line: a trained model annotates with
``distilbeam run`` and agrees with its own evaluation, a run's output teaches a student, mistakes exit
with status 2 naming the key; and (slow) the real MiniLM learns real tweets beyond chance."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import yaml

from distilbeam.pipeline import cli
from distilbeam.transforms import models
from distilbeam.transforms.tasks import classify
from tests.conftest import run_cli, write_jsonl
from tests.transforms.training import samples


def write_yaml(path, cfg):
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return str(path)


def annotations(out, task):
    rows = [r for p in sorted(out.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    return {r["id"]: r[task] for r in rows}


@pytest.mark.slow
def test_train_run_distil_round_trip(models_dir, tmp_path):
    records = samples.sentiment(48)
    train = write_jsonl(tmp_path / "train.jsonl", records[:36])
    validation = write_jsonl(tmp_path / "validation.jsonl", records[36:])
    cfg = samples.train_config(models_dir / "classifier", train, tmp_path / "model")
    cfg["data"]["validation"] = [str(validation)]
    done = run_cli("train", "--config", write_yaml(tmp_path / "train.yaml", cfg))
    assert done.returncode == 0, done.stderr
    assert "baseline" in done.stdout and "wrote classify model" in done.stdout
    trained = json.loads((tmp_path / "model" / "training_metrics.json").read_text())

    # The model annotates the validation texts as it saw them in training (same window), and the accuracy
    # read back from the Parquet output is the trainer's own.
    task = {"kind": "classify", "model": str(tmp_path / "model"), "max_length": 32, "long_text": "truncate"}
    run_cfg = {
        "input": {"paths": [str(validation)]},
        "tasks": {"topic": task},
        "output": {"path": str(tmp_path / "run")},
    }
    done = run_cli("run", "--config", write_yaml(tmp_path / "run.yaml", run_cfg))
    assert done.returncode == 0, done.stderr
    got = annotations(tmp_path / "run", "topic")
    gold = {r["id"]: r["label"] for r in records[36:]}
    accuracy = sum(got[i]["label"] == gold[i] for i in gold) / len(gold)
    assert accuracy == pytest.approx(trained["final"]["accuracy"], abs=1e-9)

    # A student learns the run's distributions, texts read back from the shard (no text column).
    distil_cfg = {
        "teacher": {"output": str(tmp_path / "run"), "task": "topic"},
        "training": {"epochs": 1, "batch_tokens": 256, "max_length": 32, "validation_fraction": 0.25},
        "output": {"path": str(tmp_path / "student")},
    }
    done = run_cli("distil", "--config", write_yaml(tmp_path / "distil.yaml", distil_cfg))
    assert done.returncode == 0, done.stderr
    assert "agreement" in done.stdout
    student = tmp_path / "student"
    config = models.read_config(student, str(student))
    classify.Handler.check_model(str(student), config)
    assert config["n_layers"] == 1 and config["id2label"] == {"0": "negative", "1": "positive"}
    card = (student / "README.md").read_text()
    assert str(tmp_path / "run") in card and "every other layer" in card


def test_mistakes_exit_2_naming_the_key(models_dir, tmp_path, capsys):
    train = write_jsonl(tmp_path / "train.jsonl", samples.sentiment(20))
    cfg = samples.train_config(models_dir / "classifier", train, tmp_path / "model")
    cfg["training"]["epochs"] = 0
    assert cli.main(["train", "--config", write_yaml(tmp_path / "a.yaml", cfg)]) == 2
    assert "training.epochs: must be a positive integer" in capsys.readouterr().err
    assert (
        cli.main(["distil", "--config", write_yaml(tmp_path / "b.yaml", {"teacher": {"output": "x"}})]) == 2
    )
    assert "teacher.task: required key is missing" in capsys.readouterr().err


@pytest.mark.slow
def test_minilm_learns_real_tweets(minilm_dir, tmp_path):
    """The real all-MiniLM-L6-v2, one short epoch on 240 real tweets, beats chance on 120 held-out ones."""
    from distilbeam.pipeline import training, tweets

    paths = tweets.write_splits(tmp_path / "tweets", train=240, validation=120, corpus=0, seed=1)
    cfg = {
        "base_model": str(minilm_dir),
        "task": "classify",
        "data": {"train": [str(paths["train"])], "validation": [str(paths["validation"])]},
        "training": {"epochs": 1, "batch_tokens": 1024, "max_length": 48, "learning_rate": 2e-4},
        "output": {"path": str(tmp_path / "model")},
    }
    assert training.train(write_yaml(tmp_path / "t.yaml", cfg), []) == 0
    final = json.loads((tmp_path / "model" / "training_metrics.json").read_text())["final"]
    majority = max(
        sum(json.loads(x)["label"] == c for x in paths["validation"].open())
        for c in ("negative", "neutral", "positive")
    )
    assert final["accuracy"] > majority / 120 + 0.05
