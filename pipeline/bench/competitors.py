"""The stock ways of running the same models that distilbeam is measured against, each run in a child
process of its own (``children.run_measure``), and distilbeam's own run:
(a) ``transformers.pipeline`` over the documents in input order, ``batch_size=32``, timed over its
inference loop only (imports and model load left out, to its advantage);
(b) Beam's stock ``RunInference`` with ``PytorchModelHandlerKeyedTensor``, each document tokenized alone and
padded to a fixed ``max_length`` (Beam's DistilBERT examples), results written as JSON lines;
(c) ``distilbeam run`` end to end on the DirectRunner: JSONL read, annotated, Parquet written."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from distilbeam.pipeline.bench.corpus import CLASSIFY_LABELS, NER_STRIDE

HF_BATCH_SIZE = 32  # what most users pass to transformers.pipeline
# Beam's runinference_metrics DistilBERT example pads to 512; its pytorch_sentiment example to 128.
BEAM_MAX_LENGTH = 512


# -- (a) transformers.pipeline, in a child process -----------------------------------------------------------
def child_transformers(spec: dict[str, Any]) -> dict[str, Any]:
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(spec["threads"])
    with open(spec["corpus"], encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    load_started = time.perf_counter()
    if spec["kind"] == "classify":
        pipe = transformers.pipeline(
            "text-classification", model=spec["model"], device=spec["device"], trust_remote_code=False
        )
        call_kwargs = {"truncation": True}
    else:
        pipe = transformers.pipeline(
            "token-classification",
            model=spec["model"],
            device=spec["device"],
            aggregation_strategy="simple",
            stride=NER_STRIDE,
            trust_remote_code=False,
        )
        call_kwargs = {}
    counts = {"real_tokens": 0, "computed_tokens": 0, "calls": 0, "forward_s": 0.0, "first_batch_s": None}
    state: dict[str, float] = {}

    def before(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        mask = kwargs["attention_mask"]
        counts["real_tokens"] += int(mask.sum())
        counts["computed_tokens"] += int(mask.numel())
        counts["calls"] += 1
        state["started"] = time.perf_counter()

    def after(module: Any, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        if pipe.device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        counts["forward_s"] += now - state["started"]
        if counts["first_batch_s"] is None:
            counts["first_batch_s"] = now - load_started

    pipe.model.register_forward_pre_hook(before, with_kwargs=True)
    pipe.model.register_forward_hook(after, with_kwargs=True)
    loop_started, loop_cpu = time.perf_counter(), time.process_time()
    outputs = list(pipe(texts, batch_size=HF_BATCH_SIZE, **call_kwargs))
    loop_s, loop_cpu = time.perf_counter() - loop_started, time.process_time() - loop_cpu
    if spec["kind"] == "classify":
        labels = [o["label"] if isinstance(o, dict) else o[0]["label"] for o in outputs]
    else:
        labels = [[(e["entity_group"], int(e["start"]), int(e["end"])) for e in o] for o in outputs]
    return {
        **counts,
        "timed_s": loop_s,
        "timed_cpu_s": loop_cpu,
        "load_s": loop_started - load_started,
        "docs": len(texts),
        "labels": labels,
    }


# -- (b) Beam's stock RunInference, in a child process -------------------------------------------------------
def child_beam_stock(spec: dict[str, Any]) -> dict[str, Any]:
    import apache_beam as beam
    import torch
    from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference
    from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerKeyedTensor
    from apache_beam.options.pipeline_options import PipelineOptions
    from transformers import AutoTokenizer, DistilBertConfig

    # Beam's PyTorch handler module must not pull in TensorFlow (only its Hugging Face handler does).
    tensorflow_imported = "tensorflow" in sys.modules
    torch.set_num_threads(spec["threads"])
    model_dir, max_length = spec["model"], spec["max_length"]

    class TokenizeFn(beam.DoFn):
        """As Beam's DistilBERT examples: one document at a time, padded to a fixed length."""

        def setup(self) -> None:
            self._tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)

        def process(self, element: tuple[str, str]):
            key, text = element
            tokens = self._tokenizer(
                text, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
            )
            yield key, {k: torch.squeeze(v, 0) for k, v in tokens.items()}

    def postprocess(element: tuple[str, PredictionResult]) -> str:
        key, result = element
        probs = torch.softmax(result.inference["logits"], dim=-1)
        best = int(torch.argmax(probs))
        return json.dumps({"id": key, "label": CLASSIFY_LABELS[best], "score": float(probs[best])})

    handler = PytorchModelHandlerKeyedTensor(
        state_dict_path=spec["state_dict"],
        model_class=_StockModel.build,
        model_params={"config": DistilBertConfig.from_pretrained(model_dir, trust_remote_code=False)},
        device="GPU" if spec["device"].startswith("cuda") else "CPU",
        inference_fn=_StockModel.infer,
    )
    options = PipelineOptions(["--runner=DirectRunner"])
    started = time.perf_counter()
    with beam.Pipeline(options=options) as p:
        _ = (
            p
            | "Read" >> beam.io.ReadFromText(spec["corpus"])
            | "Parse" >> beam.Map(json.loads)
            | "Key" >> beam.Map(lambda r: (r["id"], r["text"]))
            | "Tokenize" >> beam.ParDo(TokenizeFn())
            | "RunInference" >> RunInference(KeyedModelHandler(handler))
            | "PostProcess" >> beam.Map(postprocess)
            | "Write" >> beam.io.WriteToText(spec["output"], file_name_suffix=".jsonl")
        )
    pipeline_s = time.perf_counter() - started
    ns = p.result.metrics().query()
    inference_us = sum(
        d.committed.sum
        for d in ns["distributions"]
        if d.key.metric.name == "inference_batch_latency_micro_secs" and d.committed
    )
    return {
        "pipeline_s": pipeline_s,
        "forward_s": inference_us / 1e6,
        "first_batch_s": _StockModel.first_batch_done - _StockModel.load_started,
        "tensorflow_imported": tensorflow_imported,
    }


