"""The one typed configuration model: loaded from YAML, overridden with dotted ``--set`` keys, validated
before any pipeline is built. Unknown keys and wrong types fail with the key's full path in the message."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from fsspec.utils import glob_translate

from distilbeam.transforms import SetupError, storage
from distilbeam.transforms.tasks import TASK_KINDS, TaskSettings


class ConfigError(SetupError):
    """A mistake in the configuration; the message names the key or path and says what to do."""


@dataclasses.dataclass(frozen=True)
class InputConfig:
    paths: tuple[str, ...]
    # text | jsonl | parquet; None infers each shard's format from its extension.
    format: Literal["text", "jsonl", "parquet"] | None = None
    id_field: str | None = "id"
    text_field: str = "text"
    # jsonl/parquet: each record's second text (a hypothesis, a passage), for classify tasks on sentence
    # pairs (NLI, paraphrase, cross-encoder relevance); the model reads [CLS] text [SEP] pair [SEP].
    text_pair_field: str | None = None
    # Longer documents go to the dead letter instead of into a worker's memory and the tokenizer.
    max_chars: int = 1_000_000
    # dead-letter: a longer document is a dead-letter row; split: it is annotated in parts of at most
    # max_chars characters, output rows <id>#0, <id>#1, ... with a char_offset column.
    long_documents: Literal["dead-letter", "split"] = "dead-letter"
    # Uncompressed shards larger than this many MiB are read in parts of about this size, each by a worker
    # of its own and written as a part file of its own; null reads every shard whole.
    split_mb: float | None = 64
    # Passed to the fsspec filesystem of every input path (endpoint, profile, anonymous access...).
    storage_options: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)


@dataclasses.dataclass(frozen=True)
class BatchingConfig:
    # Most padded tokens (rows x longest row) per model call; auto: 2048 on a CPU, 32768 on a GPU for a
    # DistilBERT-base-wide model, up to 8 times more for narrower ones.
    max_tokens: int | Literal["auto"] = "auto"
    # Documents a worker reads, sorts by length and batches at a time: more means less padding, but each
    # worker holds one such chunk (its tokens and model outputs) in memory.
    sort_window: int = 1024


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # int8: dynamic quantisation of the linear layers, CPU only (faster, slightly less accurate).
    precision: Literal["auto", "fp32", "fp16", "bf16", "int8"] = "auto"
    # Threads torch uses per worker process; None divides the machine's cores between worker processes.
    torch_threads: int | None = None


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    path: str
    compression: Literal["zstd", "snappy", "gzip", "brotli", "lz4", "none"] = "zstd"
    keep_text: bool = False
    storage_options: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    # overwrite: one run fills an empty output.path (--force replaces earlier outputs). incremental: the
    # output remembers what it holds; a run annotates only new or changed shards (all of them when the
    # annotation settings change) and resumes after a crash. Scheduled runs want incremental.
    mode: Literal["overwrite", "incremental"] = "overwrite"
    # run_date: each run's files go under run_date=YYYY-MM-DD/ (and _errors/run_date=YYYY-MM-DD/).
    partition_by: Literal["run_date"] | None = None
    # The run's date, YYYY-MM-DD (a scheduler's logical date, for backfills); null is today in UTC.
    run_date: str | None = None
    # Exit status 3 when dead-letter rows exceed this share of the output's documents; null: never.
    max_failed_fraction: float | None = None

    @property
    def location(self) -> storage.Location:
        """The output folder, reached with its storage options."""
        return storage.Location(self.path, self.storage_options)


@dataclasses.dataclass(frozen=True)
class Config:
    input: InputConfig
    tasks: Mapping[str, TaskSettings]
    output: OutputConfig
    batching: BatchingConfig = dataclasses.field(default_factory=BatchingConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    # Passed through to Beam's PipelineOptions as --key=value flags.
    beam: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        plain = _plain(self)
        if self.input.text_pair_field is None:  # a later key: configs without it keep their hashes
            del plain["input"]["text_pair_field"]
        return plain

    def sha256(self) -> str:
        """Identity of everything that shapes the output rows (not where they go or which runner runs)."""
        facts = {k: v for k, v in self.to_dict().items() if k not in ("beam", "output")}
        facts["keep_text"] = self.output.keep_text
        drop_storage_options(facts)  # input's and models': may hold credentials, and do not shape rows
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def load(path: str | Path, overrides: list[str] = ()) -> Config:
    """Reads a YAML config file, applies ``dotted.key=value`` overrides, and validates it."""
    return from_dict(read(path, overrides))


def read(path: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    """A YAML config file's mapping with ``dotted.key=value`` overrides applied, not yet validated."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}") from None
    except ValueError as exc:  # a date-like value that is no date, such as 2026-13-01
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    for override in overrides:
        apply_override(data, override)
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: what is wrong and where (the YAML library's own message spans several, quoting the text)."""
    problem = getattr(exc, "problem", None) or type(exc).__name__
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def apply_override(data: dict, override: str) -> None:
    """Sets ``a.b.c=value`` in place; the value is parsed as YAML (so lists, numbers and null work)."""
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        if "storage_options" in override:  # what follows may be a credential: never echo it
            override = override[: override.index("storage_options")] + "storage_options..."
        raise ConfigError(f"--set {override!r}: expected dotted.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        # A glob such as *.jsonl is not valid YAML (an alias); plain text is taken as a string, but a
        # broken list or mapping is a mistake worth reporting.
        if raw.lstrip().startswith(("[", "{")):
            raise ConfigError(f"--set {key}: value is not valid YAML: {_yaml_problem(exc)}") from None
        value = raw
    except ValueError:  # date-like but no date, such as 2026-13-01: the key's own check names it
        value = raw
    parts = key.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a mapping")
        node = child
    node[parts[-1]] = value


def from_dict(data: Mapping[str, Any]) -> Config:
    cfg = _build(Config, data, "")
    if not cfg.tasks:
        raise ConfigError("tasks: at least one task is needed, e.g. sentiment: {kind: classify, model: ...}")
    if not cfg.input.paths:
        raise ConfigError("input.paths: at least one path or glob is needed")
    for key in ("max_tokens", "sort_window"):
        value = getattr(cfg.batching, key)
        if isinstance(value, int) and value <= 0:
            raise ConfigError(f"batching.{key}: must be a positive integer, got {value}")
    if cfg.input.split_mb is not None and cfg.input.split_mb <= 0:
        raise ConfigError(f"input.split_mb: must be a positive number or null, got {cfg.input.split_mb}")
    if cfg.input.max_chars <= 0:
        raise ConfigError(f"input.max_chars: must be a positive integer, got {cfg.input.max_chars}")
    if cfg.runtime.torch_threads is not None and cfg.runtime.torch_threads <= 0:
        raise ConfigError("runtime.torch_threads: must be a positive integer or null")
    if not (cfg.runtime.device in ("auto", "cpu", "cuda") or cfg.runtime.device.startswith("cuda:")):
        raise ConfigError(f"runtime.device: expected auto, cpu, cuda or cuda:N, got {cfg.runtime.device!r}")
    for name, task in cfg.tasks.items():
        if task.max_length is not None and task.max_length <= 0:
            message = f"must be a positive integer or null, got {task.max_length}"
            raise ConfigError(f"tasks.{name}.max_length: {message}")
    if cfg.input.text_pair_field is not None:
        _check_pairs(cfg)
    check_output_outside_inputs(cfg.input.paths, cfg.output.path)
    _check_run_keys(cfg.output)
    if cfg.runtime.precision == "int8" and cfg.runtime.device.startswith("cuda"):
        raise ConfigError("runtime.precision: int8 runs on the CPU only; set runtime.device to cpu or auto")
    return cfg


def check_output_outside_inputs(patterns: tuple[str, ...], output: str) -> None:
    """Refuses an output path whose files an input glob matches: the next run would read this run's
    outputs as its input."""
    from distilbeam.transforms.layout import ERRORS_DIR, SUMMARY_FILE, shard_file_name

    out = _normalized(output).rstrip("/")
    part = shard_file_name("")
    written = (f"{out}/{part}", f"{out}/{ERRORS_DIR}/{part}", f"{out}/{SUMMARY_FILE}")
    for pattern in patterns:
        matches = re.compile(glob_translate(_normalized(pattern))).fullmatch
        if any(matches(path) for path in written):
            raise ConfigError(
                f"output.path: {output} is inside input.paths {pattern!r}: a later run would read this "
                "run's outputs as input; write the output where no input glob reaches"
            )


def _normalized(path: str) -> str:
    """A path as a glob sees it: local paths absolute, URLs with their protocol."""
    if "://" not in path or path.startswith("file://"):
        return os.path.abspath(os.path.expanduser(path.removeprefix("file://")))
    return path


def _check_pairs(cfg: Config) -> None:
    """Sentence pairs: read from JSON Lines or Parquet records, into classify tasks only, whole records only;
    ``long_text: chunk-max`` contradicts them (the second text is truncated, see classify)."""
    key = "input.text_pair_field"
    if cfg.input.text_pair_field == cfg.input.text_field:
        raise ConfigError(f"{key}: must name another field than input.text_field ({cfg.input.text_field!r})")
    if cfg.input.format == "text":
        raise ConfigError(f"{key}: text shards hold one text per line; pairs are read from jsonl or parquet")
    if cfg.input.long_documents == "split":
        raise ConfigError(
            f"{key}: a sentence pair is annotated whole, so input.long_documents: split does not apply; "
            "use dead-letter"
        )
    for name, task in cfg.tasks.items():
        if task.kind != "classify":
            raise ConfigError(
                f"{key}: sentence pairs are read by classify tasks only; tasks.{name} is kind {task.kind}"
            )
        if task.long_text == "chunk-max":  # chunk-mean is the default, which pairs leave unused
            raise ConfigError(
                f"tasks.{name}.long_text: chunk-max does not apply to sentence pairs ({key}): the first "
                "text is read whole and the second is truncated to the window; remove the key"
            )


def _check_run_keys(output: OutputConfig) -> None:
    fraction = output.max_failed_fraction
    if fraction is not None and not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"output.max_failed_fraction: expected a number from 0 to 1, got {fraction}")
    if output.run_date is not None:
        try:
            parsed = datetime.date.fromisoformat(output.run_date)
        except ValueError:
            parsed = None
        if parsed is None or parsed.isoformat() != output.run_date:
            raise ConfigError(f"output.run_date: expected a date as YYYY-MM-DD, got {output.run_date!r}")


def _tasks(value: Any, path: str) -> dict[str, TaskSettings]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: expected a mapping of task name to settings, got {_kind(value)}")
    tasks = {}
    for name, settings in value.items():
        where = f"{path}.{name}"
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"{where}: task names become column names; use letters, digits and _")
        if not isinstance(settings, Mapping):
            raise ConfigError(f"{where}: expected a mapping with kind and model, got {_kind(settings)}")
        kind = settings.get("kind")
        if not isinstance(kind, str) or kind not in TASK_KINDS:
            raise ConfigError(f"{where}.kind: expected one of {', '.join(TASK_KINDS)}, got {kind!r}")
        options = {k: v for k, v in settings.items() if k != "kind"}
        tasks[name] = _build(TASK_KINDS[kind].Settings, options, where)
    return tasks


