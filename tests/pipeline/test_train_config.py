"""The train and distil configs: read with run's loader, unknown keys and bad values named by their path."""

from __future__ import annotations

import re

import pytest
import yaml

from distilbeam.pipeline import train_config
from distilbeam.pipeline.config import ConfigError

TRAIN = {"base_model": "m", "task": "classify", "data": {"train": "x.jsonl"}, "output": {"path": "out"}}


def load(tmp_path, cfg, loader=train_config.load_train, overrides=()):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return loader(path, list(overrides))


def test_defaults_and_overrides(tmp_path):
    cfg = load(tmp_path, TRAIN, overrides=["training.epochs=5", "data.labels=[a, b]"])
    assert cfg.data.train == ("x.jsonl",) and cfg.training.epochs == 5 and cfg.data.labels == ("a", "b")
    assert cfg.training.batch_tokens == 4096 and cfg.training.early_stopping_patience == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": {"train": "x", "text_feld": "t"}}, "data.text_feld: unknown key"),
        ({"task": "qa"}, "task: expected one of classify, ner"),
        ({"training": {"device": "cuda:1"}}, "CUDA_VISIBLE_DEVICES"),
        ({"training": {"batch_tokens": 100, "max_length": 256}}, "training.batch_tokens: 100 is below"),
        ({"data": {"train": "x", "validation_fraction": 1.5}}, "data.validation_fraction"),
        ({"task": "ner", "data": {"train": "x", "text_pair_field": "b"}}, "pairs are for task classify"),
    ],
)
def test_train_mistakes_name_the_key(tmp_path, change, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(tmp_path, {**TRAIN, **change})


def test_distil_config(tmp_path):
    cfg = {"teacher": {"output": "out/run", "task": "topic"}, "output": {"path": "student"}}
    loaded = load(tmp_path, cfg, train_config.load_distil)
    assert loaded.student.init == "every-other-layer" and loaded.training.temperature == 2.0
    with pytest.raises(ConfigError, match=r"training\.temperature: must be positive"):
        load(tmp_path, {**cfg, "training": {"temperature": 0}}, train_config.load_distil)
    with pytest.raises(ConfigError, match=r"student\.layers: unknown key"):
        load(tmp_path, {**cfg, "student": {"layers": 3}}, train_config.load_distil)
