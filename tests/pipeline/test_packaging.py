"""distilbeam installs under one name: the repository's pipeline/ and transforms/ folders become
distilbeam.pipeline and distilbeam.transforms, and nothing else lands at the top level of site-packages."""

import os
import subprocess
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed_for_the_wheel():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {}
    for name, root in setuptools["package-dir"].items():
        for init in (REPO / root).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / root)
            folders[".".join([name, *relative.parts])] = init.parent
    assert sorted(setuptools["packages"]) == sorted(folders), "pyproject's packages list is out of date"


def test_only_the_distilbeam_name_is_importable_outside_the_checkout(tmp_path):
    # A generic top-level name (`pipeline`, `transforms`) would shadow, or be shadowed by, other packages.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    probe = (
        "import importlib.util as u, distilbeam.pipeline.cli, distilbeam.transforms.read; "
        "print(u.find_spec('pipeline'), u.find_spec('transforms'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["None", "None"]
