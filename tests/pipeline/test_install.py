"""What the base install leaves out and how a run says so: cloud and cluster libraries live in extras, and a
config or runner that needs a missing one stops before anything starts, naming the extra to install.
A missing package is simulated by setting its ``sys.modules`` entry to None, which makes it unimportable."""

from __future__ import annotations

import pickle
import re
import sys

import pytest

from distilbeam.pipeline import cli, config, runners
from distilbeam.pipeline.options import pipeline_options
from distilbeam.transforms import SetupError, storage
from tests.conftest import REPO

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
CLOUD = ("s3fs", "gcsfs", "boto3", "google-", "apache-beam[")


def name(requirement: str) -> str:
    return re.split(r"[<>=; ]", requirement, maxsplit=1)[0].lower()


def uninstall(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def a_config(paths: list[str], output: str = "out/run", model: str = "models/classifier") -> config.Config:
    return config.from_dict(
        {
            "input": {"paths": paths},
            "tasks": {"sentiment": {"kind": "classify", "model": model}},
            "output": {"path": output},
        }
    )


# -- pyproject.toml -----------------------------------------------------------------------------------------


def test_the_base_install_holds_no_cloud_library():
    base = [name(d) for d in PROJECT["dependencies"]]
    assert "apache-beam" in base
    assert not [d for d in base if d.startswith(CLOUD)], base


def test_each_place_to_reach_has_its_extra():
    extras = PROJECT["optional-dependencies"]
    assert {"s3", "gcs", "dataflow", "all", "bench", "train", "test"} <= set(extras)
    assert [name(d) for d in extras["s3"]] == ["s3fs"]
    assert [name(d) for d in extras["gcs"]] == ["gcsfs"]
    assert extras["dataflow"] == ["apache-beam[gcp]==2.77.0"]
    assert extras["all"] == ["distilbeam[s3,gcs,dataflow]"]
    # the tests use every extra: the three places to reach, training, and the benchmarks' real data
    (own,) = [d for d in extras["test"] if d.startswith("distilbeam[")]
    assert set(own.removeprefix("distilbeam[").removesuffix("]").split(",")) == set(extras) - {"all", "test"}


def test_beam_is_pinned_once():
    pins = {
        d.split("==")[1]
        for group in PROJECT["optional-dependencies"].values()
        for d in group
        if d.startswith("apache-beam")
    }
    base = next(d for d in PROJECT["dependencies"] if d.startswith("apache-beam"))
    assert pins == {base.split("==")[1]}


# -- object stores -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "module", "extra"),
    [("s3://bucket/shards/*.jsonl", "s3fs", "s3"), ("gs://bucket/out", "gcsfs", "gcs")],
)
def test_a_url_whose_store_is_not_installed_names_the_extra(monkeypatch, uri, module, extra):
    uninstall(monkeypatch, module)
    with pytest.raises(storage.MissingExtra) as caught:
        storage.Location(uri).filesystem()
    assert isinstance(caught.value, SetupError)
    assert caught.value.extra == extra
    message = str(caught.value)
    assert uri in message and module in message
    assert f"pip install 'distilbeam[{extra}]'" in message


def test_local_paths_need_no_extra(monkeypatch, tmp_path):
    uninstall(monkeypatch, "s3fs", "gcsfs")
    for path in (str(tmp_path), f"file://{tmp_path}", "relative/dir", "distilbert-base-uncased"):
        storage.require_filesystem(path)
    assert storage.Location(str(tmp_path)).exists()


def test_an_installed_store_passes():
    storage.require_filesystem("s3://bucket/key")  # the test extra installs s3fs and gcsfs
    storage.require_filesystem("gs://bucket/key")


def test_the_missing_extra_error_survives_pickling():
    error = storage.MissingExtra("s3://b/k: s3:// URLs need s3fs, which is not installed", "s3")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is storage.MissingExtra and str(copy) == str(error) and copy.extra == "s3"


@pytest.mark.parametrize(
    ("kwargs", "key", "extra"),
    [
        ({"paths": ["s3://corpus/*.jsonl"]}, "input.paths", "s3"),
        ({"paths": ["a.jsonl"], "output": "gs://bucket/run"}, "output.path", "gcs"),
        ({"paths": ["a.jsonl"], "model": "s3://models/sentiment"}, "tasks.sentiment.model", "s3"),
    ],
)
def test_the_launch_check_names_the_key(monkeypatch, kwargs, key, extra):
    uninstall(monkeypatch, "s3fs", "gcsfs")
    cfg = a_config(**kwargs)
    with pytest.raises(storage.MissingExtra, match=re.escape(f"pip install 'distilbeam[{extra}]'")) as caught:
        runners.check_paths(cfg, pipeline_options({}, []))
    assert str(caught.value).startswith(f"{key}: ")


# -- runners -------------------------------------------------------------------------------------------------


def test_the_dataflow_runner_without_its_extra_names_it(monkeypatch):
    uninstall(monkeypatch, "google.cloud.dataflow")
    options = pipeline_options({"runner": "DataflowRunner"}, ["--dry_run=True"])
    with pytest.raises(storage.MissingExtra) as caught:
        runners.check_installed(a_config(["a.jsonl"]), options)
    assert caught.value.extra == "dataflow"
    assert "google.cloud.dataflow" in str(caught.value)
    assert "pip install 'distilbeam[dataflow]'" in str(caught.value)


def test_local_runners_need_no_extra(monkeypatch):
    uninstall(monkeypatch, "google.cloud.dataflow", "google.cloud.storage", "s3fs", "gcsfs")
    for flags in ([], ["--runner=FnApiRunner"], ["--runner=PortableRunner", "--job_endpoint=embed"]):
        runners.check_installed(a_config(["a.jsonl"]), pipeline_options({}, flags))


def test_the_command_exits_2_with_one_line_naming_the_extra(monkeypatch, tmp_path, capsys):
    uninstall(monkeypatch, "s3fs")
    path = tmp_path / "c.yaml"
    path.write_text(
        "input: {paths: ['s3://corpus/*.jsonl']}\n"
        "tasks: {sentiment: {kind: classify, model: models/classifier}}\n"
        f"output: {{path: {tmp_path / 'out'}}}\n"
    )
    assert cli.main(["run", "--config", str(path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("distilbeam: error: input.paths: s3://corpus/*.jsonl")
    assert line.endswith("pip install 'distilbeam[s3]'")
