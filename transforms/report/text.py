"""How the report reads: numbers, shares and durations as the reader sees them, and the sentences and
overview rows that the Markdown and the HTML report both show."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def fmt(n: float) -> str:
    return f"{n:,.0f}" if float(n).is_integer() else f"{n:,.1f}"


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def duration(seconds: float) -> str:
    seconds = float(seconds or 0)
    return f"{seconds:.1f} s" if seconds < 60 else clock(seconds)


def clock(seconds: float) -> str:
    """Whole seconds as 1m05s or 2h03m05s."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def sorted_counts(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """Most frequent first, ties by name."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def overview_rows(s: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(what, this run, whole output) for the overview table."""
    out = s.get("output") or {}
    return [
        ("shards", fmt(s.get("shards", 0)), fmt(out.get("shards", 0))),
        ("documents read", fmt(s.get("docs_read", 0)), fmt(out.get("docs_read", 0))),
        ("documents written", fmt(s.get("docs_written", 0)), fmt(out.get("docs_written", 0))),
        (
            "dead-lettered",
            f"{fmt(s.get('docs_failed', 0))} ({pct(s.get('docs_failed', 0), s.get('docs_read', 0))})",
            f"{fmt(out.get('docs_failed', 0))} ({pct(out.get('docs_failed', 0), out.get('docs_read', 0))})",
        ),
        ("tokens", fmt(s.get("tokens", 0)), fmt(out.get("tokens", 0))),
    ]


def headline(s: Mapping[str, Any]) -> str:
    """Wall time and rates, or why there was nothing to annotate."""
    wall = float(s.get("wall_seconds") or 0)
    docs_rate = s.get("docs_read", 0) / wall if wall else 0
    tokens_rate = s.get("tokens", 0) / wall if wall else 0
    return (
        f"{duration(wall)} wall time, {docs_rate:,.1f} documents/s, {tokens_rate:,.0f} tokens/s"
        if s.get("shards")
        else "nothing to annotate: every input shard is already in the output"
    )


def selection_text(s: Mapping[str, Any]) -> str:
    """Which shards the run annotated and why, as one sentence."""
    sel = s.get("selection") or {}
    parts = [
        f"{sel.get('new', 0)} new",
        f"{sel.get('changed', 0)} changed",
        f"{sel.get('config', 0)} re-annotated after a settings change",
        f"{sel.get('refresh', 0)} by full refresh",
        f"{sel.get('kept', 0)} kept from earlier runs",
    ]
    if sel.get("stale_removed"):
        parts.append(f"{sel['stale_removed']} no longer among the inputs, removed")
    if sel.get("stale_kept"):
        parts.append(f"{sel['stale_kept']} no longer among the inputs, kept")
    return "Shards: " + ", ".join(parts) + "."
