"""configs/dataflow-gpu.yaml builds a Dataflow job offline (``--dry_run``: no network, no credentials) with
our transforms, GPU workers and the custom container; the Flex Template's parameters are flags its entry
point accepts, and launching it by those parameters builds the same job."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import DebugOptions, GoogleCloudOptions, WorkerOptions
from apache_beam.runners.dataflow.internal import apiclient

from distilbeam.pipeline import config, flex_template, runners, runs
from distilbeam.pipeline.graph import build
from distilbeam.pipeline.options import pipeline_options, worker_processes
from distilbeam.pipeline.plan import prepare
from distilbeam.transforms import state
from tests.conftest import REPO, write_jsonl
from tests.deploy.test_container import arg_default

CONFIG = REPO / "configs" / "dataflow-gpu.yaml"
METADATA = REPO / "configs" / "flex-template" / "metadata.json"
ACCELERATOR = "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver:latest"
# What keeps a Dataflow job build offline (ENVIRONMENT.md): no service, no credentials, no staging.
DRY_RUN = [
    "--dry_run=True",
    "--project=test-project",
    "--region=us-central1",
    "--temp_location=gs://bucket/tmp",
    "--no_auth",
    "--sdk_location=container",
]


@pytest.fixture
def local_inputs(tmp_path, models_dir) -> list[str]:
    """--set overrides that point the GPU config's models and shards at local copies, so that the launch-time
    checks (models exist and fit their tasks, globs match) run with no bucket; the beam: section stays."""
    write_jsonl(tmp_path / "shard-0.jsonl", [{"id": "a", "text": "Alice flew to Paris."}])
    return [
        f"input.paths={json.dumps([str(tmp_path / '*.jsonl')])}",
        f"tasks.sentiment.model={models_dir / 'classifier'}",
        f"tasks.entities.model={models_dir / 'ner'}",
        f"output.path={tmp_path / 'out'}",
    ]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory, models_dir):
    """The GPU config's Dataflow job, built offline the way ``distilbeam run`` builds it."""
    tmp = tmp_path_factory.mktemp("dataflow")
    write_jsonl(tmp / "shard-0.jsonl", [{"id": "a", "text": "Alice flew to Paris."}])
    cfg = config.load(
        CONFIG,
        [
            f"input.paths={json.dumps([str(tmp / '*.jsonl')])}",
            f"tasks.sentiment.model={models_dir / 'classifier'}",
            f"tasks.entities.model={models_dir / 'ner'}",
            f"output.path={tmp / 'out'}",
        ],
    )
    options = pipeline_options(cfg.beam, DRY_RUN)
    runners.check_paths(cfg, options)
    plan = prepare(cfg, worker_processes(options), options)
    # As `distilbeam run` does for a dry run: every shard counts as new, the output is not read.
    plan = runs.choose_shards(plan, state.new_run_id(), False, None, read_output=False)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, plan)
    return cfg, plan, pipeline.run()


def test_dry_run_builds_a_job_with_our_transforms(dry_run):
    _, _, result = dry_run
    assert result.state == "DONE"
    names = {t.unique_name for t in result.job.proto_pipeline.components.transforms.values()}
    for expected in (
        "SplitShards",
        "AnnotateSplits/AnnotateAndWrite",
        "WriteRunReport/WriteSummaryAndReport",
    ):
        assert expected in names


def test_dry_run_job_has_gpu_workers_and_the_custom_container(dry_run):
    cfg, _, result = dry_run
    image = cfg.beam["sdk_container_image"]
    options = result.job.options
    assert ACCELERATOR in options.view_as(GoogleCloudOptions).dataflow_service_options
    workers = options.view_as(WorkerOptions)
    assert workers.machine_type.startswith("g2-")  # L4 GPUs attach to G2 machines only
    assert workers.sdk_container_image == image
    assert workers.disk_size_gb >= 50
    assert "no_use_multiple_sdk_containers" in options.view_as(DebugOptions).experiments
    environments = result.job.proto_pipeline.components.environments.values()
    containers = [e for e in environments if e.urn == "beam:env:docker:v1"]
    assert containers and all(image.encode() in e.payload for e in containers)


