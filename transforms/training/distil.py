"""Distillation for ``distilbeam distil``: the teacher's full label distributions read from a distilbeam
output folder (the classify column's ``scores``), the texts from its ``text`` column or from the shards by
``source`` and ``offset``, a student initialised from the teacher with every other layer (the DistilBERT
recipe) or from a checkpoint, and a Trainer whose loss is the temperature-scaled KL divergence to the
teacher (x T²) plus, optionally, cross-entropy on the teacher's top label."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from transformers import Trainer

from distilbeam.transforms import SetupError, storage
from distilbeam.transforms.storage import Location, Options
from distilbeam.transforms.training.data import DataError

LAYER = re.compile(r"^(.*?(?:encoder|transformer)\.layer\.)(\d+)(\..*)$")


@dataclasses.dataclass
class TeacherRows:
    """A teacher's documents: texts, label distributions [documents, labels], and where they came from."""

    texts: list[str]
    probs: np.ndarray
    labels: list[str]
    model: str | None  # the model its run summary names
    files: list[Location]


def read_teacher(output: Location, task: str, text_field: str) -> TeacherRows:
    """Every row of the output's Parquet files (run_date partitions included; the dead letter is not read).
    Texts not kept in the output are read from the shards its rows name, with the output's options."""
    import pyarrow.parquet as pq

    uris = sorted(
        {
            *output.join("part-*.parquet").expand(),
            *output.join("run_date=*", "part-*.parquet").expand(),
        }
    )
    if not uris:
        raise DataError(
            f"teacher.output: {output.url} holds no part-*.parquet files; is it a distilbeam output?"
        )
    files = [Location(uri, output.options) for uri in uris]
    tables = []
    for file in files:
        uri = file.url
        with file.open_input() as f:
            table = pq.read_table(f)
        if task not in table.column_names:
            columns = [c for c in table.column_names if c not in ("id", "source", "offset", "n_tokens")]
            raise DataError(f"teacher.task: {uri} has no column {task!r} (columns: {', '.join(columns)})")
        tables.append(table)
    rows = [r for t in tables for r in t.select(_columns(t, task)).to_pylist()]
    scores = [r[task] for r in rows]
    if not scores or not isinstance(scores[0], dict) or "scores" not in scores[0]:
        raise DataError(f"teacher.task: column {task!r} of {output.url} is not a classify column")
    labels = [s["label"] for s in scores[0]["scores"]]
    probs = np.array([[s["score"] for s in row["scores"]] for row in scores], dtype=np.float32)
    texts = teacher_texts(rows, text_field, output.options)
    return TeacherRows(texts, probs, labels, _summary_model(output, task), files)


def _columns(table: Any, task: str) -> list[str]:
    return [c for c in ("source", "offset", "char_offset", "text", task) if c in table.column_names]


def _summary_model(output: Location, task: str) -> str | None:
    summary_file = output.join("_SUMMARY.json")
    if not summary_file.exists():
        return None
    with summary_file.open_input() as f:
        summary = json.load(f)
    return (summary.get("tasks", {}).get(task) or {}).get("model")


def teacher_texts(rows: Sequence[Mapping[str, Any]], text_field: str, options: Options) -> list[str]:
    """Each row's text: its ``text`` column (``output.keep_text``), or its record in the shard it was read
    from, reached with ``options`` (JSON Lines and text files by line, Parquet by row)."""
    if rows and "text" in rows[0]:
        return [r["text"] for r in rows]
    if rows and "char_offset" in rows[0]:
        raise DataError(
            "teacher.output: rows are parts of split documents (char_offset); annotate with "
            "output.keep_text: true so each part's text is in the output"
        )
    wanted: dict[str, set[int]] = {}
    for r in rows:
        wanted.setdefault(r["source"], set()).add(r["offset"])
    found = {
        source: _records(Location(source, options), offsets, text_field) for source, offsets in wanted.items()
    }
    return [found[r["source"]][r["offset"]] for r in rows]


def _records(shard: Location, offsets: set[int], text_field: str) -> dict[int, str]:
    import pyarrow.parquet as pq

    name = storage.strip_compression(shard.url.lower())
    try:
        with shard.open_input() as f:
            if name.endswith(".parquet"):
                column = pq.read_table(f, columns=[text_field]).column(text_field).to_pylist()
                return {i: column[i] for i in offsets}
            out = {}
            for n, line in enumerate(f):
                if n in offsets:
                    text = line.decode("utf-8", errors="replace").rstrip("\r\n")
                    out[n] = json.loads(text)[text_field] if name.endswith((".jsonl", ".json")) else text
            return out
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise DataError(
            f"teacher.output: cannot read the texts back from {shard.url} ({type(exc).__name__}: {exc}); "
            "annotate with output.keep_text: true, or set teacher.text_field"
        ) from None


def every_other_layer(teacher: Any) -> Any:
    """A copy of the teacher with layers 0, 2, 4, ... (embeddings, pooler and head kept), for BERT-family and
    DistilBERT models alike."""
    import transformers

    state = teacher.state_dict()
    layers = sorted({int(m.group(2)) for k in state if (m := LAYER.match(k))})
    if len(layers) < 2:
        raise SetupError(
            f"student.init: cannot halve the layers of this {teacher.config.model_type} teacher "
            f"({len(layers)} found); give student.init a checkpoint instead"
        )
    keep = {old: new for new, old in enumerate(layers[::2])}
    mapped = {}
    for key, value in state.items():
        m = LAYER.match(key)
        if m is None:
            mapped[key] = value
        elif int(m.group(2)) in keep:
            mapped[f"{m.group(1)}{keep[int(m.group(2))]}{m.group(3)}"] = value
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(keep)
    student = transformers.AutoModelForSequenceClassification.from_config(config)
    student.load_state_dict(mapped, strict=True)
    return student


class DistilTrainer(Trainer):
    """A Trainer whose ``labels`` are the teacher's distributions [batch, labels]."""

    def __init__(self, *args: Any, temperature: float, hard_label_weight: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.temperature = temperature
        self.hard_label_weight = hard_label_weight

    def compute_loss(self, model: Any, inputs: dict, return_outputs: bool = False, **kwargs: Any) -> Any:
        inputs = dict(inputs)  # the batch is the dataset's own: leave its labels where they are
        teacher = inputs.pop("labels")
        outputs = model(**inputs)
        loss = distillation_loss(outputs.logits, teacher, self.temperature, self.hard_label_weight)
        return (loss, outputs) if return_outputs else loss


def distillation_loss(logits: Any, teacher: Any, temperature: float, hard_label_weight: float) -> Any:
    """KL(teacher_T || student_T) x T², each distribution softened by T, plus the weighted cross-entropy
    on the teacher's top label."""
    import torch.nn.functional as F

    t = temperature
    target = F.softmax(teacher.clamp_min(1e-12).log() / t, dim=-1)
    loss = F.kl_div(F.log_softmax(logits.float() / t, dim=-1), target, reduction="batchmean") * t * t
    if hard_label_weight:
        loss = loss + hard_label_weight * F.cross_entropy(logits.float(), teacher.argmax(dim=-1))
    return loss


def agreement_metrics(prediction: Any) -> dict[str, float]:
    """Top-label agreement with the teacher, and macro-F1 taking the teacher's labels as the truth."""
    from sklearn.metrics import f1_score

    logits = (
        prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
    )
    student, teacher = np.asarray(logits).argmax(-1), np.asarray(prediction.label_ids).argmax(-1)
    return {
        "agreement": float((student == teacher).mean()),
        "macro_f1": float(f1_score(teacher, student, average="macro", zero_division=0)),
    }
