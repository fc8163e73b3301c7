"""What changes when the pipeline leaves the launching machine: which paths its workers can reach, which
device they will run the models on, how a dry run or a detached run ends, and what the workers report back
(model loads, torch threads) through Beam metrics, which every runner collects."""

from __future__ import annotations

import logging
from typing import Any

from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import (
    DebugOptions,
    FlinkRunnerOptions,
    GoogleCloudOptions,
    PipelineOptions,
    TestOptions,
)

from distilbeam.pipeline.config import Config, ConfigError
from distilbeam.pipeline.options import pipeline_options, runner_name
from distilbeam.transforms import storage
from distilbeam.transforms.batching import device_kind
from distilbeam.transforms.models import ModelRef

log = logging.getLogger(__name__)

# Runners whose workers are other machines, which never see the launcher's disk.
REMOTE_RUNNERS = ("DataflowRunner",)
# flink_master values for which Beam starts Flink on the launching machine itself.
LOCAL_FLINK = ("[auto]", "[local]")
# The distribution RunInference updates once per model load, in the handler's metrics namespace.
LOAD_METRIC = "load_model_latency_milli_secs"
THREADS_METRIC = "torch_threads"
# What the DataflowRunner imports from Beam's Google Cloud extra (distilbeam's dataflow extra): the Dataflow
# API client, and the Cloud Storage and auth libraries it stages the job with.
DATAFLOW_MODULES = ("google.cloud.dataflow", "google.cloud.storage", "google.auth")


def is_dry_run(options: PipelineOptions) -> bool:
    """Whether the job is only to be built; only the DataflowRunner knows how (others would run it)."""
    if not options.view_as(TestOptions).dry_run:
        return False
    if runner_name(options) not in REMOTE_RUNNERS:
        raise ConfigError(
            f"--dry_run: {runner_name(options)} would run the job anyway; a dry run needs the DataflowRunner"
        )
    return True


def planned_device(cfg: Config, options: PipelineOptions | None = None) -> str:
    """The kind of device (cpu or cuda) the workers will run the models on, decided when the job is
    launched: it goes into the annotation hash with the precision it implies, and each worker refuses to
    load a model on another (``devices.check_device``). ``runtime.device: auto`` is the GPU
    where one will be there: on Dataflow, when the job asks for one (``worker_accelerator`` in
    ``dataflow_service_options``); elsewhere (the DirectRunner, portable runners, Flink) where the
    launching machine's torch can use one, as the workers are taken to be machines like it. int8 runs on
    the CPU. ``options`` defaults to the config's ``beam:`` section alone."""
    if cfg.runtime.precision == "int8":
        return "cpu"
    if cfg.runtime.device != "auto":
        return device_kind(cfg.runtime.device)
    options = options or pipeline_options(cfg.beam, [])
    if runner_name(options) in REMOTE_RUNNERS:
        return "cuda" if asks_for_gpus(options) else "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def asks_for_gpus(options: PipelineOptions) -> bool:
    """Whether a Dataflow job attaches GPUs to its workers (the service option, or the older experiment)."""
    service = options.view_as(GoogleCloudOptions).dataflow_service_options or []
    experiments = options.view_as(DebugOptions).experiments or []
    return any(o.startswith("worker_accelerator") for o in [*service, *experiments])


def check_installed(cfg: Config, options: PipelineOptions) -> None:
    """Ends the command before anything starts when a URL in the config (s3://, gs://) or the runner needs
    an extra that is not installed: a MissingExtra naming the key, the extra and the pip command."""
    uris = [("input.paths", p) for p in cfg.input.paths] + [("output.path", cfg.output.path)]
    uris += [(f"tasks.{name}.model", settings.model) for name, settings in cfg.tasks.items()]
    for key, uri in uris:
        try:
            storage.require_filesystem(uri)
        except storage.MissingExtra as exc:
            raise storage.MissingExtra(f"{key}: {exc.what}", exc.extra) from None
    runner = runner_name(options)
    if runner == "DataflowRunner":
        missing = [m for m in DATAFLOW_MODULES if not storage.is_installed(m)]
        if missing:
            raise storage.MissingExtra(
                f"the {runner} needs Beam's Google Cloud libraries ({', '.join(missing)} not installed)",
                "dataflow",
            )


def check_paths(cfg: Config, options: PipelineOptions) -> None:
    """Refuses local input and output paths for runners whose workers cannot see this machine's disk, and
    warns about local model directories there: those must exist at the same path in the worker image.
    On a Flink cluster, warns that local paths must be mounted at the same path on every TaskManager.
    First of all, checks that the extras the paths and the runner need are installed (``check_installed``)."""
    check_installed(cfg, options)
    runner = runner_name(options)
    local = [f"input.paths: {p}" for p in cfg.input.paths if storage.is_local(p)]
    if storage.is_local(cfg.output.path):
        local.append(f"output.path: {cfg.output.path}")
    local += [f"tasks.{n}.model: {s.model}" for n, s in cfg.tasks.items() if ModelRef(s.model).is_local]
    if runner == "FlinkRunner" and options.view_as(FlinkRunnerOptions).flink_master not in LOCAL_FLINK:
        if local:
            log.warning(
                "Flink TaskManagers read local paths from their own disks: %s must be mounted at the same "
                "path on every TaskManager (or use s3:// or gs://)",
                "; ".join(local),
            )
        return
    if runner not in REMOTE_RUNNERS:
        return
    local = [entry for entry in local if not entry.startswith("tasks.")]
    if local:
        message = (
            f"{runner} workers cannot read or write this machine's disk ({'; '.join(local)}); "
            "use gs:// (or another object store) paths"
        )
        if not is_dry_run(options):
            raise ConfigError(message)
        log.warning("dry run: %s", message)
    for name, settings in cfg.tasks.items():
        if ModelRef(settings.model).is_local:
            log.warning(
                "tasks.%s.model: %s is a local directory: every %s worker loads it from that same path, so "
                "it must be baked into the worker image there; otherwise put the model in gs://",
                name,
                settings.model,
                runner,
            )


def job_name(result: Any) -> str:
    """The runner's id for a submitted job, when it has one."""
    for attr in ("job_id", "_job_id"):
        value = getattr(result, attr, None)
        value = value() if callable(value) else value
        if value:
            return str(value)
    return "the job"


def worker_report(result: Any) -> dict[str, dict[str, int]]:
    """Per task, from the run's metrics: how many times workers loaded its model (once per worker process)
    and the fewest and most torch threads a worker ran it with. Empty when the runner reports no metrics."""
    try:
        found = result.metrics().query(MetricsFilter())["distributions"]
    except Exception as exc:  # not every runner (or job state) can answer a metrics query
        log.debug("no worker metrics: %s", exc)
        return {}
    report: dict[str, dict[str, int]] = {}
    for metric in found:
        namespace, name = metric.key.metric.namespace, metric.key.metric.name
        if not namespace.startswith("distilbeam.") or name not in (LOAD_METRIC, THREADS_METRIC):
            continue
        value = metric.result
        if value is None or not value.count:
            continue
        task = report.setdefault(namespace.removeprefix("distilbeam."), {})
        if name == LOAD_METRIC:
            task["model_loads"] = task.get("model_loads", 0) + value.count
        else:
            task["min_threads"] = min(task.get("min_threads", value.min), value.min)
            task["max_threads"] = max(task.get("max_threads", value.max), value.max)
    return report
