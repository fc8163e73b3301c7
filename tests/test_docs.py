"""README.md and the pages under docs/: every relative link reaches a file that exists, and every #anchor a
heading of its page; the README stays short and shows the test command CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    headings = re.findall(r"^#+ (.+)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_reaches_a_file_and_heading(page):
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: {target}: no such file"
        if anchor:
            assert anchor in anchors(file), f"{page.name}: {target}: no such heading in {file.name}"


def test_the_readme_is_short_and_links_every_page():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, page.name


def test_the_readme_shows_the_test_command_ci_runs():
    ci = (REPO / ".ci" / "run").read_text()
    (command,) = re.findall(r"^make test .*$", ci, re.M)
    assert command.replace('"$VENV"', ".venv-ci") in (REPO / "README.md").read_text(encoding="utf-8")


def test_exit_statuses_are_documented_once():
    tables = [p.name for p in PAGES if "| 4 | another run holds the output" in p.read_text(encoding="utf-8")]
    assert tables == ["output.md"]
