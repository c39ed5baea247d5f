"""A model card in the shape of "Model Cards for Model Reporting" (Mitchell et al., 2019), built from what a
registered version's run recorded. Pure: takes `CardData`, returns Markdown (and HTML from it).

The intended and out-of-scope uses come from the config's `card:` section; where it says nothing, the card
shows a placeholder and says it is unfilled.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tabtrack.evaluate.caveats import TOO_GOOD_TAG, run_caveats
from tabtrack.evaluate.metrics import group_by_split
from tabtrack.pages.markdown import markdown_table

UNFILLED = "_Not filled in: add it under `card:` in the run's config (see the README, Model cards)._"


@dataclass
class CardData:
    name: str
    version: str | None
    aliases: Sequence[str]
    run_id: str
    run_name: str
    experiment: str
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    tags: Mapping[str, str]
    card: Mapping[str, Any] = field(default_factory=dict)  # the config's `card:` section
    validation: Mapping[str, Any] | None = None  # data_validation.json
    slices: Any = None  # reports/slices.csv as a DataFrame
    class_balance: Mapping[str, int] | None = None  # from reports/classification_report.json
    gate: Mapping[str, str] = field(default_factory=dict)  # the version's gate.* tags


def render_card(data: CardData) -> str:
    """The full card, Markdown."""
    p = data.params
    title = f"{data.name} v{data.version}" if data.version else data.name
    lines = [f"# Model card: {title}", ""]
    lines += ["## Model details", ""]
    lines += _bullets(
        [
            ("Family", p.get("model_type", "")),
            ("Task", p.get("task", "")),
            ("Target", p.get("target", "")),
            ("Registered version", data.version or "not registered"),
            ("Aliases", ", ".join(data.aliases) or "none"),
            ("Run", f"`{data.run_id}` ({data.run_name}, experiment {data.experiment})"),
            (
                "Trained with",
                f"tabtrack {data.tags.get('tabtrack.version', '?')}, git commit "
                f"`{data.tags.get('git.commit', 'unknown')}`",
            ),
        ]
    )
    hyper = {k: v for k, v in p.items() if k not in _SETTINGS and not k.startswith(("best.", "feature_importance"))}
    if hyper:
        lines += ["", "Parameters: " + ", ".join(f"`{k}={v}`" for k, v in sorted(hyper.items())[:40])]
    lines += ["", "## Intended use", "", str(data.card.get("intended_use") or UNFILLED)]
    lines += ["", "## Out-of-scope use", "", str(data.card.get("out_of_scope_use") or UNFILLED)]
    if data.card.get("owners"):
        lines += ["", "## Owners", "", str(data.card["owners"])]
    lines += ["", "## Training and evaluation data", ""]
    lines += _bullets(
        [
            ("Data", f"`{data.tags.get('data.path', 'unknown')}`"),
            ("sha256", f"`{data.tags.get('data.sha256', 'unknown')}`"),
            ("DVC md5", f"`{data.tags['data.dvc_md5']}`" if data.tags.get("data.dvc_md5") else None),
            ("Training rows", p.get("n_train_samples")),
            ("Test rows", p.get("n_test_samples")),
            ("Features", p.get("n_features")),
            (
                "Class balance (test split)",
                ", ".join(f"{k}: {v}" for k, v in (data.class_balance or {}).items()) or None,
            ),
        ]
    )
    lines += ["", "## Metrics", "", *_metrics_table(data.metrics)]
    if "test_interval_coverage" in data.metrics:
        lines += ["", "## Prediction intervals", "", _intervals(p, data.metrics)]
    if data.slices is not None and len(data.slices):
        lines += ["", "## Metrics by slice (test split)", "", markdown_table(data.slices, digits=4).rstrip()]
    lines += ["", "## Caveats", ""]
    caveats = [f["message"] for f in (data.validation or {}).get("findings", []) if f.get("severity") == "warning"]
    if data.tags.get(TOO_GOOD_TAG):
        caveats.append(f"Too good to be true? {data.tags[TOO_GOOD_TAG]}")
    caveats += run_caveats(data.metrics, data.class_balance)
    if data.gate:
        caveats.append(
            f"Champion gate: this version is the {data.gate.get('gate.decision')} ({data.gate.get('gate.reason')})."
        )
    if data.card.get("ethical_considerations"):
        caveats.append(str(data.card["ethical_considerations"]))
    lines += [f"- {c}" for c in caveats] or ["- none recorded"]
    return "\n".join(lines) + "\n"


def summary(data: CardData) -> str:
    """A few lines for the registered version's description: what it is, on what, how good, for what."""
    test = {k: v for k, v in group_by_split(data.metrics).get("test", {}).items() if "_slice_gap_" not in k}
    headline = ", ".join(f"{k} {v:.4f}" for k, v in list(test.items())[:4])
    use = str(data.card.get("intended_use") or "not filled in").splitlines()[0].rstrip(".")
    return (
        f"{data.params.get('model_type', 'model')} for {data.params.get('task', '')} of "
        f"{data.params.get('target', '')}; trained on {data.tags.get('data.path', '?')} "
        f"(sha256 {data.tags.get('data.sha256', '?')[:12]}), run {data.run_id}. Test: {headline}. "
        f"Intended use: {use}. Full card: model_card/{data.name}-v{data.version}.md in the run."
    )