def test_dry_run_job_environment_as_dataflow_receives_it(dry_run):
    # The Environment message the job would be created with: worker pool, container, service options.
    cfg, _, result = dry_run
    env = apiclient.Environment(
        packages=[],
        options=result.job.options,
        environment_version="8",
        proto_pipeline_staged_url="gs://bucket/staging/pipeline.pb",
        proto_pipeline=result.job.proto_pipeline,
    ).proto
    (pool,) = env.worker_pools
    assert pool.machine_type == cfg.beam["machine_type"]
    assert pool.disk_size_gb == cfg.beam["disk_size_gb"]
    assert pool.num_threads_per_worker == cfg.beam["number_of_worker_harness_threads"]
    images = [c.container_image for c in pool.sdk_harness_container_images]
    assert images == [cfg.beam["sdk_container_image"]]
    assert ACCELERATOR in env.service_options


def test_gpu_workers_run_one_process_with_the_machines_cores(dry_run):
    _, plan, _ = dry_run
    runtimes = {h.runtime for g in plan.groups for h in g.handlers}
    assert {(r.device, r.worker_processes, r.planned_device) for r in runtimes} == {("cuda", 1, "cuda")}
    numerics = {name: task["numerics"] for name, task in plan.facts["tasks"].items()}
    assert numerics == {name: {"device": "cuda", "precision": "fp16"} for name in ("sentiment", "entities")}


# The CUDA major version torch 2.13.0 is built for on each index the image may install it from, and the
# oldest driver branch that runs each (NVIDIA's CUDA toolkit release notes: 13.0 needs 580.65.06+; any 12.x
# runs on R525+ through minor-version compatibility).
TORCH_CUDA = {
    "https://pypi.org/simple": 13,
    "https://download.pytorch.org/whl/cu126": 12,
    "https://download.pytorch.org/whl/cu128": 12,
}
DRIVER_BRANCH = {12: 525, 13: 580}
# What Dataflow's default driver is promised to run on an L4 (its L4 page: driver 525 or later, CUDA 12).
DATAFLOW_DEFAULT_BRANCH = 525


def test_the_driver_dataflow_installs_runs_the_images_torch():
    cuda = TORCH_CUDA[arg_default("TORCH_INDEX_URL")]
    (option,) = config.load(CONFIG).beam["dataflow_service_options"]
    fields = dict(f.partition(":")[::2] for f in option.removeprefix("worker_accelerator=").split(";"))
    assert "install-nvidia-driver" in fields
    driver = fields["install-nvidia-driver"] or "default"
    if driver == "latest":
        return
    branch = DATAFLOW_DEFAULT_BRANCH if driver == "default" else int(driver.split(".")[0].rstrip("x") or 0)
    assert branch >= DRIVER_BRANCH[cuda], f"install-nvidia-driver:{driver} does not run CUDA {cuda}"


def test_a_dataflow_job_that_asks_for_gpus_is_planned_as_a_gpu_run(local_inputs, monkeypatch):
    # The launcher has no GPU; with runtime.device: auto the job is still planned (and hashed) for the
    # workers' GPUs, because it asks Dataflow for them.
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = config.load(CONFIG, [*local_inputs, "runtime.device=auto", "runtime.precision=auto"])
    plan = prepare(cfg, 1, pipeline_options(cfg.beam, DRY_RUN))
    assert {t["numerics"]["device"] for t in plan.facts["tasks"].values()} == {"cuda"}
    without = {k: v for k, v in cfg.beam.items() if k != "dataflow_service_options"}
    assert runners.planned_device(cfg, pipeline_options(without, DRY_RUN)) == "cpu"


def test_gpu_config_keeps_data_and_models_in_cloud_storage():
    cfg = config.load(CONFIG)
    assert all(p.startswith("gs://") for p in cfg.input.paths)
    assert cfg.output.path.startswith("gs://")
    assert all(t.model.startswith("gs://") for t in cfg.tasks.values())
    assert cfg.beam["temp_location"].startswith("gs://")


