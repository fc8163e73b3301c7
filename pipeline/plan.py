"""Everything checked and resolved before a pipeline is built: the shards the globs match, each task's model
(it exists, it fits the task, its weights are safetensors or explicitly trusted, their hash), the tokenizer
groups, and the output schema. A mistake here ends the run before any worker starts."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from typing import Any

import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

from distilbeam.pipeline import __version__, runners
from distilbeam.pipeline.config import Config, ConfigError, drop_storage_options
from distilbeam.transforms import SetupError, models, storage
from distilbeam.transforms.annotate import TaskGroup
from distilbeam.transforms.read import ReadSettings, Shard, find_shards
from distilbeam.transforms.schema import output_schema
from distilbeam.transforms.state import RunSettings
from distilbeam.transforms.tasks import Runtime, TaskHandler, TaskSettings
from distilbeam.transforms.tasks.build import build_handler


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
    _check_pair_shards(cfg, shards)
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
        if cfg.input.text_pair_field is not None:
            handler = _pair_handler(name, handler)
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
    schema = output_schema(
        types,
        cfg.output.keep_text,
        metadata,
        split=cfg.input.long_documents == "split",
        pairs=cfg.input.text_pair_field is not None,
    )
    return Plan(cfg, shards, task_groups, schema, facts, started)


def annotation_sha256(cfg: Config, identities: dict[str, Any]) -> str:
    """Identity of what shapes a shard's rows: how records are read (the pair field too), each task's
    settings and resolved model (weights hash, window, labels, and the numeric path: device kind and
    effective precision, as planned at launch), and whether text is kept. Not where inputs and outputs
    live, nor batching or threads, which change how fast rows are made rather than what they hold. An
    incremental run annotates every shard again when this changes: moving an output from the CPU (fp32)
    to a GPU (fp16) or to int8 does."""
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
    options = storage.Options(i.storage_options)
    settings = (i.format, i.id_field, i.text_field, i.max_chars, options, i.long_documents)
    return ReadSettings(*settings, text_pair_field=i.text_pair_field)


def _check_pair_shards(cfg: Config, shards: list[Shard]) -> None:
    """Refuses text shards when sentence pairs are read: a text line holds one text, not two."""
    if cfg.input.text_pair_field is None:
        return
    for shard in shards:
        if shard.format == "text":
            raise ConfigError(
                f"input.text_pair_field: {shard.uri} is a text shard, one text per line; sentence pairs "
                "are read from jsonl or parquet shards (set input.format or name the files .jsonl)"
            )


def _pair_handler(name: str, handler: TaskHandler) -> TaskHandler:
    """Task ``name``'s handler reading sentence pairs (config validation let only classify tasks through)."""
    try:
        return handler.with_pairs()
    except SetupError as exc:
        raise ConfigError(f"tasks.{name}: {exc}") from None


def resolve_task(
    name: str, settings: TaskSettings, runtime: Runtime, max_tokens: int | str
) -> tuple[TaskHandler, str, dict[str, Any]]:
    """Task ``name``'s handler, its tokenizer's identity and the task's identity, built from its settings by
    ``build_handler``; a problem with the task's settings or model is a ``ConfigError`` naming its key."""
    try:
        return build_handler(name, settings, runtime, max_tokens)
    except SetupError as exc:
        raise ConfigError(str(exc)) from None