def card_html(markdown: str) -> str:
    """The card as a standalone page (a plain rendering of the Markdown above)."""
    body = []
    in_table = False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= {"-", " "}:
                continue
            tag = "th" if not in_table else "td"
            body.append(
                ("<table>" if not in_table else "")
                + "<tr>"
                + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells)
                + "</tr>"
            )
            in_table = True
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("# "):
            body.append(f"<h1>{_inline(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{_inline(line[3:])}</h2>")
        elif line.startswith("- "):
            opened = bool(body) and body[-1].endswith("</li></ul>")
            if opened:
                body[-1] = body[-1].removesuffix("</ul>")
            body.append(f"{'' if opened else '<ul>'}<li>{_inline(line[2:])}</li></ul>")
        elif line.strip():
            body.append(f"<p>{_inline(line)}</p>")
    if in_table:
        body.append("</table>")
    style = ("body{font-family:system-ui,sans-serif;max-width:900px;margin:2rem auto;padding:0 1rem;color:#1f2328}"
             "table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:.3rem .6rem}th{background:#f6f8fa}")  # fmt: skip
    return f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>model card</title><style>{style}</style></head><body>{''.join(body)}</body></html>"


_SETTINGS = {"model_type", "task", "target", "test_size", "random_state", "cv_folds", "n_features", "n_train_samples",
             "n_test_samples", "n_numeric_features", "n_categorical_features", "n_classes", "train_metrics_rows",
             "intervals", "calibration_size", "n_calibration_samples", "interval_method"}  # fmt: skip


def _intervals(params: Mapping[str, str], metrics: Mapping[str, float]) -> str:
    """What the model's intervals promise, what that rests on, and how they did on the test split."""
    level = float(params.get("intervals", "nan"))
    width = metrics.get("test_interval_width", float("nan"))
    price = (
        f"mean width {width:.4g}" if params.get("task") == "regression" else f"{width:.2f} labels per set on average"
    )
    return (
        f"Each prediction comes with a {level:.0%} {'interval' if params.get('task') == 'regression' else 'label set'} "
        f"({params.get('interval_method', 'split conformal')}), calibrated on {params.get('n_calibration_samples', '?')} "
        f"training rows held out of the fit: over new rows like those, it holds the true value for {level:.0%} of them "
        f"on average (a promise about many rows, not each one). On the {params.get('n_test_samples', '?')} test rows it held for "
        f"{metrics['test_interval_coverage']:.1%}; {price}. `model_intervals` answers with it (mlflow.pyfunc), as do "
        "`tabtrack predict` and `serve`."
    )


def _inline(text: str) -> str:
    """Markdown's `code`, **bold** and _emphasis_ (as this module writes them) in HTML."""
    import re

    parts = html.escape(text).split("`")
    for i in range(0, len(parts), 2):
        parts[i] = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", parts[i])
    text = "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))
    return re.sub(r"^_(.+)_$", r"<em>\1</em>", text)


def _bullets(items) -> list[str]:
    return [f"- **{label}**: {value}" for label, value in items if value not in (None, "")]


def _metrics_table(flat: Mapping[str, float]) -> list[str]:
    grouped = group_by_split(flat)
    names = list(dict.fromkeys([*grouped.get("test", {}), *grouped.get("train", {})]))
    names = [name for name in names if "_slice_gap_" not in name]  # the slice section shows those
    rows = ["| metric | train | cv (mean ± std) | test |", "| --- | --- | --- | --- |"]
    for name in names:
        cv_mean, cv_std = grouped.get("cv", {}).get(f"{name}_mean"), grouped.get("cv", {}).get(f"{name}_std")
        cells = [
            _number(grouped.get("train", {}).get(name)),
            "" if cv_mean is None else f"{cv_mean:.4f} ± {cv_std:.4f}",
            _number(grouped.get("test", {}).get(name)),
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def _number(value) -> str:
    return "" if value is None or value != value else f"{value:.4f}"
