"""The pieces of ``distilbeam bench --scale`` that decide its figures: the null model's outputs, the process
tree's memory, and targets judged from the runs."""

from __future__ import annotations

import subprocess
import sys

import torch
from transformers import DistilBertConfig

from distilbeam.pipeline.bench import ceiling, children, scale


def test_null_model_returns_logits_of_the_shape_a_model_would():
    config = DistilBertConfig(id2label={0: "O", 1: "B-PER", 2: "I-PER"})
    ids = torch.zeros((5, 7), dtype=torch.long)
    per_token = ceiling.NullModel(argparse_model(config), per_token=True)
    per_doc = ceiling.NullModel(argparse_model(config), per_token=False)
    assert per_token(input_ids=ids, attention_mask=ids).logits.shape == (5, 7, 3)
    assert per_doc(input_ids=ids, attention_mask=ids).logits.shape == (5, 3)
    again = per_token(input_ids=ids, attention_mask=ids).logits
    assert torch.equal(again, per_token(input_ids=ids, attention_mask=ids).logits)  # the same every call
    assert again.std() > 0.5  # varied: post-processing sees a mix of labels


def argparse_model(config):
    import argparse

    return argparse.Namespace(config=config)


def test_tree_memory_counts_the_children_too(tmp_path):
    code = "import subprocess, sys, time; b = bytearray(200 << 20); " + (
        "subprocess.run([sys.executable, '-c', 'import time; c = bytearray(200 << 20); time.sleep(1.5)'])"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    memory = children.TreeMemory(proc.pid, interval=0.05)
    proc.wait()
    assert memory.stop() > 400  # both processes' 200 MB, at once


def test_targets_are_judged_from_the_runs():
    runs = {
        "demo_whole": {"docs_per_s": 1200.0, "peak_rss_mb": 1000.0, "first_commit_fraction": 0.2},
        "demo_quarter": {"peak_rss_mb": 950.0, "docs": 100, "docs_per_s": 50.0},
        "host_classify": {"docs_per_s": 4000},
        "host_ner": {"docs_per_s": 2500},
        "base_transformers": {"wall_s": 100.0, "forward_s": 90.0, "computed_tokens": 1500},
        "base_distilbeam": {
            "wall_s": 40.0,
            "forward_s": 32.0,
            "padding_fraction": 0.01,
            "computed_tokens": 1000,
        },
        "transformers_demo_classify": {"timed_s": 1.0},
        "transformers_demo_ner": {"timed_s": 3.0},
    }
    figures = scale.figures(runs)
    met = {name: t["met"] for name, t in figures["targets"].items()}
    assert met == {
        "docs_per_s": True,
        "peak_rss_mb": True,
        "memory_whole_over_quarter": True,
        "first_commit_fraction": True,
        "host_classify_docs_per_s": False,
        "host_ner_docs_per_s": True,
        "base_whole_process_ratio": False,
        "base_padding_fraction": True,
    }
    assert figures["transformers_pipeline_quarter_docs_per_s"] == 25.0
    assert figures["quarter_over_transformers_pipeline"] == 2.0
    # The base ratio's bound: 2.5x as run, 3.125x were distilbeam's whole process its forward alone.
    assert figures["base_distilbeam_beyond_forward_s"] == 8.0
    assert figures["base_transformers_beyond_forward_s"] == 10.0
    assert figures["base_computed_tokens_ratio"] == 1.5
    assert figures["base_ratio_without_time_beyond_forward"] == 3.125
