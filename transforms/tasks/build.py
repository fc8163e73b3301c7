"""Building a task's handler before the pipeline starts: its settings and model source resolved into a
``TaskHandler`` that workers can load without further checks, with the identity of its tokenizer (tasks
whose tokenizers match share one tokenization) and the identity of what shapes its rows (for the
annotation hash and the output's metadata)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from distilbeam.transforms import SetupError, models
from distilbeam.transforms.tasks import TASK_KINDS
from distilbeam.transforms.tasks.base import TaskHandler
from distilbeam.transforms.tasks.demo_models import RANDOM_WEIGHTS_KEY
from distilbeam.transforms.tasks.runtime import Runtime, TaskSettings, resolve_max_length


def build_handler(
    name: str, settings: TaskSettings, runtime: Runtime, max_tokens: int | str
) -> tuple[TaskHandler, str, dict[str, Any]]:
    """Task ``name`` as workers will run it, from its settings: the model is found (fetched into the cache
    when remote), its config.json checked against the task kind, its weights found (pickle refused unless
    allowed) and hashed, and its tokenizer loaded to resolve the window (``resolve_max_length``) and the
    special tokens framing it. Returns the handler, its tokenizer's identity and the task's identity (kind,
    model, revision, weights hash, window, numeric path, labels). Raises ``SetupError`` naming the
    ``tasks.<name>`` key at fault."""
    where = f"tasks.{name}.model"
    kind = TASK_KINDS[settings.kind]
    try:
        path = models.local_dir(settings.ref)
        config = models.read_config(path, settings.model)
        kind.Handler.check_model(settings.model, config)
        weights = models.weight_files(path, settings.ref)
        tokenizer = models.load_tokenizer(path)
    except SetupError as exc:
        raise SetupError(f"{where}: {exc}") from None
    except OSError as exc:  # the Hub or a store refused: name the model and pass on what it said
        raise SetupError(f"{where}: cannot load {settings.model}: {exc}") from None
    max_length = resolve_max_length(settings, config, tokenizer)
    frame = models.special_frame(tokenizer)
    handler = kind.Handler(name, worker_settings(settings, path), runtime, max_tokens, max_length, frame)
    if handler.body < 1:
        raise SetupError(
            f"tasks.{name}.max_length: {max_length} tokens leave no room for text beside the model's "
            f"{max_length - handler.body} special tokens"
        )
    try:
        handler.resolve_model(tokenizer, config)
    except SetupError as exc:
        raise SetupError(f"tasks.{name}: {exc}") from None
    problem = handler.settings_problem()
    if problem:
        raise SetupError(f"tasks.{name}.{problem}")
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


def worker_settings(settings: TaskSettings, path: Path) -> TaskSettings:
    """The settings as workers get them: a local model directory as an absolute path, since a worker may run
    in another directory (or on another machine, where the path must exist too)."""
    if not settings.ref.is_local:
        return settings
    return dataclasses.replace(settings, model=str(path.resolve()))
