"""``distilbeam train`` (pipeline/training.py) in process on tiny DistilBERT models: the model directory it
writes (weights, labels, tokenizer, card, metrics, report), the same weights from the same data and seed,
multi-label, sentence pairs and ner, and the mistakes found before any training starts."""

from __future__ import annotations

import json

import pytest
import yaml
from safetensors.numpy import load_file

from distilbeam.pipeline import training
from distilbeam.pipeline.config import ConfigError
from distilbeam.transforms import SetupError, models
from distilbeam.transforms.tasks import classify, ner
from tests.transforms.training import samples


def train(tmp_path, name, cfg):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    assert training.train(str(path), []) == 0
    return tmp_path / name


@pytest.fixture(scope="module")
def sentiment_run(models_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("sentiment")
    data = samples.write(root / "train.jsonl", samples.sentiment(40))
    cfg = samples.train_config(models_dir / "classifier", data, root / "model")
    return root, cfg, train(root, "model", cfg)


def test_model_directory_loads_as_a_classify_model(sentiment_run, models_dir):
    root, _, out = sentiment_run
    config = models.read_config(out, str(out))
    classify.Handler.check_model(str(out), config)
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}
    assert models.weight_files(out, models.ModelRef(str(out))) == [out / "model.safetensors"]
    assert models.load_tokenizer(out).is_fast
    base = models.ModelRef(str(models_dir / "classifier"))
    base_sha = models.weights_sha256(models.weight_files(models_dir / "classifier", base))
    card = (out / "README.md").read_text()
    assert base_sha in card and str(models_dir / "classifier") in card
    facts = json.loads((out / "training_metrics.json").read_text())
    assert facts["base"]["weights_sha256"] == base_sha
    assert facts["data"]["train"]["files"]["all"] in card
    assert facts["data"]["train"]["examples"] + facts["data"]["validation"]["examples"] == 40
    assert [row["epoch"] for row in facts["history"]] == [1.0]
    assert {"train_loss", "loss", "accuracy", "macro_f1"} <= set(facts["history"][0])
    assert {"accuracy", "macro_f1"} <= set(facts["baseline"]) and "accuracy" in facts["final"]
    assert "<svg" in (out / "training_report.html").read_text()
    assert not list(root.glob(".*partial"))
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in out.iterdir())  # readable by group and others


def test_same_data_and_seed_give_the_same_weights(sentiment_run, tmp_path):
    _, cfg, out = sentiment_run
    again = train(tmp_path, "again", {**cfg, "output": {"path": str(tmp_path / "again")}})
    first, second = load_file(out / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys()
    assert all((first[k] == second[k]).all() for k in first)


def test_multi_label(models_dir, tmp_path):
    data = samples.write(tmp_path / "topics.jsonl", samples.topics(40))
    out = train(
        tmp_path, "topics", samples.train_config(models_dir / "classifier", data, tmp_path / "topics")
    )
    config = models.read_config(out, str(out))
    assert config["problem_type"] == "multi_label_classification"
    assert config["id2label"] == {"0": "people", "1": "places"}
    assert "micro_f1" in json.loads((out / "training_metrics.json").read_text())["final"]


def test_sentence_pairs(models_dir, tmp_path):
    data = samples.write(tmp_path / "pairs.jsonl", samples.pairs(40))
    fields = {"text_field": "premise", "text_pair_field": "hypothesis"}
    cfg = samples.train_config(models_dir / "classifier", data, tmp_path / "pairs", data=fields)
    out = train(tmp_path, "pairs", cfg)
    facts = json.loads((out / "training_metrics.json").read_text())
    assert facts["settings"]["data"]["text_pair_field"] == "hypothesis"
    assert set(facts["labels"]) == {"same", "different"}


def test_ner_from_spans_and_from_conll(models_dir, tmp_path):
    data = samples.write(tmp_path / "people.jsonl", samples.entities(40))
    conll = tmp_path / "more.conll"
    conll.write_text("alice B-PER\nvisited O\nparis B-LOC\n\nbob B-PER\nstark I-PER\n\n" * 4)
    cfg = samples.train_config(models_dir / "ner", data, tmp_path / "ner", task="ner")
    cfg["data"]["train"].append(str(conll))
    out = train(tmp_path, "ner", cfg)
    config = models.read_config(out, str(out))
    ner.Handler.check_model(str(out), config)
    assert list(config["id2label"].values()) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert {"precision", "recall", "f1"} <= set(
        json.loads((out / "training_metrics.json").read_text())["final"]
    )


def test_mistakes_found_before_training(models_dir, tmp_path):
    data = samples.write(tmp_path / "train.jsonl", samples.sentiment(20))
    cfg = samples.train_config(models_dir / "classifier", data, tmp_path / "out")

    def fails(config, error=SetupError):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        with pytest.raises(error) as info:
            training.train(str(path), [])
        return str(info.value)

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("x")
    assert "output.path" in fails(cfg) and "is not empty" in fails(cfg)
    cfg["output"]["path"] = str(tmp_path / "new")
    assert fails({**cfg, "training": {"epoch": 2}}, ConfigError).startswith("training.epoch: unknown key")
    from transformers import ViTConfig

    ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(
        tmp_path / "vit"
    )
    message = fails({**cfg, "base_model": str(tmp_path / "vit")})
    assert (
        "base_model" in message and "vit model, which cannot take a sequence-classification head" in message
    )
    message = fails({**cfg, "data": {**cfg["data"], "labels": ["positive"]}})
    assert "train.jsonl line" in message and "label 'negative' is not in data.labels" in message
    assert not (tmp_path / "new").exists()
