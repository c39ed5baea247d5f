"""The page `tabtrack monitor` writes: what drifted first, each drifted column's reference and current
distributions overlaid, the predictions' too, and the metrics on labelled rows beside the training run's."""

from __future__ import annotations

import html
from typing import Any

from tabtrack.data.profile import OTHER
from tabtrack.evaluate.drift import NEW

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#1f2328;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.85rem}td,th{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}tr.drift td{background:#ffebe9}
.alarm{background:#ffebe9;border:1px solid #cf222e;padding:.5rem 1rem}.calm{background:#dafbe1;border:1px solid #1a7f37;padding:.5rem 1rem}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:1rem}figure{margin:0;border:1px solid #d0d7de;padding:.5rem}
figure svg{width:100%;height:auto;display:block}code{font-size:.8rem}
"""
MOST_PLOTS = 12
NAMES = {NEW: "(new categories)", OTHER: "(other)"}


def render_monitor_page(report: Any) -> str:
    e = html.escape
    model = report.model
    named = f"{model['name']} v{model['version']}" if model.get("name") else f"run {model['run_id']}"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{e(named)} · tabtrack monitor</title><style>{STYLE}</style></head><body>",
        f"<h1>Monitoring {e(named)}</h1>",
        f"<p>{report.rows:,} rows from {e(report.source)}; training run <code>{e(str(model['run_id']))}</code>.</p>",
    ]
    if report.alarms:
        items = "".join(f"<li>{e(alarm)}</li>" for alarm in report.alarms)
        parts.append(f"<div class='alarm'><b>Drift beyond the thresholds</b><ul>{items}</ul></div>")
    else:
        parts.append(f"<p class='calm'>No column moved beyond the thresholds (PSI {report.thresholds.psi:g}).</p>")
    if report.labelled_rows:
        parts += ["<h2>Metrics on labelled rows</h2>", _metrics(report)]
    if report.pair is not None:
        parts += ["<h2>Champion and shadow on the same requests</h2>", _pair(report.pair)]
    parts += ["<h2>Input columns, biggest drift first</h2>", _table(report.columns, report.crossed)]
    if report.new_columns:
        parts.append(f"<p>Columns the model does not take: {e(', '.join(report.new_columns))}.</p>")
    parts += ["<h2>Predictions</h2>", _table(report.predictions, report.crossed)]
    # the prediction, then the columns that crossed a threshold, then the rest by PSI
    columns = sorted(report.columns, key=lambda d: not report.crossed(d))
    shown = [d for d in report.predictions[:1] + columns if d.bins][:MOST_PLOTS]
    if shown:
        parts.append("<h2>Distributions: training reference and now</h2><div class='plots'>")
        for drift in shown:
            parts.append(f"<figure>{_overlay(drift, report.crossed(drift))}</figure>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _table(drifts: list, crossed) -> str:
    e = html.escape
    rows = ["<table><tr><th>column</th><th>kind</th><th>PSI</th><th>test</th><th>p-value</th><th>missing "
            "(training → now)</th><th>new categories</th></tr>"]  # fmt: skip
    for d in drifts:
        new = ", ".join(d.new_categories[:5]) + (" ..." if len(d.new_categories) > 5 else "")
        rows.append(
            f"<tr class='{'drift' if crossed(d) else ''}'><td>{e(d.column)}</td><td>{d.kind}</td>"
            f"<td class='num'>{d.psi:.3f}</td><td class='num'>{d.test} {d.statistic:.3g}</td>"
            f"<td class='num'>{d.p_value:.2g}</td><td class='num'>{d.null_share_reference:.1%} → {d.null_share:.1%}</td>"
            f"<td>{e(new)}{f' ({d.new_share:.1%})' if d.new_share else ''}</td></tr>"
        )
    return "".join(rows) + "</table>"


def _metrics(report: Any) -> str:
    rows = ["<table><tr><th>metric</th><th>training run, test split</th>"
            f"<th>now, {report.labelled_rows:,} labelled rows</th></tr>"]  # fmt: skip
    for name, value in report.metrics.items():
        before = report.test_metrics.get(name)
        rows.append(f"<tr><td>{html.escape(name)}</td><td class='num'>{'' if before is None else f'{before:.4f}'}</td>"
                    f"<td class='num'>{value:.4f}</td></tr>")  # fmt: skip
    return "".join(rows) + "</table>"


def _overlay(drift: Any, crossed: bool) -> str:
    """Reference and current shares per bin as grouped bars: inline SVG, which costs nothing to draw (a page
    of matplotlib figures took longer than reading a million logged rows)."""
    e = html.escape
    width, height, left, right, top, bottom = 460, 270, 46, 8, 34, 72
    plot_w, plot_h = width - left - right, height - top - bottom
    highest = max([*drift.reference_shares, *drift.current_shares, 0.01]) * 1.1
    band = plot_w / max(len(drift.bins), 1)
    color = "#cf222e" if crossed else "#0969da"
    missing = f"; missing {drift.null_share_reference:.0%} → {drift.null_share:.0%}" if drift.null_share else ""
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' role='img' "
        f"aria-label='{e(drift.column)}' font-family='system-ui,sans-serif' font-size='10'>",
        f"<text x='{left}' y='14' font-size='12' font-weight='600'>{e(drift.column)}: PSI {drift.psi:.3f}"
        f"{e(missing)}</text>",
        f"<rect x='{width - 150}' y='20' width='9' height='9' fill='#8c959f'/><text x='{width - 137}' y='28'>training"
        f"</text><rect x='{width - 80}' y='20' width='9' height='9' fill='{color}'/>"
        f"<text x='{width - 67}' y='28'>now</text>",
    ]
    for fraction in (0, 0.5, 1):
        value, y = highest / 1.1 * fraction, top + plot_h * (1 - fraction / 1.1)
        out.append(f"<line x1='{left}' x2='{width - right}' y1='{y:.1f}' y2='{y:.1f}' stroke='#d0d7de'/>"
                   f"<text x='{left - 4}' y='{y + 3:.1f}' text-anchor='end'>{value:.0%}</text>")  # fmt: skip
    for index, label in enumerate(drift.bins):
        x = left + index * band
        for offset, share, fill, who in ((0.1, drift.reference_shares[index], "#8c959f", "training"),
                                         (0.5, drift.current_shares[index], color, "now")):  # fmt: skip
            bar = plot_h * share / highest
            out.append(f"<rect x='{x + offset * band:.1f}' y='{top + plot_h - bar:.1f}' width='{0.4 * band:.1f}' "
                       f"height='{bar:.1f}' fill='{fill}'><title>{who}: {share:.1%}</title></rect>")  # fmt: skip
        name = NAMES.get(label, label)
        name = name if len(name) <= 18 else name[:17] + "…"
        lx, ly = x + band / 2, top + plot_h + 10
        out.append(f"<text x='{lx:.1f}' y='{ly:.1f}' text-anchor='end' transform='rotate(-35 {lx:.1f} {ly:.1f})'>"
                   f"<title>{e(str(label))}</title>{e(name)}</text>")  # fmt: skip
    out.append(f"<text x='12' y='{top + plot_h / 2:.0f}' transform='rotate(-90 12 {top + plot_h / 2:.0f})' "
               "text-anchor='middle'>share of present values</text></svg>")  # fmt: skip
    return "".join(out)


def _pair(pair) -> str:
    return "".join(f"<p>{html.escape(line)}</p>" for line in pair.summary())
