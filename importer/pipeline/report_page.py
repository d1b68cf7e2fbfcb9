"""`--report-html`: one self-contained page that pictures a run, drawn from the JSON report.

The page is made from `as_report()`, the same dict `--report` writes, so the two always tell
the same story: outcomes, rejects by rule with examples, the sending over time (rows a second,
retries and 429s, from the report's `timeline`), and dead letters by reason. It fetches nothing:
no script, no stylesheet, no font or image from anywhere; the charts are inline SVG.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from importer.files import write_atomic
from importer.outcome import JobSummary, Summary

OUTCOMES = (
    ("rows_read", "rows read"),
    ("rows_valid", "valid"),
    ("rows_rejected", "rejected"),
    ("rows_sent", "delivered"),
    ("rows_skipped", "skipped (done before)"),
    ("rows_failed", "failed (dead letters)"),
    ("rows_outside_window", "outside --since/--until"),
    ("requests", "requests"),
    ("retries", "retries"),
)
CHART_W, CHART_H = 720, 140
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 780px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.8em; }
table { border-collapse: collapse; } td, th { padding: .2em .8em; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) { background: #f4f4f4; } code { font-size: .9em; }
.bad { color: #b00020; } .ok { color: #1b6e1b; } svg { background: #fafafa; }
.sent { fill: #2f6fb0; } .retries { fill: #e0a030; } .throttled { fill: #b00020; }
"""


def write_report_page(path: Path, summary: Summary | JobSummary, *, exit_code: int) -> None:
    """Write the page atomically (an OutputError names the path when it cannot be written)."""
    write_atomic(path, render_report_page(summary.as_report(), exit_code=exit_code).encode())


def render_report_page(report: dict[str, Any], *, exit_code: int) -> str:
    """The page for a JSON report (`as_report()`), as text."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>importer run report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>importer: what the run did</h1>",
        _verdict(report, exit_code),
        _outcomes(report),
        _timeline(report.get("timeline")),
        _rejects(report),
        _dead_letters(report),
        _messages(report),
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part) + "\n"


def _verdict(report: dict[str, Any], exit_code: int) -> str:
    meaning = {
        0: "all good",
        1: "stopped by an error",
        3: "finished, but rows were rejected or failed",
        130: "interrupted",
    }.get(exit_code, "")
    kind = "ok" if exit_code == 0 else "bad"
    lines = [f'<p class="{kind}">Exit code {exit_code}: {escape(meaning)}.']
    if report.get("dry_run"):
        lines.append(" A dry run: nothing was sent.")
    if report.get("stopped"):
        lines.append(f" Stopped: {escape(str(report['stopped']))}")
    lines.append(f" Elapsed {float(report.get('elapsed_s') or 0):.1f} s.</p>")
    return "".join(lines)


def _outcomes(report: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr><td>{escape(label)}</td><td class="n">{int(report.get(key) or 0):,}</td></tr>'
        for key, label in OUTCOMES
    )
    return f"<h2>Outcomes</h2><table>{rows}</table>"


def _timeline(timeline: dict[str, Any] | None) -> str:
    if not timeline or not timeline.get("points"):
        return "<h2>Over time</h2><p>Nothing was sent, so there is no timeline.</p>"
    interval = float(timeline["interval_s"])
    points = timeline["points"]
    rates = [point["sent"] / interval for point in points]
    retries = [point["retries"] for point in points]
    throttled = [point["throttled"] for point in points]
    span = len(points) * interval
    return "\n".join(
        [
            "<h2>Over time</h2>",
            f"<p>Rows delivered a second, per {interval:g} s interval over {span:g} s "
            f"(peak {max(rates):,.1f}/s).</p>",
            _bars([("sent", rates)], "rows delivered a second"),
            f"<p>Retries per interval ({sum(retries):,} in all), and among them the 429s "
            f"(too many requests: {sum(throttled):,}).</p>",
            _bars([("retries", retries), ("throttled", throttled)], "retries and 429s"),
        ]
    )


def _bars(series: list[tuple[str, list[float]]], label: str) -> str:
    """An inline SVG bar chart: each series drawn over the one before, on one scale."""
    top = max((max(values) for _, values in series if values), default=0) or 1
    count = max(len(values) for _, values in series)
    width = CHART_W / max(count, 1)
    bars = []
    for name, values in series:
        for i, value in enumerate(values):
            if value <= 0:
                continue
            height = CHART_H * value / top
            bars.append(
                f'<rect class="{name}" x="{i * width:.2f}" y="{CHART_H - height:.2f}" '
                f'width="{max(width - 1, 1):.2f}" height="{height:.2f}">'
                f"<title>{escape(name)}: {value:,.1f}</title></rect>"
            )
    return (
        f'<svg role="img" aria-label="{escape(label)}" width="{CHART_W}" height="{CHART_H + 16}" '
        f'viewBox="0 0 {CHART_W} {CHART_H + 16}">{"".join(bars)}'
        f'<text x="2" y="{CHART_H + 13}" font-size="11">max {top:,.1f}</text></svg>'
    )


def _rejects(report: dict[str, Any]) -> str:
    by_rule = report.get("rejects_by_rule") or {}
    if not by_rule:
        return "<h2>Rejected rows</h2><p>None.</p>"
    examples = report.get("reject_examples") or {}
    rows = "".join(
        f'<tr><td><code>{escape(rule)}</code></td><td class="n">{count:,}</td>'
        f"<td>{'<br>'.join(escape(str(e)) for e in examples.get(rule, []))}</td></tr>"
        for rule, count in sorted(by_rule.items(), key=lambda item: -item[1])
    )
    return (
        "<h2>Rejected rows, by rule</h2>"
        f"<table><tr><th>rule</th><th>rows</th><th>examples</th></tr>{rows}</table>"
    )


def _dead_letters(report: dict[str, Any]) -> str:
    by_reason = report.get("dead_letters_by_reason") or {}
    if not by_reason:
        return "<h2>Dead letters</h2><p>None.</p>"
    examples = report.get("dead_letter_examples") or {}
    rows = "".join(
        f'<tr><td>{escape(reason)}</td><td class="n">{count:,}</td>'
        f"<td>{escape(str(examples.get(reason, '')))}</td></tr>"
        for reason, count in by_reason.items()
    )
    where = report.get("dead_letter_file")
    kept = f"<p>Kept in <code>{escape(where)}</code>.</p>" if where else ""
    return (
        "<h2>Dead letters, by reason</h2>"
        f"<table><tr><th>reason</th><th>rows</th><th>example</th></tr>{rows}</table>{kept}"
    )


def _messages(report: dict[str, Any]) -> str:
    items = [*report.get("warnings", []), *report.get("notes", [])]
    if not items:
        return ""
    listed = "".join(f"<li>{escape(str(item))}</li>" for item in items)
    return f"<h2>Warnings and notes</h2><ul>{listed}</ul>"
