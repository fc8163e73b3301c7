"""The run record on storage: each run's summary and reports under ``_state/runs/<run id>/``, and the
output's top-level summary and reports for the run that last changed it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from distilbeam.transforms import layout
from distilbeam.transforms.layout import REPORT_HTML, REPORT_MD, SUMMARY_FILE
from distilbeam.transforms.report.html import render_html
from distilbeam.transforms.report.markdown import render_markdown
from distilbeam.transforms.storage import Location


def write_run_record(out: Location, summary: Mapping[str, Any], latest: bool) -> None:
    """The output folder ``out`` and a finished run's summary (a JSON-serialisable dict with a ``run_id``)
    in; files out, each written atomically: ``_state/runs/<run id>/`` gets summary.json (the summary,
    indented), report.md and report.html (rendered from it). With ``latest`` (a run that changed the output)
    the output's top-level _REPORT.md, _REPORT.html and, last, _SUMMARY.json are replaced too, so a reader
    who sees the new summary sees the new report. Returns nothing; storage errors propagate."""
    text = json.dumps(summary, indent=2) + "\n"
    md, page = render_markdown(summary), render_html(summary)
    run_dir = layout.run_record_location(out, str(summary["run_id"]))
    files = [(layout.RUN_SUMMARY, text), (layout.RUN_REPORT_MD, md), (layout.RUN_REPORT_HTML, page)]
    for name, content in files:
        run_dir.join(name).write_bytes(content.encode())
    if latest:
        for name, content in ((REPORT_MD, md), (REPORT_HTML, page), (SUMMARY_FILE, text)):
            out.join(name).write_bytes(content.encode())