def build(cls: type, data: Any, path: str = "") -> Any:
    """An instance of the settings dataclass ``cls`` from a mapping, checked key by key: an unknown key or a
    wrong type fails with its full path (``path`` is where the mapping sits in the file)."""
    return _build(cls, data, path)


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {_kind(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        where = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise ConfigError(f"{where}: unknown key (expected one of: {', '.join(fields)})")
    values = {}
    for name, field in fields.items():
        where = f"{path}.{name}" if path else name
        if name not in data:
            no_default = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
            if no_default:
                raise ConfigError(f"{where}: required key is missing")
            continue
        if cls is Config and name == "tasks":
            values[name] = _tasks(data[name], where)
        else:
            values[name] = _coerce(hints[name], data[name], where)
    return cls(**values)


def _coerce(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for alternative in inner[:-1]:  # e.g. int | Literal["auto"]: the first that fits
            try:
                return _coerce(alternative, value, path)
            except ConfigError:
                pass
        try:
            return _coerce(inner[-1], value, path)
        except ConfigError:
            if len(inner) == 1:
                raise
        expected = " or ".join(_describe(a) for a in inner)
        raise ConfigError(f"{path}: expected {expected}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: expected one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {_kind(value)}")
        return tuple(_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict) or hint in (dict, Mapping):
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {_kind(value)}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, datetime.date):  # YAML reads an unquoted 2026-01-31 as a date
            value = value.isoformat()
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{path}: expected a non-empty string, got {value!r}")
        return value
    raise TypeError(f"{path}: unsupported config type {hint!r}")  # a bug in a settings class


def drop_storage_options(node: Any) -> None:
    if isinstance(node, dict):
        node.pop("storage_options", None)
        for value in node.values():
            drop_storage_options(value)


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return " or ".join(map(str, typing.get_args(hint)))
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(hint, str(hint))


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        out = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, TaskSettings):
            out = {"kind": value.kind, **out}
        return out
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value
