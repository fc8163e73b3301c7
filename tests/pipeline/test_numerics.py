"""The numeric path a run computes its rows on, decided at launch: the device kind (``runtime.device: auto``
resolved for where the workers will run) and the effective precision are part of each task's identity, so
an incremental output re-annotates when they change; and a worker that cannot run what was planned refuses
to load the model, saying why, instead of annotating on another device."""

from __future__ import annotations

import json

import pytest
import torch

from distilbeam.pipeline import config, runners
from distilbeam.pipeline.options import pipeline_options
from distilbeam.pipeline.plan import prepare
from distilbeam.transforms import devices
from tests.conftest import write_jsonl

ACCELERATOR = "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver:latest"


def load(tmp_path, models_dir, runtime=None, beam=None) -> config.Config:
    (tmp_path / "in").mkdir(exist_ok=True)
    shard = write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": "a", "text": "Alice flew to Paris."}])
    return config.from_dict(
        {
            "input": {"paths": [str(shard)]},
            "tasks": {"t": {"kind": "classify", "model": str(models_dir / "classifier")}},
            "output": {"path": str(tmp_path / "out")},
            "runtime": runtime or {},
            "beam": beam or {},
        }
    )


@pytest.fixture(params=[False, True], ids=["launcher without GPU", "launcher with GPU"])
def launcher_gpu(request, monkeypatch) -> bool:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: request.param)
    return request.param


def test_auto_runs_where_the_workers_will_run(tmp_path, models_dir, launcher_gpu):
    local = "cuda" if launcher_gpu else "cpu"
    cfg = load(tmp_path, models_dir)
    assert runners.planned_device(cfg) == local  # the DirectRunner runs on this machine
    flink = pipeline_options({"runner": "FlinkRunner"}, [])
    assert runners.planned_device(cfg, flink) == local  # taken to be machines like the launcher
    # Dataflow workers have a GPU when the job asks for one (in the config's beam: section or as a flag),
    # whatever the launching machine has.
    asked = load(
        tmp_path, models_dir, beam={"runner": "DataflowRunner", "dataflow_service_options": [ACCELERATOR]}
    )
    assert runners.planned_device(asked) == "cuda"
    plain = load(tmp_path, models_dir, beam={"runner": "DataflowRunner"})
    assert runners.planned_device(plain) == "cpu"
    flags = pipeline_options(plain.beam, [f"--dataflow_service_options={ACCELERATOR}"])
    assert runners.planned_device(plain, flags) == "cuda"


def test_a_configured_device_or_int8_is_what_is_planned(tmp_path, models_dir, launcher_gpu):
    assert runners.planned_device(load(tmp_path, models_dir, {"device": "cpu"})) == "cpu"
    assert runners.planned_device(load(tmp_path, models_dir, {"device": "cuda:1"})) == "cuda"
    assert runners.planned_device(load(tmp_path, models_dir, {"precision": "int8"})) == "cpu"


def annotation(tmp_path, models_dir, runtime, gpu: bool, monkeypatch) -> tuple[str, dict]:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    plan = prepare(load(tmp_path, models_dir, runtime))
    metadata = json.loads(plan.schema.metadata[b"distilbeam.tasks"])
    assert metadata["t"]["numerics"] == plan.facts["tasks"]["t"]["numerics"]
    return plan.facts["annotation_sha256"], plan.facts["tasks"]["t"]["numerics"]


def test_the_numeric_path_is_in_the_annotation_hash(tmp_path, models_dir, monkeypatch):
    paths = {
        "cpu fp32": annotation(tmp_path, models_dir, {"device": "cpu"}, False, monkeypatch),
        "cuda fp16": annotation(tmp_path, models_dir, {}, True, monkeypatch),
        "cuda fp32": annotation(tmp_path, models_dir, {"precision": "fp32"}, True, monkeypatch),
        "cuda bf16": annotation(tmp_path, models_dir, {"precision": "bf16"}, True, monkeypatch),
        "cpu int8": annotation(tmp_path, models_dir, {"precision": "int8"}, True, monkeypatch),
    }
    for name, (_, numerics) in paths.items():
        assert f"{numerics['device']} {numerics['precision']}" == name
    assert len({sha for sha, _ in paths.values()}) == len(paths)
    # The same numeric path, however it was asked for, is the same annotation: auto on a CPU is fp32.
    same = annotation(tmp_path, models_dir, {"device": "auto", "precision": "auto"}, False, monkeypatch)
    assert same == paths["cpu fp32"]


def test_a_worker_that_cannot_use_the_planned_gpu_refuses_to_load(tmp_path, models_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    plan = prepare(load(tmp_path, models_dir))  # planned where a GPU was there: cuda, fp16
    (handler,) = plan.groups[0].handlers
    assert handler.runtime.planned_device == "cuda"
    # The worker: torch built for CUDA 13.0 beside a driver too old for it, so torch sees no GPU.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(devices, "driver_version", lambda: "535.104.05")
    with pytest.raises(devices.DeviceMismatch) as refused:
        handler.load_model()
    message = str(refused.value)
    for part in (
        "task t",
        "planned for a GPU",
        "CUDA 13.0",
        "NVIDIA driver 535.104.05",
        "runtime.device: cpu",
    ):
        assert part in message


def test_a_worker_with_a_gpu_refuses_a_run_planned_for_the_cpu(tmp_path, models_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    plan = prepare(load(tmp_path, models_dir))
    (handler,) = plan.groups[0].handlers
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(
        devices.DeviceMismatch, match=r"planned for the CPU .* set runtime\.device to cpu or cuda"
    ):
        handler.load_model()


def test_a_configured_gpu_that_is_not_there_is_refused_before_loading(tmp_path, models_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    plan = prepare(load(tmp_path, models_dir, {"device": "cuda"}))
    (handler,) = plan.groups[0].handlers
    with pytest.raises(devices.DeviceMismatch, match=r"cannot use one \(torch .* built for"):
        handler.load_model()


def test_the_driver_version_is_read_from_the_kernel_module(tmp_path):
    proc = tmp_path / "version"
    proc.write_text(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  (dvs@U16)\n"
        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
    )
    assert devices.driver_version(str(proc)) == "580.65.06"
    assert devices.driver_version(str(tmp_path / "missing")) is None
