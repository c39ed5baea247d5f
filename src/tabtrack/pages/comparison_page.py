"""Runs compared in pictures: one standalone page with every run's metrics side by side, the curves of all
runs overlaid on one axis each, and the parameters and lineage that differ.

Pure: takes `RunView`s (what a run recorded, read back by commands/report.py) and returns figures and HTML.
The curves come from each run's `evaluation/test_predictions.csv` (the test split's labels, predictions and
class probabilities, written since tabtrack 0.1 by both `train` and `Run.evaluate`); runs without it are
listed without curves.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tabtrack.evaluate.fitted_model import PREDICTIONS_FILE
from tabtrack.evaluate.metrics import GREATER_IS_BETTER, group_by_split
from tabtrack.evaluate.plots import FIGSIZE, render_png

LINEAGE = ("data.sha256", "data.path", "git.commit", "git.dirty", "tabtrack.version")


@dataclass
class RunView:
    run_id: str
    run_name: str
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    tags: Mapping[str, str]
    packages: Mapping[str, str] = field(default_factory=dict)  # env/requirements.txt
    test_digest: str | None = None  # the test dataset's MLflow digest
    predictions: pd.DataFrame | None = None  # y_true, y_pred, proba_<class>...
    ui_url: str | None = None  # the run in the MLflow UI, where the tracking URI is a server

    @property
    def label(self) -> str:
        return f"{self.run_name} ({self.run_id[:8]})"

    @property
    def task(self) -> str:
        return self.params.get("task", "classification" if "test_accuracy" in self.metrics else "regression")


def overlaid_curves(runs: Sequence[RunView]) -> dict[str, Any]:
    """`{name: Figure}`, every run with predictions drawn on the same axes: ROC, precision-recall and
    calibration for classifiers (the positive class; micro-averaged one-vs-rest for multiclass), predicted
    vs actual and the residual distribution for regressors."""
    drawn = [run for run in runs if run.predictions is not None]
    if not drawn:
        return {}
    if drawn[0].task == "classification":
        return {
            "roc_curve": _classification_overlay("roc", drawn),
            "pr_curve": _classification_overlay("pr", drawn),
            "calibration_curve": _classification_overlay("calibration", drawn),
        }
    return {"predicted_vs_actual": _predicted_vs_actual(drawn), "residual_distribution": _residuals(drawn)}


def _binary_view(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(is positive, score): the second class for a binary task, every class one-vs-rest for multiclass."""
    proba_columns = [c for c in table.columns if c.startswith("proba_")]
    classes = [c.removeprefix("proba_") for c in proba_columns]
    truth = table["y_true"].astype(str).to_numpy()
    if len(classes) == 2:
        return truth == classes[1], table[proba_columns[1]].to_numpy(dtype=float)
    indicator = np.column_stack([truth == c for c in classes])
    return indicator.ravel(), table[proba_columns].to_numpy(dtype=float).ravel()


