"""One standalone HTML page per run: params, metrics by split, lineage and every plot, images
embedded as data URIs so it opens anywhere with no network."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from dataclasses import dataclass, field

from tabtrack.evaluate.caveats import TOO_GOOD_TAG
from tabtrack.evaluate.metrics import group_by_split

LINEAGE_TAGS = (
    ("data.path", "data file"),
    ("data.sha256", "data sha256"),
    ("data.dvc_md5", "DVC md5"),
    ("git.commit", "git commit"),
    ("git.branch", "git branch"),
    ("git.dirty", "uncommitted changes"),
    ("env.python", "Python"),
    ("env.os", "OS"),
    ("tabtrack.version", "tabtrack"),
)

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1f2328;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem;margin-top:2rem}
.sub{color:#59636e;margin-top:0}table{border-collapse:collapse;font-size:.9rem}td,th{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}code{font-size:.85rem;word-break:break-all}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:1rem}figure{margin:0;border:1px solid #d0d7de;padding:.5rem}
.warning{background:#fff8c5;border:1px solid #d4a72c;padding:.5rem 1rem}
figure img{width:100%;height:auto}figcaption{font-size:.85rem;color:#59636e;text-align:center}
"""


@dataclass
class ReportData:
    run_id: str | None
    run_name: str
    experiment: str
    status: str
    params: Mapping[str, str]
    metrics: Mapping[str, float]  # flat, as logged: test_f1, cv_f1_mean, ...
    tags: Mapping[str, str]
    images: Mapping[str, bytes] = field(default_factory=dict)  # artifact path -> PNG bytes
    slices_csv: str | None = None  # reports/slices.csv


def render_report(data: ReportData) -> str:
    e = html.escape
    model = data.params.get("model_type", "model")
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{e(data.run_name)} · tabtrack report</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(model)} · {e(data.params.get('task', ''))} · {e(data.experiment)}</h1>",
        f"<p class='sub'>run <code>{e(data.run_id or 'untracked')}</code> ({e(data.run_name)}) · status {e(data.status)}</p>",
        _too_good(data.tags),
        "<h2>Metrics</h2>",
        _metrics_table(data.metrics),
        "<h2>Lineage</h2>",
        _kv_table([(label, data.tags.get(key, "")) for key, label in LINEAGE_TAGS if data.tags.get(key)]),
        "<h2>Parameters</h2>",
        _kv_table(sorted(data.params.items())),
    ]
    if data.slices_csv:
        parts += ["<h2>Metrics by slice (test split)</h2>", _csv_table(data.slices_csv)]
    user_tags = sorted(
        (k, v) for k, v in data.tags.items() if not k.startswith(("mlflow.", "data.", "git.", "env.", "tabtrack."))
    )
    if user_tags:
        parts += ["<h2>Tags</h2>", _kv_table(user_tags)]
    if data.images:
        parts.append("<h2>Plots</h2><div class='plots'>")
        for path, png in sorted(data.images.items()):
            encoded = base64.b64encode(png).decode("ascii")
            parts.append(
                f"<figure><img alt='{e(path)}' src='data:image/png;base64,{encoded}'><figcaption>{e(path)}</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _too_good(tags: Mapping[str, str]) -> str:
    warning = tags.get(TOO_GOOD_TAG)
    return f"<p class='warning'><b>Too good to be true?</b> {html.escape(warning)}</p>" if warning else ""


def _metrics_table(flat: Mapping[str, float]) -> str:
    grouped = group_by_split(flat)
    splits = [s for s in ("train", "cv", "test") if s in grouped]
    names = list(dict.fromkeys([*grouped.get("test", {}), *grouped.get("train", {})]))
    for name in grouped.get("cv", {}):
        base = name.rsplit("_", 1)[0]
        if name.endswith(("_mean", "_std")) and base not in names:
            names.append(base)
    rows = ["<table><tr><th>metric</th>" + "".join(f"<th>{s}</th>" for s in splits) + "</tr>"]
    for name in names:
        cells = []
        for split in splits:
            values = grouped[split]
            if split == "cv":
                mean, std = values.get(f"{name}_mean"), values.get(f"{name}_std")
                cells.append("" if mean is None else f"{mean:.4f} ± {std:.4f}")
            else:
                cells.append("" if name not in values else f"{values[name]:.4f}")
        rows.append(f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td class='num'>{c}</td>" for c in cells) + "</tr>")
    rows.append("</table>")
    return "".join(rows)


def _csv_table(text: str) -> str:
    import csv
    import io

    header, *rows = list(csv.reader(io.StringIO(text)))
    e = html.escape

    def cell(value: str) -> str:
        try:
            number = float(value)
        except ValueError:
            return f"<td>{e(value)}</td>"
        return f"<td class='num'>{value if number.is_integer() else f'{number:.4f}'}</td>"

    head = "<tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"
    return "<table>" + head + "".join("<tr>" + "".join(map(cell, row)) + "</tr>" for row in rows) + "</table>"


def _kv_table(items) -> str:
    body = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td><code>{html.escape(str(v))}</code></td></tr>" for k, v in items
    )
    return f"<table>{body}</table>"


MAIN_PLOTS = ("roc_curve", "confusion_matrix", "predicted_vs_actual", "residuals", "feature_importance", "loss_curve")


def notebook_html(
    *, title: str, run_id: str | None, ui_url: str | None, metrics: Mapping[str, float], images: Mapping[str, bytes]
) -> str:
    """What a result shows in Jupyter: the metric table and up to four of the main plots, inline."""
    e = html.escape
    where = f"run <code>{e(run_id)}</code>" if run_id else "untracked"
    if ui_url:
        where += f" · <a href='{e(ui_url)}'>MLflow UI</a>"
    shown = [p for name in MAIN_PLOTS for p in images if p.rsplit("/", 1)[-1].startswith(name)][:4]
    plots = "".join(
        f"<img style='width:320px;margin:4px' alt='{e(p)}' src='data:image/png;base64,"
        f"{base64.b64encode(images[p]).decode('ascii')}'>"
        for p in dict.fromkeys(shown)
    )
    by_split = {k: v for k, v in metrics.items() if k.partition("_")[0] in ("train", "cv", "test")}
    table = _metrics_table(by_split) if by_split else ""
    others = [(k, f"{v:.6g}") for k, v in metrics.items() if k not in by_split]
    table += _kv_table(others) if others else ""
    return f"<div><b>{e(title)}</b> · {where}{table}<div>{plots}</div></div>"
