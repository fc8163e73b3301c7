"""The run report: statistics gathered per shard as it is written and added up across shards (``stats``),
rendered as Markdown (``markdown``) and as one HTML page (``html``) whose charts are inline SVG drawn by a
small chart library (``charts``), and written next to the output (``record``). The names the pipeline uses
are importable from here."""

from distilbeam.transforms.report.html import render_html
from distilbeam.transforms.report.markdown import render_markdown
from distilbeam.transforms.report.record import REPORT_HTML, REPORT_MD, SUMMARY_FILE, write_run_record
from distilbeam.transforms.report.stats import (
    TOP_ENTITIES_KEPT,
    Profile,
    length_bucket,
    merge_timelines,
    output_totals,
    profile_table,
    run_status,
    throughput_series,
    top_entities,
)
from distilbeam.transforms.report.text import clock

__all__ = [
    "REPORT_HTML",
    "REPORT_MD",
    "SUMMARY_FILE",
    "TOP_ENTITIES_KEPT",
    "Profile",
    "clock",
    "length_bucket",
    "merge_timelines",
    "output_totals",
    "profile_table",
    "render_html",
    "render_markdown",
    "run_status",
    "throughput_series",
    "top_entities",
    "write_run_record",
]
