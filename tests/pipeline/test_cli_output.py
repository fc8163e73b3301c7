"""The command's own words: ``run --help`` says that Beam's flags pass through, and the log of a plain run
holds no notice that Beam repeats for every model load."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from distilbeam.pipeline import cli
from tests.conftest import REPO, write_jsonl


def test_run_help_says_beam_flags_pass_through(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Beam pipeline flags pass through" in text and "PipelineOptions" in text


def test_beams_resource_notice_is_dropped_and_nothing_else():
    quiet = cli.QuietBeamNotices()

    def record(name: str, message: str) -> logging.LogRecord:
        return logging.LogRecord(name, logging.WARNING, "base.py", 1, message, None, None)

    notice = "Resource module is not available for current platform, memory usage cannot be fetched."
    assert not quiet.filter(record("root", notice))
    assert quiet.filter(record("root", "something else went wrong"))
    assert quiet.filter(record("distilbeam", notice))  # only Beam's own line, logged through the root logger


def test_beams_notice_never_reaches_the_log(monkeypatch, caplog):
    """Where RunInference loads a model, as the base install runs it (no scipy, so no ``resource``)."""
    from apache_beam.ml.inference import base

    root = logging.getLogger()
    monkeypatch.setattr(root, "filters", list(root.filters))  # the filter goes when the test ends
    monkeypatch.setattr(base, "resource", None)
    cli._configure_logging()
    with caplog.at_level(logging.WARNING):
        base._get_current_process_memory_in_bytes()
        logging.warning("a warning of our own")
    assert "Resource module" not in caplog.text
    assert "a warning of our own" in caplog.text


# Runs the command with scipy hidden, as in the base install: Beam's RunInference then cannot import its
# model manager and logs its resource notice at every model load.
WITHOUT_SCIPY = """
import sys
sys.modules["scipy"] = None
import apache_beam.ml.inference.base as inference
assert inference.resource is None, "Beam would not log its notice: the check proves nothing"
from distilbeam.pipeline.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_plain_run_logs_no_warning_twice(tmp_path, models_dir, write_config):
    write_jsonl(
        tmp_path / "docs.jsonl", [{"id": f"d{i}", "text": f"Ada Lovelace wrote note {i}."} for i in range(40)]
    )
    config = write_config(
        {
            "input": {"paths": [str(tmp_path / "docs.jsonl")]},
            "tasks": {
                "sentiment": {"kind": "classify", "model": str(models_dir / "classifier")},
                "entities": {"kind": "ner", "model": str(models_dir / "ner")},
            },
            "output": {"path": str(tmp_path / "out")},
        }
    )
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_SCIPY, "run", "--config", str(config)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resource module" not in result.stderr
    warnings = [line.split(" WARNING ", 1)[1] for line in result.stderr.splitlines() if " WARNING " in line]
    repeated = {line for line in warnings if warnings.count(line) > 1}
    assert not repeated, repeated


@pytest.mark.slow
def test_importing_distilbeam_without_beams_gcp_extra_logs_nothing(tmp_path):
    """The base install has no apitools: Beam then warns at import through the root logger, which would
    also set the root logger's format before the command could set its own."""
    probe = (
        "import logging, sys; sys.modules['apitools'] = None; "  # as if the gcp extra were not installed
        "import distilbeam.pipeline.cli; print(len(logging.getLogger().handlers))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["0"]
    assert "apitools" not in result.stderr
