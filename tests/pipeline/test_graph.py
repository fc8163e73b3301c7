"""The pipeline's shape: documents never cross a stage boundary; what does (shards, splits, split results)
has a coder of its own, not pickle."""

from __future__ import annotations

import re

import apache_beam as beam
from apache_beam.runners import pipeline_context

from distilbeam.pipeline import runs
from distilbeam.pipeline.config import from_dict
from distilbeam.pipeline.graph import build
from distilbeam.pipeline.plan import prepare
from distilbeam.transforms.read import ShardCoder, SplitCoder
from distilbeam.transforms.write import SplitResultCoder


def test_only_shards_splits_and_results_cross_stages_each_with_its_own_coder(models_dir, tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": "1", "text": "hello"}\n')
    cfg = from_dict(
        {
            "input": {"paths": [str(tmp_path / "*.jsonl")]},
            "tasks": {"s": {"kind": "classify", "model": str(models_dir / "classifier")}},
            "output": {"path": str(tmp_path / "out")},
        }
    )
    plan = runs.choose_shards(prepare(cfg), "run-1", False, None, read_output=False)
    pipeline = beam.Pipeline()
    build(pipeline, plan)
    proto = pipeline.to_runner_api()
    context = pipeline_context.PipelineContext(proto.components)
    coders = {  # PCollection names are prefixed with their length
        re.sub(r"^\d+", "", pc.unique_name): type(context.coders.get_by_id(pc.coder_id))
        for pc in proto.components.pcollections.values()
    }
    assert coders["ListShards/Map(decode).None"] is ShardCoder
    assert coders["SpreadShards/RemoveRandomKeys.None"] is ShardCoder
    assert coders["SplitShards.None"] is SplitCoder
    assert coders["SpreadSplits/RemoveRandomKeys.None"] is SplitCoder
    assert coders["AnnotateSplits/AnnotateAndWrite.None"] is SplitResultCoder
    shuffled = [
        t.unique_name
        for t in proto.components.transforms.values()
        if t.spec.urn == "beam:transform:group_by_key:v1"
    ]
    assert sorted(shuffled) == [
        "SpreadShards/ReshufflePerKey/GroupByKey",
        "SpreadSplits/ReshufflePerKey/GroupByKey",
        "WriteRunReport/AddUp/CombinePerKey/GroupByKey",
    ]
