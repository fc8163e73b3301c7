"""Task kinds: each module holds its settings, its ``ModelHandler`` and its output column type. Adding a
kind means one module and one line in ``TASK_KINDS``."""

from distilbeam.transforms.tasks import classify, embed, ner, qa
from distilbeam.transforms.tasks.base import Runtime, TaskHandler, TaskSettings

TASK_KINDS = {
    "classify": classify,
    "ner": ner,
    "qa": qa,
    "embed": embed,
}

__all__ = ["TASK_KINDS", "Runtime", "TaskHandler", "TaskSettings"]