def _classification_overlay(kind: str, runs: Sequence[RunView]):
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    title = {"roc": "ROC curve", "pr": "Precision-recall curve", "calibration": "Calibration curve"}[kind]
    fig, ax = _axes(f"{title}, test split, every run")
    for run in runs:
        if not any(c.startswith("proba_") for c in run.predictions.columns):
            continue
        positive, score = _binary_view(run.predictions)
        if positive.all() or not positive.any():
            continue
        if kind == "roc":
            x, y, _ = roc_curve(positive, score)
            ax.plot(x, y, label=f"{run.label}: AUC {auc(x, y):.3f}")
        elif kind == "pr":
            precision, recall, _ = precision_recall_curve(positive, score)
            ax.plot(recall, precision, label=f"{run.label}: AUC {auc(recall, precision):.3f}")
        else:
            # quantile bins: every point averages as many rows, so small test splits do not zig-zag
            bins = max(2, min(10, len(score) // 20))
            fraction, mean_predicted = calibration_curve(positive, score, n_bins=bins, strategy="quantile")
            ax.plot(mean_predicted, fraction, marker="o", markersize=3, label=run.label)
    if kind in ("roc", "calibration"):
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set_xlabel({"roc": "False positive rate", "pr": "Recall", "calibration": "Mean predicted probability"}[kind])
    ax.set_ylabel({"roc": "True positive rate", "pr": "Precision", "calibration": "Fraction of positives"}[kind])
    ax.legend(fontsize=7, loc="lower right" if kind == "roc" else "best")
    return fig


def _predicted_vs_actual(runs: Sequence[RunView]):
    fig, ax = _axes("Predicted vs actual, test split, every run")
    low, high = np.inf, -np.inf
    for run in runs:
        actual = run.predictions["y_true"].to_numpy(dtype=float)
        predicted = run.predictions["y_pred"].to_numpy(dtype=float)
        ax.scatter(actual, predicted, s=8, alpha=0.4, label=run.label)
        low, high = min(low, actual.min(), predicted.min()), max(high, actual.max(), predicted.max())
    ax.plot([low, high], [low, high], linestyle="--", color="grey", linewidth=1)
    ax.set_xlabel("Actual")
    ax.set_ylabel("Predicted")
    ax.legend(fontsize=7)
    return fig


def _residuals(runs: Sequence[RunView]):
    fig, ax = _axes("Residual distribution, test split, every run")
    residuals = {
        run.label: run.predictions["y_true"].to_numpy(dtype=float) - run.predictions["y_pred"].to_numpy(dtype=float)
        for run in runs
    }
    edges = np.histogram_bin_edges(np.concatenate(list(residuals.values())), bins=40)
    for label, values in residuals.items():
        ax.hist(values, bins=edges, histtype="step", linewidth=1.5, label=label)
    ax.axvline(0, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("Residual (actual - predicted)")
    ax.set_ylabel("Count")
    ax.legend(fontsize=7)
    return fig


def _axes(title: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=100)
    fig.subplots_adjust(left=0.12, right=0.96, bottom=0.11, top=0.9)
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    return fig, ax


# -- the page ----------------------------------------------------------------------------------------------
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1240px;color:#1f2328;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem;margin-top:2rem}
.wide{overflow-x:auto;max-width:100%}table{border-collapse:collapse;font-size:.8rem}
td,th{border:1px solid #d0d7de;padding:.2rem .35rem;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600}th .name{display:block;max-width:12rem;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;font-weight:400;color:#59636e}
tr>:first-child{position:sticky;left:0;background:#fff;white-space:nowrap}tr>th:first-child{background:#f6f8fa}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}.best{font-weight:700;background:#dafbe1}
td.best{background:#dafbe1}.delta,.ci{display:block;color:#59636e;font-size:.76em;font-weight:400}
.many th .name{max-width:4.5rem}.legend .ci{display:inline;font-size:1em}.ci.better{color:#1a7f37;font-weight:600}.ci.worse{color:#cf222e;font-weight:600}
.note{background:#fff8c5;border:1px solid #d4a72c;padding:.5rem 1rem}.legend{color:#59636e;font-size:.85rem;max-width:60rem}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:1rem}figure{margin:0;border:1px solid #d0d7de;padding:.5rem}
figure img{width:100%;height:auto}code{font-size:.8rem;word-break:break-all}code.id{user-select:all}
"""


def render_comparison(runs: Sequence[RunView], images: Mapping[str, bytes], *, title: str) -> str:
    from tabtrack.pages.shared_rows import against_first, tested_alike

    e = html.escape
    seed = int(runs[0].params.get("random_state", 0) or 0) if runs else 0
    versus = against_first(runs, seed=seed)
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{e(title)} · tabtrack comparison</title><style>{STYLE}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p>{len(runs)} runs, numbered as in the table below; deltas are against run #1, "
        "<span class='best'>the best</span> per metric in its own direction.</p>",
    ]
    if any(not tested_alike(runs[0], run) for run in runs[1:]):
        parts.append(
            "<p class='note'>These runs were tested on <b>different test data</b> (their test datasets' digests "
            "differ): their test metrics and curves do not compare like for like.</p>"
        )
    parts += ["<h2>Runs</h2>", _runs_table(runs), "<h2>Metrics</h2>", _interval_legend(runs, versus, seed)]
    parts.append(f"<div class='wide'>{_metrics_table(runs, versus)}</div>")
    missing = [run.label for run in runs if run.predictions is None]
    parts.append("<h2>Curves</h2>")
    if missing:
        parts.append(
            f"<p class='note'>No curves for {e(', '.join(missing))}: made before runs kept their test predictions "
            f"({e(PREDICTIONS_FILE)}).</p>"
        )
    if images:
        parts.append("<div class='plots'>")
        for name, png in images.items():
            encoded = base64.b64encode(png).decode("ascii")
            parts.append(f"<figure><img alt='{e(name)}' src='data:image/png;base64,{encoded}'></figure>")
        parts.append("</div>")
    parts += ["<h2>Parameters that differ</h2>", _differences(runs, lambda r: r.params)]
    parts += ["<h2>Lineage that differs</h2>", _differences(runs, _lineage)]
    parts.append("</body></html>")
    return "\n".join(parts)


def _runs_table(runs: Sequence[RunView]) -> str:
    """Each run's number, name, its full id (to copy into `tabtrack diff`, `reproduce`, `register`) and, on a
    tracking server, a link to it in the MLflow UI."""
    e = html.escape
    rows = []
    for number, run in enumerate(runs, 1):
        link = f" <a href='{e(run.ui_url)}'>MLflow UI</a>" if run.ui_url else ""
        rows.append(
            f"<tr><td>#{number}</td><td>{e(run.run_name)}</td><td><code class='id'>{e(run.run_id)}</code>{link}</td></tr>"
        )
    return f"<div class='wide'><table><tr><th>#</th><th>run</th><th>run id</th></tr>{''.join(rows)}</table></div>"


def _header(runs: Sequence[RunView], first: str) -> str:
    """Short column heads (#n and the run's name, cut to fit) so a dozen runs fit a laptop's window; the full
    label shows on hover and in the runs table."""
    e = html.escape
    heads = "".join(
        f"<th title='{e(run.label)}'>#{number}<span class='name'>{e(_short_name(run.run_name))}</span></th>"
        for number, run in enumerate(runs, 1)
    )
    return f"<tr><th>{e(first)}</th>{heads}</tr>"


def _short_name(run_name: str) -> str:
    """A run name without tabtrack's `_YYYYmmdd_HHMMSS` suffix: the model, where a column has room for little."""
    return re.sub(r"_\d{8}_\d{6}$", "", run_name) or run_name


def _interval_legend(runs: Sequence[RunView], versus: Sequence, seed: int) -> str:
    """What the test intervals rest on, and which runs have none, with the reason."""
    e = html.escape
    with_rows = [v for v in versus[1:] if v is not None and v.differences]
    parts = []
    if with_rows:
        rows = sorted({v.rows for v in with_rows})
        counted = f"{rows[0]:,}" if len(rows) == 1 else f"{rows[0]:,} to {rows[-1]:,}"
        first = next(iter(with_rows[0].differences.values()))
        parts.append(
            f"<p class='legend'>Under each test delta: its {first.level:.0%} interval from a paired bootstrap over "
            f"the {counted} test rows the run shares with run #1 ({first.resamples:,} resamples of those rows, both "
            f"runs' answers drawn together; seed {seed}). An interval that covers 0 is within noise; "
            "<span class='ci better'>green</span>: better beyond noise, <span class='ci worse'>red</span>: worse "
            "beyond noise. Test metrics without one (PR AUC, threshold sweeps, your own metrics) are not "
            "recomputed from the predictions. CV rows show each run's mean ± std over its folds.</p>"
        )
    by_reason: dict[str, list[str]] = {}
    for number, v in enumerate(versus, 1):
        if v is not None and v.reason:
            by_reason.setdefault(v.reason, []).append(f"#{number}")
    if by_reason:
        items = "".join(f"<li>{e(', '.join(numbers))}: {e(reason)}</li>" for reason, numbers in by_reason.items())
        parts.append(f"<div class='note'>No test intervals for<ul>{items}</ul></div>")
    return "".join(parts)


def _lineage(run: RunView) -> dict[str, str]:
    values = {key: run.tags[key] for key in LINEAGE if key in run.tags}
    values.update({f"package {name}": version for name, version in run.packages.items()})
    return values


def _differences(runs: Sequence[RunView], values_of) -> str:
    values = [values_of(run) for run in runs]
    keys = sorted({key for value in values for key in value})
    changed = [key for key in keys if len({value.get(key) for value in values}) > 1]
    if not changed:
        return "<p>none</p>"
    e = html.escape
    rows = [
        f"<tr><td>{e(key)}</td>" + "".join(f"<td><code>{e(str(value.get(key, '')))}</code></td>" for value in values)
        + "</tr>"
        for key in changed
    ]  # fmt: skip
    many = " class='many'" if len(runs) > 6 else ""
    return f"<div class='wide'><table{many}>{_header(runs, 'name')}{''.join(rows)}</table></div>"


def _metrics_table(runs: Sequence[RunView], versus: Sequence) -> str:
    """Rows: cv mean ± std then test, per metric; columns: runs; deltas against the first run, and under each
    test delta its paired interval where the runs share test rows."""
    e = html.escape
    grouped = [group_by_split(run.metrics) for run in runs]
    names = list(dict.fromkeys(n for g in grouped for n in g.get("test", {})))
    cv_names = list(
        dict.fromkeys(n.removesuffix("_mean") for g in grouped for n in g.get("cv", {}) if n.endswith("_mean"))
    )
    rows = []
    for split, metric_names in (("cv", cv_names), ("test", names)):
        for name in metric_names:
            key = f"{name}_mean" if split == "cv" else name
            values = [g.get(split, {}).get(key) for g in grouped]
            best = _best(name, values)
            cells = []
            for index, value in enumerate(values):
                if value is None:
                    cells.append("<td></td>")
                    continue
                text = f"{value:.4f}"
                if split == "cv":
                    std = grouped[index]["cv"].get(f"{name}_std")
                    text += f"<span class='delta'>± {std:.4f}</span>" if std is not None else ""
                if index and values[0] is not None:
                    text += f"<span class='delta'>({value - values[0]:+.4f})</span>"
                    if split == "test":
                        text += _interval(versus[index], name)
                cls = "num best" if index in best else "num"
                cells.append(f"<td class='{cls}'>{text}</td>")
            rows.append(f"<tr><td>{e(split)} {e(name)}</td>{''.join(cells)}</tr>")
    many = " class='many'" if len(runs) > 6 else ""  # a dozen runs fit a laptop's window with short heads
    return f"<table{many}>{_header(runs, 'metric')}{''.join(rows)}</table>"


def _interval(versus, name: str) -> str:
    """The interval of (this run - run #1) on `name`, in the metric's own units and sign, like the delta above it."""
    difference = versus.differences.get(name) if versus is not None else None
    if difference is None or not np.isfinite(difference.low):
        return ""
    sign = 1.0 if GREATER_IS_BETTER.get(name, True) else -1.0
    low, high = sorted((sign * difference.low, sign * difference.high))
    verdict = "better" if difference.low > 0 else "worse" if difference.high < 0 else "noise"
    words = {"better": "better beyond noise", "worse": "worse beyond noise", "noise": "within noise"}[verdict]
    return f"<span class='ci {verdict}' title='{words}'>{low:+.3f}…{high:+.3f}</span>"


def _best(name: str, values: Sequence[float | None]) -> set[int]:
    """Which runs are best on this metric, in its own direction (none for metrics of unknown direction)."""
    direction = GREATER_IS_BETTER.get(name)
    present = [(i, v) for i, v in enumerate(values) if v is not None and not np.isnan(v)]
    if direction is None or len(present) < 2:
        return set()
    target = (max if direction else min)(v for _, v in present)
    return {i for i, v in present if v == target}


def render_figures(figures: Mapping[str, Any]) -> dict[str, bytes]:
    return {name: render_png(fig) for name, fig in figures.items()}
