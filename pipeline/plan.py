"""Everything checked and resolved before a pipeline is built: the shards the globs match, each task's model
(it exists, it fits the task, its weights are safetensors or explicitly trusted, their hash), the tokenizer
groups, and the output schema. A mistake here ends the run before any worker starts."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

from distilbeam.pipeline import __version__, runners
from distilbeam.pipeline.config import Config, ConfigError, drop_storage_options
from distilbeam.transforms import SetupError, models
from distilbeam.transforms.annotate import TaskGroup
from distilbeam.transforms.read import ReadSettings, Shard, find_shards
from distilbeam.transforms.schema import output_schema
from distilbeam.transforms.state import RunSettings
from distilbeam.transforms.tasks import TASK_KINDS, Runtime, TaskHandler
from distilbeam.transforms.tasks.base import resolve_max_length

RANDOM_WEIGHTS_KEY = "distilbeam_random_weights"  # set in config.json by `distilbeam demo-models`


@dataclasses.dataclass(frozen=True)
class Plan:
    cfg: Config
    shards: list[Shard]
    groups: list[TaskGroup]
    schema: pa.Schema
    facts: dict[str, Any]  # identity of the run: version, config hash, models; in the summary and metadata
    started: float
    run: RunSettings | None = None  # set by pipeline/runs.py: the shards chosen and how they are committed


def prepare(cfg: Config, worker_processes: int = 1, options: PipelineOptions | None = None) -> Plan:
    """``options``: Beam's, to tell where workers will run (see ``runners.planned_device``); the config's
    ``beam:`` section when not given."""
    started = time.time()
    shards = find_shards(cfg.input.paths, read_settings(cfg))
    runtime = Runtime(
        cfg.runtime.device,
        cfg.runtime.precision,
        cfg.runtime.torch_threads,
        worker_processes,
        planned_device=runners.planned_device(cfg, options),
    )
    groups: dict[str, list[TaskHandler]] = {}
    refs: dict[str, models.ModelRef] = {}
    identities = {}
    types = {}
    for name, settings in cfg.tasks.items():
        handler, tokenizer_id, identity = resolve_task(name, settings, runtime, cfg.batching.max_tokens)
        types[name] = handler.arrow_type()
        groups.setdefault(tokenizer_id, []).append(handler)
        refs.setdefault(tokenizer_id, handler.settings.ref)
        identities[name] = identity
    task_groups = [TaskGroup(refs[key], tuple(handlers)) for key, handlers in groups.items()]
    facts = {
        "version": __version__,
        "config_sha256": cfg.sha256(),
        "annotation_sha256": annotation_sha256(cfg, identities),
        "tasks": identities,
    }
    metadata = {
        "distilbeam.version": __version__,
        "distilbeam.config_sha256": facts["config_sha256"],
        "distilbeam.annotation_sha256": facts["annotation_sha256"],
        "distilbeam.tasks": json.dumps(identities, sort_keys=True),
    }
    schema = output_schema(types, cfg.output.keep_text, metadata, split=cfg.input.long_documents == "split")
    return Plan(cfg, shards, task_groups, schema, facts, started)


def annotation_sha256(cfg: Config, identities: dict[str, Any]) -> str:
    """Identity of what shapes a shard's rows: how records are read, each task's settings and resolved model
    (weights hash, window, labels, and the numeric path: device kind and effective precision, as planned
    at launch), and whether text is kept. Not where inputs and outputs live, nor batching or threads,
    which change how fast rows are made rather than what they hold. An incremental run annotates every
    shard again when this changes: moving an output from the CPU (fp32) to a GPU (fp16) or to int8 does."""
    settings = cfg.to_dict()
    drop_storage_options(settings)  # credentials: they say where files are, not what rows hold
    facts = {
        "input": {k: v for k, v in settings["input"].items() if k not in ("paths", "split_mb")},
        "tasks": {name: {**settings["tasks"][name], **identity} for name, identity in identities.items()},
        "keep_text": cfg.output.keep_text,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def read_settings(cfg: Config) -> ReadSettings:
    i = cfg.input
    return ReadSettings(i.format, i.id_field, i.text_field, i.max_chars, i.storage_options, i.long_documents)


def worker_settings(settings: Any, path: Path) -> Any:
    """The task's settings as workers get them: a local model directory as an absolute path, since a worker
    may run in another directory (or on another machine, where the path must exist too)."""
    if not settings.ref.is_local:
        return settings
    return dataclasses.replace(settings, model=str(path.resolve()))


def resolve_task(
    name: str, settings: Any, runtime: Runtime, max_tokens: int
) -> tuple[TaskHandler, str, dict[str, Any]]:
    where = f"tasks.{name}.model"
    kind = TASK_KINDS[settings.kind]
    try:
        path = models.local_dir(settings.ref)
        config = models.read_config(path, settings.model)
        kind.Handler.check_model(settings.model, config)
        weights = models.weight_files(path, settings.ref)
        tokenizer = models.load_tokenizer(path)
    except SetupError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except OSError as exc:  # the Hub or a store refused: name the model and pass on what it said
        raise ConfigError(f"{where}: cannot load {settings.model}: {exc}") from None
    max_length = resolve_max_length(settings, config, tokenizer)
    frame = models.special_frame(tokenizer)
    handler = kind.Handler(name, worker_settings(settings, path), runtime, max_tokens, max_length, frame)
    if handler.body < 1:
        raise ConfigError(
            f"tasks.{name}.max_length: {max_length} tokens leave no room for text beside the model's "
            f"{max_length - handler.body} special tokens"
        )
    try:
        handler.resolve_model(tokenizer, config)
    except SetupError as exc:
        raise ConfigError(f"tasks.{name}: {exc}") from None
    problem = handler.settings_problem()
    if problem:
        raise ConfigError(f"tasks.{name}.{problem}")
    identity = {
        "kind": settings.kind,
        "model": settings.model,
        "revision": settings.revision,
        "weights_sha256": models.weights_sha256(weights),
        "max_length": max_length,
        "numerics": runtime.numerics(),
    }
    if kind.Handler.labelled:
        identity["labels"] = [config["id2label"][k] for k in sorted(config["id2label"], key=int)]
    if config.get(RANDOM_WEIGHTS_KEY):
        identity["random_weights"] = True
    return handler, models.tokenizer_identity(tokenizer), identity