class _StockModel:
    """Beam's own model class and inference function for (b), with the two timestamps start-up is made of.
    Beam runs them in this process (the DirectRunner in memory) and pickles them by reference, so the class
    attributes are the ones this process reads."""

    load_started = 0.0
    first_batch_done = 0.0

    @staticmethod
    def build(config: Any) -> Any:
        from transformers import DistilBertForSequenceClassification

        _StockModel.load_started = time.perf_counter()
        return DistilBertForSequenceClassification(config)

    @staticmethod
    def infer(batch: Any, model: Any, device: Any, inference_args: Any = None, model_id: Any = None) -> Any:
        from apache_beam.ml.inference.pytorch_inference import default_keyed_tensor_inference_fn

        results = default_keyed_tensor_inference_fn(batch, model, device, inference_args, model_id)
        if not _StockModel.first_batch_done:
            _StockModel.first_batch_done = time.perf_counter()
        return results


# -- (c) distilbeam run --------------------------------------------------------------------------------------
def distilbeam_config(
    work: Path, name: str, corpus: Path, models: dict[str, Path], tasks: str, precision: str, device: str
) -> Path:
    import yaml

    task_map: dict[str, Any] = {"sentiment": {"kind": "classify", "model": str(models["classifier"])}}
    # Like for like with (a) and (b), which read the first 512 tokens of a document.
    task_map["sentiment"]["long_text"] = "truncate"
    if tasks == "classify+ner":
        task_map["entities"] = {
            "kind": "ner",
            "model": str(models["ner"]),
            "aggregation": "simple",
            "stride": NER_STRIDE,
        }
    config = {
        "input": {"paths": [str(corpus)], "format": "jsonl"},
        "tasks": task_map,
        "runtime": {"device": device, "precision": precision},
        "output": {"path": str(work / "out" / name)},
        "beam": {"runner": "DirectRunner"},
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def distilbeam_command(config: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "distilbeam.pipeline.cli", "run", "--config", str(config), *flags]
