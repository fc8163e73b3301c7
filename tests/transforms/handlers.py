"""Task handlers for the tests, built as the pipeline builds them (``build_handler``) from a task kind and
its settings as a config's ``tasks:`` entry gives them, without the pipeline layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distilbeam.transforms.tasks import TASK_KINDS, Runtime, TaskHandler, TaskSettings
from distilbeam.transforms.tasks.build import build_handler

CPU = Runtime(device="cpu")


def task_settings(kind: str, model: str | Path, **options: Any) -> TaskSettings:
    """A kind's settings; lists become tuples, as the config loader makes them."""
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    return TASK_KINDS[kind].Settings(model=str(model), **values)


def build_task(
    kind: str,
    model: str | Path,
    runtime: Runtime = CPU,
    max_tokens: int | str = 512,
    name: str = "t",
    **options: Any,
) -> tuple[TaskHandler, str, dict[str, Any]]:
    """``build_handler`` for task ``name`` of ``kind`` on ``model``: (handler, tokenizer id, identity)."""
    return build_handler(name, task_settings(kind, model, **options), runtime, max_tokens)


def handler_for(kind: str, model: str | Path, **kwargs: Any) -> TaskHandler:
    """The handler alone (see ``build_task``)."""
    return build_task(kind, model, **kwargs)[0]
