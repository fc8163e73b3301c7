"""Distillation parts: a student with every other layer of a BERT or DistilBERT teacher, the KL loss, and the
teacher's rows read back from an output folder (texts from its text column or from the shards)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from distilbeam.transforms import SetupError
from distilbeam.transforms.storage import Location
from distilbeam.transforms.training import distil
from distilbeam.transforms.training.data import DataError


def bert(layers: int):
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=32
    )
    torch.manual_seed(0)
    return BertForSequenceClassification(config).eval()


def distilbert(layers: int):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(vocab_size=100, dim=16, n_layers=layers, n_heads=2, hidden_dim=32)
    torch.manual_seed(0)
    return DistilBertForSequenceClassification(config).eval()


@pytest.mark.parametrize(("build", "stack"), [(bert, "bert.encoder"), (distilbert, "distilbert.transformer")])
def test_every_other_layer_keeps_even_layers_and_the_rest(build, stack):
    teacher = build(6)
    student = distil.every_other_layer(teacher)
    assert student.config.num_hidden_layers == 3
    t, s = teacher.state_dict(), student.state_dict()
    for new, old in enumerate((0, 2, 4)):
        keys = [k for k in s if k.startswith(f"{stack}.layer.{new}.")]
        assert keys
        for key in keys:
            assert torch.equal(s[key], t[key.replace(f"layer.{new}.", f"layer.{old}.")])
    for key in s:
        if ".layer." not in key:
            assert torch.equal(s[key], t[key])
    with pytest.raises(SetupError, match="cannot halve the layers"):
        distil.every_other_layer(build(1))


def test_loss_is_zero_when_the_student_matches_and_scaled_by_t_squared():
    teacher = torch.softmax(torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), dim=-1)
    for t in (1.0, 2.0, 4.0):
        assert distil.distillation_loss(teacher.log(), teacher, t, 0.0).item() == pytest.approx(0, abs=1e-6)
    logits = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 0.0]])
    soft = distil.distillation_loss(logits, teacher, 1.0, 0.0)
    hard = torch.nn.functional.cross_entropy(logits, teacher.argmax(-1))
    assert distil.distillation_loss(logits, teacher, 1.0, 0.5).item() == pytest.approx(soft + 0.5 * hard)


def write_output(out, rows, task="topic", keep_text=False):
    out.mkdir(parents=True)
    table = [
        {
            "id": str(i),
            "source": source,
            "offset": offset,
            **({"text": text} if keep_text else {}),
            task: {
                "label": "a",
                "score": p,
                "scores": [{"label": "a", "score": p}, {"label": "b", "score": 1 - p}],
                "n_chunks": 1,
                "truncated": False,
            },
        }
        for i, (source, offset, text, p) in enumerate(rows)
    ]
    pq.write_table(pa.Table.from_pylist(table), out / "part-0.parquet")
    (out / "_SUMMARY.json").write_text(json.dumps({"tasks": {task: {"model": "/models/teacher"}}}))


def test_teacher_rows_from_the_text_column_or_the_shards(tmp_path):
    shard = tmp_path / "docs.jsonl"
    shard.write_text("".join(json.dumps({"body": f"doc {i}"}) + "\n" for i in range(4)))
    lines = tmp_path / "docs.txt"
    lines.write_text("first\nsecond\n")
    rows = [(str(shard), 3, "doc 3", 0.9), (str(lines), 1, "second", 0.2), (str(shard), 0, "doc 0", 0.6)]
    write_output(tmp_path / "kept", rows, keep_text=True)
    write_output(tmp_path / "read", rows)
    kept = distil.read_teacher(Location(str(tmp_path / "kept")), "topic", "body")
    read = distil.read_teacher(Location(str(tmp_path / "read")), "topic", "body")
    assert kept.texts == read.texts == ["doc 3", "second", "doc 0"]
    assert kept.labels == ["a", "b"] and kept.model == "/models/teacher"
    np.testing.assert_allclose(read.probs, [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], rtol=1e-6)
    with pytest.raises(DataError, match=r"teacher\.task: .*has no column 'sentiment' \(columns: topic\)"):
        distil.read_teacher(Location(str(tmp_path / "read")), "sentiment", "body")
    with pytest.raises(DataError, match=r"teacher\.output: .* holds no part-\*\.parquet"):
        distil.read_teacher(Location(str(tmp_path)), "topic", "body")
