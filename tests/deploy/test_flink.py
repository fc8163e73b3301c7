"""configs/flink.yaml: a valid config whose Beam options name a Flink version Beam 2.77 runs on, a remote
JobManager, and Python workers in EXTERNAL worker pools, with every path reachable from the TaskManagers.
(No Flink cluster runs here: the README has the steps for a standalone one.)"""

from __future__ import annotations

from apache_beam.options.pipeline_options import FlinkRunnerOptions, PortableOptions, StandardOptions

from distilbeam.pipeline import config
from distilbeam.pipeline.options import pipeline_options, worker_processes
from distilbeam.transforms import storage
from tests.conftest import REPO

CONFIG = REPO / "configs" / "flink.yaml"


def test_flink_config_is_valid_and_names_a_supported_flink():
    cfg = config.load(CONFIG)
    options = pipeline_options(cfg.beam, [])
    assert options.view_as(StandardOptions).runner == "FlinkRunner"
    flink = options.view_as(FlinkRunnerOptions)
    assert flink.flink_version in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS
    assert flink.flink_master not in ("[auto]", "[local]")  # a cluster, not a Flink started locally
    assert flink.parallelism > 0
    assert flink.flink_submit_uber_jar  # no Java or job server needed on the launching machine


def test_flink_workers_are_external_worker_pools():
    options = pipeline_options(config.load(CONFIG).beam, [])
    portable = options.view_as(PortableOptions)
    assert portable.environment_type == "EXTERNAL"
    host, port = portable.environment_config.rsplit(":", 1)
    assert host and int(port) > 0
    assert worker_processes(options) == int(portable.sdk_worker_parallelism)


def test_flink_config_paths_are_reachable_from_taskmanagers():
    cfg = config.load(CONFIG)
    assert not [p for p in cfg.input.paths if storage.is_local(p)]
    assert not storage.is_local(cfg.output.path)
    assert not [t.model for t in cfg.tasks.values() if storage.is_local(t.model)]


def test_command_line_flags_override_the_config(tmp_path):
    options = pipeline_options(
        config.load(CONFIG).beam, ["--flink_master=jm.example.com:8081", "--parallelism=16"]
    )
    flink = options.view_as(FlinkRunnerOptions)
    assert (flink.flink_master, flink.parallelism) == ("jm.example.com:8081", 16)
