"""Task kinds: each module holds its settings, its ``ModelHandler`` and its output column type. Adding a
kind means one module and one line in ``TASK_KINDS``. ``build.build_handler`` turns a task's settings into
its handler; ``base`` holds what every handler shares, ``runtime`` where and how its model runs."""

from distilbeam.transforms.tasks import classify, embed, ner, qa
from distilbeam.transforms.tasks.base import TaskHandler
from distilbeam.transforms.tasks.runtime import Runtime, TaskSettings

TASK_KINDS = {
    "classify": classify,
    "ner": ner,
    "qa": qa,
    "embed": embed,
}

__all__ = ["TASK_KINDS", "Runtime", "TaskHandler", "TaskSettings"]
