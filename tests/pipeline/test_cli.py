"""The command line's own promises, checked in-process: a setup mistake is one line on stderr and exit
status 2, even when the message quotes a library's multi-line error. (End-to-end runs: tests/e2e.)"""

from __future__ import annotations

import shutil

from distilbeam.pipeline import cli
from distilbeam.transforms import SetupError
from tests.conftest import REPO


def test_multi_line_setup_error_is_printed_on_one_line(monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise SetupError("tasks.t.model: cannot load x: Got: ConnectError\nAn error happened   on the Hub.\n")

    monkeypatch.setattr(cli, "run", fail)
    assert cli.main(["run", "--config", "unused.yaml"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "distilbeam: error: tasks.t.model: cannot load x: Got: ConnectError An error happened on the Hub.\n"
    )


def test_offline_demo_without_its_models_names_the_missing_directory(tmp_path, monkeypatch, capsys):
    """The demo's models are local paths (./demo-models/...), so forgetting `distilbeam demo-models` is
    reported as a missing directory, not as a failed download of a Hub model of that name."""
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", "--config", "configs/offline-demo.yaml"]) == 2
    err = capsys.readouterr().err
    missing = "model directory ./demo-models/classifier does not exist"
    assert err == f"distilbeam: error: tasks.sentiment.model: {missing}\n"
    assert not (tmp_path / "out").exists()
