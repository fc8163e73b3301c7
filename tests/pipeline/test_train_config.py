"""The train and distil configs: read with run's loader, unknown keys and bad values named by their path."""

from __future__ import annotations

import re

import pytest
import yaml

from distilbeam.pipeline import train_config
from distilbeam.pipeline.config import ConfigError
from distilbeam.transforms.storage import Location

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


def test_each_section_reaches_its_places_with_its_own_storage_options(tmp_path):
    """The keys users write stay loose (a URL beside storage_options); the commands get locations."""
    train = {
        **TRAIN,
        "base_model": "s3://models/base",
        "revision": "main",
        "storage_options": {"profile": "models"},
        "data": {"train": ["s3://data/*.jsonl"], "storage_options": {"profile": "data"}},
        "output": {"path": "s3://out/model", "storage_options": {"profile": "out"}},
    }
    cfg = load(tmp_path, train)
    assert cfg.base_model_ref.location == Location("s3://models/base", {"profile": "models"})
    assert cfg.base_model_ref.revision == "main" and not cfg.base_model_ref.allow_pickle
    assert cfg.data.location("s3://data/*.jsonl") == Location("s3://data/*.jsonl", {"profile": "data"})
    assert cfg.output.location == Location("s3://out/model", {"profile": "out"})
    teacher = {"output": "s3://runs/1", "task": "topic", "storage_options": {"profile": "teacher"}}
    student = {"init": "s3://models/small", "storage_options": {"profile": "student"}}
    distil = {"teacher": teacher, "student": student, "output": {"path": "student"}}
    loaded = load(tmp_path, distil, train_config.load_distil)
    assert loaded.teacher.output_location == Location("s3://runs/1", {"profile": "teacher"})
    teacher_model = loaded.teacher.model_ref("s3://models/t")
    assert teacher_model.location == Location("s3://models/t", {"profile": "teacher"})
    assert loaded.student.checkpoint_ref.location == Location("s3://models/small", {"profile": "student"})
    assert loaded.output.location == Location("student")