def test_dataflow_refuses_local_inputs_and_outputs_unless_dry_run(local_inputs, caplog):
    cfg = config.load(CONFIG, local_inputs)
    live = pipeline_options(cfg.beam, [])
    with pytest.raises(config.ConfigError, match="workers cannot read or write this machine's disk"):
        runners.check_paths(cfg, live)
    with caplog.at_level(logging.WARNING, logger="distilbeam.pipeline.runners"):
        runners.check_paths(cfg, pipeline_options(cfg.beam, DRY_RUN))
    assert "dry run" in caplog.text
    assert "tasks.sentiment.model" in caplog.text  # a local model must be baked into the image


def test_dry_run_is_refused_where_the_runner_would_run_the_job():
    assert runners.is_dry_run(pipeline_options({"runner": "DataflowRunner"}, ["--dry_run=True"]))
    assert not runners.is_dry_run(pipeline_options({"runner": "DataflowRunner"}, []))
    with pytest.raises(config.ConfigError, match="DirectRunner would run the job anyway"):
        runners.is_dry_run(pipeline_options({}, ["--dry_run=True"]))


def test_flex_template_parameters_are_the_entry_points_flags():
    metadata = json.loads(METADATA.read_text())
    assert metadata["name"] and metadata["description"]
    names = [p["name"] for p in metadata["parameters"]]
    assert sorted(names) == sorted(flex_template.PARAMETERS)
    flags = {a.dest for a in flex_template.parser()._actions if a.option_strings and a.dest != "help"}
    assert set(names) == flags
    for p in metadata["parameters"]:
        assert p["label"] and p["helpText"], p["name"]
        required = next(a.required for a in flex_template.parser()._actions if a.dest == p["name"])
        assert p.get("isOptional", False) == (not required), p["name"]


def test_flex_template_parameters_become_config_overrides():
    args = flex_template.cli_args(
        [
            "--config=/opt/distilbeam/configs/dataflow-gpu.yaml",
            "--input_paths=gs://b/a/*.jsonl, gs://b/c/*.txt",
            "--output_path=gs://b/out/2026-01-01",
            '--overrides={"batching.max_tokens": 16384, "beam.sdk_container_image": "r/img:1"}',
            "--force=true",
            "--project=p",
            "--region=europe-west4",
        ]
    )
    assert args[:4] == ["run", "--config", "/opt/distilbeam/configs/dataflow-gpu.yaml", "--detach"]
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    assert sets == [
        'input.paths=["gs://b/a/*.jsonl", "gs://b/c/*.txt"]',
        'output.path="gs://b/out/2026-01-01"',
        "batching.max_tokens=16384",
        'beam.sdk_container_image="r/img:1"',
    ]
    assert "--force" in args
    assert args[-2:] == ["--project=p", "--region=europe-west4"]  # Dataflow's own options, for Beam
    for bad in (["--overrides=[1]"], ["--overrides={"], ["--force=yes"]):
        with pytest.raises(config.SetupError):
            flex_template.cli_args(["--config=/c.yaml", *bad])


def test_flex_template_launch_builds_the_job(local_inputs, tmp_path):
    # What Dataflow's launcher runs in the template image: launch.py with the parameters as flags, then
    # `distilbeam run`, which for a dry run builds the job and exits 0 without touching the output.
    overrides = dict(s.split("=", 1) for s in local_inputs if not s.startswith(("input.", "output.")))
    params = [
        f"--config={CONFIG}",
        f"--input_paths={json.loads(local_inputs[0].split('=', 1)[1])[0]}",
        f"--output_path={tmp_path / 'out'}",
        f"--overrides={json.dumps(overrides)}",
    ]
    proc = subprocess.run(
        [sys.executable, str(METADATA.parent / "launch.py"), *params, *DRY_RUN],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "dry run: the job was built and checked, not submitted" in proc.stdout
    assert not (tmp_path / "out").exists()
