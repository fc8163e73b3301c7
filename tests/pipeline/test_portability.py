"""Nothing in the job graph depends on the launching machine: the pickled transforms are small, hold no
model, refer to distilbeam's code by name (workers run their installed copy, not code pickled from the
launcher's files), and give workers absolute paths; a worker missing a local model says what to do."""

from __future__ import annotations

import base64
import bz2
import dataclasses
import json
import os
import shutil
import zlib

import apache_beam as beam
import pytest
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2

from distilbeam.pipeline import config, runs
from distilbeam.pipeline.graph import build, worker_path
from distilbeam.pipeline.plan import prepare
from distilbeam.transforms import SetupError
from tests.conftest import REPO, write_jsonl

# A pickled function or DoFn stays well under this; a pickled model (even the tiny test ones) does not.
MAX_PICKLED_BYTES = 64 * 1024


@pytest.fixture
def launch_dir(tmp_path, models_dir, monkeypatch):
    """A launch directory with relative paths in the config, as users write them."""
    (tmp_path / "shards").mkdir()
    write_jsonl(tmp_path / "shards" / "a.jsonl", [{"id": "a", "text": "Alice flew to Paris."}])
    shutil.copytree(models_dir / "classifier", tmp_path / "models" / "classifier")
    shutil.copytree(models_dir / "ner", tmp_path / "models" / "ner")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def relative_config():
    return config.from_dict(
        {
            "input": {"paths": ["shards/*.jsonl"]},
            "tasks": {
                "sentiment": {"kind": "classify", "model": "models/classifier"},
                "entities": {"kind": "ner", "model": "./models/ner"},
            },
            "output": {"path": "out/run"},
        }
    )


def pickled_payloads(pipeline: beam.Pipeline) -> dict[str, bytes]:
    """Every pickled user function in the graph (DoFns and CombineFns), decompressed."""
    proto = pipeline.to_runner_api()
    found = {}
    for transform in proto.components.transforms.values():
        urn, payload = transform.spec.urn, transform.spec.payload
        if urn == common_urns.primitives.PAR_DO.urn:
            spec = beam_runner_api_pb2.ParDoPayload.FromString(payload).do_fn
        elif urn in (common_urns.composites.COMBINE_PER_KEY.urn, common_urns.composites.COMBINE_GLOBALLY.urn):
            spec = beam_runner_api_pb2.CombinePayload.FromString(payload).combine_fn
        else:
            continue
        found[transform.unique_name] = _decompress(spec.payload)
    return found


def _decompress(payload: bytes) -> bytes:
    raw = base64.b64decode(payload)
    try:
        return bz2.decompress(raw)
    except OSError:
        return zlib.decompress(raw)


def planned(cfg):
    """The plan as a run has it: shards chosen (the output read as empty)."""
    return runs.choose_shards(prepare(cfg), "run-1", False, None, read_output=False)


def test_graph_pickles_small_and_holds_no_model(launch_dir):
    plan = planned(relative_config())
    pipeline = beam.Pipeline()
    build(pipeline, plan)
    payloads = pickled_payloads(pipeline)
    assert any("AnnotateSplits" in name for name in payloads)
    weights = (launch_dir / "models" / "ner" / "model.safetensors").read_bytes()
    assert len(weights) > MAX_PICKLED_BYTES  # so a pickled model could not pass the size check below
    sample = weights[len(weights) // 2 : len(weights) // 2 + 64]
    for name, data in payloads.items():
        assert len(data) < MAX_PICKLED_BYTES, f"{name} pickles {len(data)} bytes"
        assert sample not in data, f"{name} carries model weights"
        for module in (b"torch._utils", b"torch.nn", b"transformers.models"):  # tensors, modules, models
            assert module not in data, f"{name} pickles a model"
    assert sum(map(len, payloads.values())) < 4 * MAX_PICKLED_BYTES


def test_graph_refers_to_our_code_by_name_not_by_the_launchers_files(launch_dir):
    # Functions pickled by value would carry their source file's path on the launching machine.
    plan = planned(relative_config())
    pipeline = beam.Pipeline()
    build(pipeline, plan)
    # Our packages only: a virtual environment inside the checkout holds Beam's own files too.
    sources = [str(REPO / package).encode() for package in ("pipeline", "transforms")]
    for name, data in pickled_payloads(pipeline).items():
        for source in sources:
            assert source not in data, f"{name} pickles code by value from {source.decode()}"


def test_workers_get_absolute_paths(launch_dir):
    cfg = relative_config()
    plan = prepare(cfg)
    handlers = {h.name: h for g in plan.groups for h in g.handlers}
    assert handlers["sentiment"].settings.model == str(launch_dir / "models" / "classifier")
    assert handlers["entities"].settings.model == str(launch_dir / "models" / "ner")
    assert [g.tokenizer.uri for g in plan.groups] == [str(launch_dir / "models" / "classifier")]
    assert [s.uri for s in plan.shards] == [str(launch_dir / "shards" / "a.jsonl")]
    assert worker_path(cfg.output.path) == str(launch_dir / "out" / "run")
    assert worker_path("gs://bucket/out") == "gs://bucket/out"
    # The run's identity keeps the config's own words, so it does not change with the launch directory.
    assert plan.facts["tasks"]["sentiment"]["model"] == "models/classifier"
    assert json.dumps(plan.facts["tasks"]).count(str(launch_dir)) == 0


def test_worker_without_a_local_model_says_what_to_do(launch_dir, tmp_path_factory):
    plan = prepare(relative_config())
    handler = next(h for g in plan.groups for h in g.handlers if h.name == "sentiment")
    elsewhere = tmp_path_factory.mktemp("worker")
    os.chdir(elsewhere)  # a worker in another directory: the absolute path still finds the model
    assert handler.load_model().threads >= 1
    shutil.rmtree(launch_dir / "models")  # a worker machine without the launcher's disk
    for load in (handler.load_model, plan.groups[0].load_tokenizer):
        with pytest.raises(SetupError) as error:
            load()
        message = str(error.value)
        assert str(launch_dir / "models" / "classifier") in message
        assert "on worker" in message and "gs://" in message and "worker image" in message


def test_remote_models_are_left_for_workers_to_fetch():
    from distilbeam.transforms.tasks.build import worker_settings
    from distilbeam.transforms.tasks.classify import Settings

    remote = Settings(model="gs://bucket/models/sst2")
    assert worker_settings(remote, None) is remote
    hub = Settings(model="distilbert-base-uncased-finetuned-sst-2-english")
    assert dataclasses.asdict(worker_settings(hub, None)) == dataclasses.asdict(hub)
