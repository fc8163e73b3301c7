"""Where a trained model goes: an output directory that must be empty or missing (checked before training
starts), filled in a staging directory first (safetensors weights, config.json with id2label/label2id, the
tokenizer, the model card, the metrics and the report) and moved or uploaded into place only when
complete, so a failed run never leaves half a model where ``distilbeam run`` would load it."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from distilbeam.transforms import SetupError, storage
from distilbeam.transforms.storage import Location
from distilbeam.transforms.training import card, report


def check_output(out: Location, key: str = "output.path") -> None:
    """Refuses an output that exists and is a file or a directory with anything in it."""
    uri = out.url
    fs, root = out.filesystem()
    try:
        if not fs.exists(root):
            return
        if not fs.isdir(root):
            raise SetupError(f"{key}: {uri} exists and is not a directory")
        if fs.ls(root, detail=False):
            raise SetupError(
                f"{key}: {uri} is not empty; choose a new directory, or remove this one to train again"
            )
    except OSError as exc:
        raise SetupError(f"{key}: {uri}: {exc}") from None


@contextlib.contextmanager
def staging(out: Location) -> Iterator[Path]:
    """A local directory to write the model into: beside a local output (so the move is a rename), in the
    temporary directory for an object store. Removed on the way out if it is still there."""
    if out.is_local:
        target = Path(out.url.removeprefix("file://")).expanduser().absolute()
        target.parent.mkdir(parents=True, exist_ok=True)
        path = target.parent / f".{target.name}.{uuid.uuid4().hex}.partial"
    else:
        path = Path(tempfile.gettempdir()) / f"distilbeam-model-{uuid.uuid4().hex}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_model_dir(directory: Path, model: Any, tokenizer: Any, facts: Mapping[str, Any]) -> None:
    """The model as ``distilbeam run`` loads it, with its card, metrics and report."""
    model.save_pretrained(str(directory))  # safetensors
    tokenizer.save_pretrained(str(directory))
    (directory / "README.md").write_text(card.render(facts), encoding="utf-8")
    (directory / card.METRICS_FILE).write_text(card.metrics_json(facts), encoding="utf-8")
    (directory / report.REPORT_FILE).write_text(report.render(facts), encoding="utf-8")
    # Readable as any file the user writes (the weights are saved through a private temporary file):
    # workers running as another user load the model from this directory.
    umask = os.umask(0)
    os.umask(umask)
    for file in directory.rglob("*"):
        file.chmod((0o777 if file.is_dir() else 0o666) & ~umask)


def publish(directory: Path, out: Location) -> None:
    """Moves the finished directory to ``out`` (a rename when local; an upload of each file otherwise)."""
    check_output(out)  # nothing appeared there while training ran
    if out.is_local:
        target = Path(out.url.removeprefix("file://")).expanduser()
        if target.is_dir():
            target.rmdir()  # empty: checked above
        os.replace(directory, target)
        return
    fs, root = out.filesystem()
    for file in sorted(directory.rglob("*")):
        if file.is_file():
            dest = f"{root.rstrip('/')}/{file.relative_to(directory).as_posix()}"
            storage.retrying("upload model file", out.url, lambda f=file, d=dest: fs.put_file(str(f), d))
