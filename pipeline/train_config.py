"""The typed configurations of ``distilbeam train`` and ``distilbeam distil``: read from YAML with dotted
``--set`` overrides and checked by the same machinery as ``distilbeam run``'s (``pipeline/config.py``), so
an unknown key or a wrong type fails with the key's full path before any model is loaded."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from distilbeam.pipeline import config
from distilbeam.pipeline.config import ConfigError
from distilbeam.transforms import models, storage


@dataclasses.dataclass(frozen=True)
class DataConfig:
    train: tuple[str, ...]  # globs of JSONL / Parquet files (or CoNLL .conll/.bio/.iob for ner)
    validation: tuple[str, ...] | None = None  # null: hold out validation_fraction of train
    validation_fraction: float = 0.1
    text_field: str = "text"
    # classify on sentence pairs: the model reads [CLS] text [SEP] pair [SEP]
    text_pair_field: str | None = None
    # classify: a string, or a list of strings (multi-label); ner: a list of {start, end, label} spans
    label_field: str = "label"
    # The label set in the order of the model's outputs; null: every label seen in train, sorted.
    labels: tuple[str, ...] | None = None
    storage_options: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    def location(self, pattern: str) -> storage.Location:
        """A file or glob of train or validation data, reached with the data's storage options."""
        return storage.Location(pattern, self.storage_options)


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 3
    learning_rate: float = 5.0e-5
    batch_tokens: int = 4096  # padded tokens per training step (rows x longest row)
    max_length: int = 256  # tokens per example, special tokens included; longer examples are truncated
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    # Epochs without a better validation score before training stops; null trains every epoch.
    early_stopping_patience: int | None = 1
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"  # auto: bf16/fp16 on a GPU, fp32 on a CPU
    device: str = "auto"  # auto | cpu | cuda (all visible GPUs under accelerate launch / torchrun)


@dataclasses.dataclass(frozen=True)
class ModelOutputConfig:
    path: str  # an empty or missing directory, local or s3:// / gs://
    storage_options: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def location(self) -> storage.Location:
        """The model directory to write, reached with its storage options."""
        return storage.Location(self.path, self.storage_options)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    base_model: str  # Hub id, local directory, or s3:// / gs:// directory, as tasks.<name>.model in run
    task: Literal["classify", "ner"]
    data: DataConfig
    output: ModelOutputConfig
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    revision: str | None = None
    allow_pickle: bool = False
    storage_options: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def base_model_ref(self) -> models.ModelRef:
        """The checkpoint to start from, reached with the top-level storage options."""
        location = storage.Location(self.base_model, self.storage_options)
        return models.ModelRef(location, self.revision, self.allow_pickle)


@dataclasses.dataclass(frozen=True)
class TeacherConfig:
    output: str  # a distilbeam output folder
    task: str  # its classify column
    # The teacher's model directory; null: the model its run summary names.
    model: str | None = None
    text_field: str = "text"  # the shards' text field, when the output has no text column
    storage_options: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def output_location(self) -> storage.Location:
        """The teacher's output folder; the shards its rows name are read with the same options."""
        return storage.Location(self.output, self.storage_options)

    def model_ref(self, uri: str) -> models.ModelRef:
        """The teacher's model directory (``model``, or the one the output's summary names)."""
        return models.ModelRef(storage.Location(uri, self.storage_options))


@dataclasses.dataclass(frozen=True)
class StudentConfig:
    # every-other-layer: the teacher with half its layers (the DistilBERT recipe); or a model path / Hub id
    init: str = "every-other-layer"
    storage_options: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def checkpoint_ref(self) -> models.ModelRef:
        """The checkpoint ``init`` names, when it is not every-other-layer."""
        return models.ModelRef(storage.Location(self.init, self.storage_options))


@dataclasses.dataclass(frozen=True)
class DistilTrainingConfig:
    epochs: int = 2
    temperature: float = 2.0
    hard_label_weight: float = 0.0  # weight of cross-entropy on the teacher's top label
    learning_rate: float = 1.0e-4
    seed: int = 0
    batch_tokens: int = 4096
    max_length: int = 256
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    validation_fraction: float = 0.1  # documents held out to measure agreement with the teacher
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    device: str = "auto"
    early_stopping_patience: int | None = None


@dataclasses.dataclass(frozen=True)
class DistilConfig:
    teacher: TeacherConfig
    output: ModelOutputConfig
    student: StudentConfig = dataclasses.field(default_factory=StudentConfig)
    training: DistilTrainingConfig = dataclasses.field(default_factory=DistilTrainingConfig)


def load_train(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    cfg = config.build(TrainConfig, config.read(path, overrides))
    _check_training(cfg.training, "training")
    fraction = cfg.data.validation_fraction
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"data.validation_fraction: expected a number between 0 and 1, got {fraction}")
    if not cfg.data.train:
        raise ConfigError("data.train: at least one path or glob is needed")
    if cfg.data.text_pair_field and cfg.task != "classify":
        raise ConfigError("data.text_pair_field: sentence pairs are for task classify only")
    return cfg


def load_distil(path: str | Path, overrides: list[str] = ()) -> DistilConfig:
    cfg = config.build(DistilConfig, config.read(path, overrides))
    _check_training(cfg.training, "training")
    if cfg.training.temperature <= 0:
        raise ConfigError(f"training.temperature: must be positive, got {cfg.training.temperature}")
    if cfg.training.hard_label_weight < 0:
        raise ConfigError("training.hard_label_weight: must be 0 or more")
    if not 0.0 < cfg.training.validation_fraction < 1.0:
        raise ConfigError("training.validation_fraction: expected a number between 0 and 1")
    return cfg


def _check_training(t: Any, where: str) -> None:
    for key in ("epochs", "batch_tokens", "max_length"):
        if getattr(t, key) <= 0:
            raise ConfigError(f"{where}.{key}: must be a positive integer, got {getattr(t, key)}")
    if t.learning_rate <= 0:
        raise ConfigError(f"{where}.learning_rate: must be positive, got {t.learning_rate}")
    if not 0.0 <= t.warmup_ratio < 1.0:
        raise ConfigError(f"{where}.warmup_ratio: expected a number from 0 to below 1, got {t.warmup_ratio}")
    if t.early_stopping_patience is not None and t.early_stopping_patience <= 0:
        raise ConfigError(f"{where}.early_stopping_patience: must be a positive integer or null")
    if t.max_length < 8:
        raise ConfigError(f"{where}.max_length: {t.max_length} tokens leave no room for text")
    if t.batch_tokens < t.max_length:
        raise ConfigError(
            f"{where}.batch_tokens: {t.batch_tokens} is below max_length ({t.max_length}); one example "
            "must fit in a step"
        )
    if t.device not in ("auto", "cpu", "cuda"):
        hint = " (choose GPUs with CUDA_VISIBLE_DEVICES)" if t.device.startswith("cuda:") else ""
        raise ConfigError(f"{where}.device: expected auto, cpu or cuda, got {t.device!r}{hint}")


def plain(cfg: Any) -> dict[str, Any]:
    """The config as plain data without storage options (they may hold credentials), for the model card."""
    out = config._plain(cfg)
    config.drop_storage_options(out)
    return out
