"""The transforms layer stands on its own: no module under transforms/ and no test under tests/transforms
imports ``distilbeam.pipeline``, so the reusable parts and their tests run without the pipeline's wiring."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO


def pipeline_imports(path: Path) -> list[int]:
    """The lines of ``path`` that import distilbeam.pipeline or a module below it."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        if any(n == "distilbeam.pipeline" or n.startswith("distilbeam.pipeline.") for n in names):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_transforms_layer_and_its_tests_import_nothing_from_the_pipeline():
    files = sorted([*(REPO / "transforms").rglob("*.py"), *(REPO / "tests" / "transforms").rglob("*.py")])
    assert len(files) > 20, "the files were found"
    found = [f"{path.relative_to(REPO)}:{line}" for path in files for line in pipeline_imports(path)]
    assert found == [], "the transforms layer imports the pipeline layer"


def test_every_form_of_importing_the_pipeline_is_found(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import distilbeam.pipeline.plan\n"
        "from distilbeam import pipeline\n"
        "def f():\n"
        "    from distilbeam.pipeline.demo import corpus\n"
        "from distilbeam.transforms import models\n"
        "import distilbeam.pipelines_elsewhere\n",
        encoding="utf-8",
    )
    assert pipeline_imports(sample) == [1, 2, 4]
