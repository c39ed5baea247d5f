"""The standard plots as matplotlib Figures, drawn with scikit-learn's Display classes.

Figures are built with `matplotlib.figure.Figure` (Agg canvas), never through pyplot, so no global
figure registry grows across runs in one process; `render_png` turns one into bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pandas as pd

FIGSIZE = (6.4, 4.8)
LEFT = 0.12
DPI = 100
# A title at a fixed height: matplotlib otherwise measures every tick label to place it (~15% of drawing),
# and these axes have no decorations above the plot, so the fixed height is where it lands anyway.
TITLE_Y = 1.0


def import_matplotlib() -> None:
    """What drawing and rendering import (~1 s), for a caller with time to spare (one waiting for a fit)."""
    import matplotlib.backends.backend_agg
    import matplotlib.figure  # noqa: F401


def _figure(title: str, model: str, figsize: tuple[float, float] = FIGSIZE, left: float = LEFT):
    from matplotlib.figure import Figure

    # Fixed margins instead of a layout engine: constrained layout measured ~40% of render time.
    fig = Figure(figsize=figsize, dpi=DPI)
    fig.subplots_adjust(left=left, right=0.96, bottom=0.11, top=0.86)
    ax = fig.add_subplot()
    ax.set_title(f"{title}\n{model}", fontsize=11, y=TITLE_Y)
    return fig, ax


def render_png(fig) -> bytes:
    buffer = io.BytesIO()
    # Light compression: a few percent larger files, several times faster to write.
    fig.savefig(buffer, format="png", pil_kwargs={"compress_level": 1})
    return buffer.getvalue()


def classification_plots(
    y_true: Sequence, y_pred: Sequence, proba: np.ndarray | None, *, classes: Sequence, model: str
) -> dict[str, object]:
    """`{artifact_name: Figure}` for confusion matrices, ROC, precision-recall and calibration curves."""
    from sklearn.metrics import ConfusionMatrixDisplay

    figures: dict[str, object] = {}
    labels = [str(c) for c in classes]
    for name, normalize, fmt, title in (
        ("confusion_matrix", None, "d", "Confusion matrix (test split)"),
        ("confusion_matrix_normalized", "true", ".2f", "Confusion matrix, normalized by true class (test split)"),
    ):
        fig, ax = _figure(title, model)
        ConfusionMatrixDisplay.from_predictions(
            y_true, y_pred, labels=list(classes), display_labels=labels, normalize=normalize,
            values_format=fmt, ax=ax, colorbar=False, cmap="Blues",
        )  # fmt: skip
        ax.set_title(f"{title}\n{model}", fontsize=11, y=TITLE_Y)
        figures[name] = fig
    if proba is not None:
        figures["roc_curve"] = _curves("roc", y_true, proba, classes, model)
        figures["pr_curve"] = _curves("pr", y_true, proba, classes, model)
        figures["calibration_curve"] = _calibration(y_true, proba, classes, model)
    return figures


def _curves(kind: str, y_true: Sequence, proba: np.ndarray, classes: Sequence, model: str):
    """One curve for binary targets; one-vs-rest, one per class, for multiclass."""
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    display = RocCurveDisplay if kind == "roc" else PrecisionRecallDisplay
    title = "ROC curve" if kind == "roc" else "Precision-recall curve"
    y_true = np.asarray(y_true)
    binary = len(classes) == 2
    fig, ax = _figure(f"{title} (test split{'' if binary else ', one-vs-rest'})", model)
    pairs = [(1, classes[1])] if binary else list(enumerate(classes))
    for index, label in pairs:
        positives = y_true == label
        if positives.all() or not positives.any():
            continue  # a class absent from the split has no curve
        display.from_predictions(
            positives, proba[:, index], name=f"class {label}", ax=ax, plot_chance_level=(index == pairs[0][0])
        )
    ax.set_title(f"{title} (test split{'' if binary else ', one-vs-rest'})\n{model}", fontsize=11, y=TITLE_Y)
    if kind == "roc":
        ax.set_xlabel("False positive rate")
        ax.set_ylabel("True positive rate")
    else:
        ax.set_xlabel("Recall")
        ax.set_ylabel("Precision")
    ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=8)
    return fig


def _calibration(y_true: Sequence, proba: np.ndarray, classes: Sequence, model: str):
    from sklearn.calibration import CalibrationDisplay

    y_true = np.asarray(y_true)
    binary = len(classes) == 2
    fig, ax = _figure(f"Calibration curve (test split{'' if binary else ', one-vs-rest'})", model)
    pairs = [(1, classes[1])] if binary else list(enumerate(classes))
    for index, label in pairs:
        positives = (y_true == label).astype(int)
        if positives.min() == positives.max():
            continue
        CalibrationDisplay.from_predictions(positives, proba[:, index], n_bins=10, name=f"class {label}", ax=ax)
    ax.set_title(f"Calibration curve (test split{'' if binary else ', one-vs-rest'})\n{model}", fontsize=11, y=TITLE_Y)
    ax.set_xlabel("Mean predicted probability")
    ax.set_ylabel("Fraction of positives")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def regression_plots(y_true: Sequence, y_pred: Sequence, *, model: str) -> dict[str, object]:
    """Residuals vs predicted, predicted vs actual, residual histogram."""
    from sklearn.metrics import PredictionErrorDisplay

    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    figures: dict[str, object] = {}
    for name, kind, title in (
        ("residuals", "residual_vs_predicted", "Residuals vs predicted (test split)"),
        ("predicted_vs_actual", "actual_vs_predicted", "Actual vs predicted (test split)"),
    ):
        fig, ax = _figure(title, model)
        PredictionErrorDisplay.from_predictions(
            y_true, y_pred, kind=kind, ax=ax, subsample=2000, random_state=0, scatter_kwargs={"alpha": 0.5, "s": 12}
        )
        ax.set_title(f"{title}\n{model}", fontsize=11, y=TITLE_Y)
        figures[name] = fig
    fig, ax = _figure("Residual distribution (test split)", model)
    residuals = y_true - y_pred
    ax.hist(residuals, bins=min(50, max(10, len(residuals) // 10)), color="tab:blue", alpha=0.8)
    ax.axvline(0, color="black", linewidth=1, linestyle="--")
    ax.set_xlabel("Residual (actual - predicted)")
    ax.set_ylabel("Count")
    figures["residual_histogram"] = fig
    return figures


def feature_importance_plot(table: pd.DataFrame, *, model: str, method: str, top: int = 20):
    """Horizontal bars of the `top` most important input columns."""
    shown = table.head(top).iloc[::-1]
    height = max(3.0, 0.3 * len(shown) + 1.5)
    longest = max((len(str(name)) for name in shown["feature"]), default=1)
    left = min(0.5, 0.06 + 0.0105 * longest)  # room for the column names at fontsize 8
    fig, ax = _figure(
        f"Feature importance ({method}), top {len(shown)} of {len(table)}", model, figsize=(7.0, height), left=left
    )
    fig.subplots_adjust(bottom=min(0.3, 0.55 / height), top=1 - min(0.25, 0.7 / height))
    ax.barh(shown["feature"].astype(str), shown["importance"], color="tab:blue")
    ax.set_xlabel("importance" if method == "native" else "mean drop in score when permuted")
    ax.set_ylabel("input column")
    ax.tick_params(axis="y", labelsize=8)
    return fig


def loss_curve_plot(history: Sequence[dict[str, float]], *, best_epoch: int, model: str):
    """Training and validation loss per epoch, with the epoch whose weights were kept."""
    fig, ax = _figure("Loss per epoch", model)
    epochs = np.arange(1, len(history) + 1)
    # every loss logged per epoch (a booster's per-round `val_logloss` too), the usual two first
    losses = list(dict.fromkeys(["train_loss", "val_loss", *(k for record in history for k in record if "loss" in k)]))
    for key in losses:
        values = [record.get(key) for record in history]
        if any(v is not None for v in values):
            label = {"train_loss": "train", "val_loss": "validation"}.get(key, key)
            ax.plot(epochs, values, label=label, marker="o" if len(history) <= 30 else None, markersize=3)
    if best_epoch:
        ax.axvline(best_epoch, color="tab:red", linestyle="--", linewidth=1, label=f"best epoch ({best_epoch})")
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Loss")
    ax.legend(fontsize=8)
    return fig


def shap_summary_plot(values: pd.DataFrame, data: pd.DataFrame, *, model: str, output: str, top: int = 15):
    """A beeswarm: one dot per explained row and input column at its SHAP value, coloured by the column's
    value (low blue, high red; text and missing values grey), columns by mean |SHAP|, largest on top."""
    order = values.abs().mean().sort_values(ascending=False).index[:top][::-1]
    height = max(3.0, 0.35 * len(order) + 1.6)
    longest = max((len(str(name)) for name in order), default=1)
    fig, ax = _figure(
        f"SHAP values per input column ({output}), {len(values)} test rows",
        model,
        figsize=(7.0, height),
        left=min(0.5, 0.06 + 0.0105 * longest),
    )
    fig.subplots_adjust(right=0.88, bottom=min(0.3, 0.6 / height), top=1 - min(0.25, 0.7 / height))
    rng = np.random.default_rng(0)
    for position, column in enumerate(order):
        shap_values = values[column].to_numpy(dtype=float)
        numbers = pd.to_numeric(data[column], errors="coerce").to_numpy(dtype=float)
        colour = np.full(len(numbers), np.nan)
        if np.isfinite(numbers).any():
            low, high = np.nanpercentile(numbers, [5, 95])
            colour = np.clip((numbers - low) / (high - low), 0, 1) if high > low else np.full(len(numbers), 0.5)
        jitter = rng.uniform(-0.3, 0.3, len(shap_values))
        known = np.isfinite(colour)
        ax.scatter(shap_values[~known], position + jitter[~known], s=6, color="#9a9a9a", alpha=0.6, linewidths=0)
        points = ax.scatter(
            shap_values[known], position + jitter[known], s=6, c=colour[known], cmap="coolwarm", vmin=0, vmax=1,
            alpha=0.8, linewidths=0,
        )  # fmt: skip
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_yticks(range(len(order)), [str(c) for c in order], fontsize=8)
    ax.set_xlabel(f"SHAP value (effect on the model's {output})")
    if len(order):
        bar = fig.colorbar(points, ax=ax, pad=0.01, fraction=0.04, ticks=[0, 1])
        bar.ax.set_yticklabels(["low", "high"], fontsize=8)
        bar.set_label("column value", fontsize=8)
    return fig


def shap_importance_plot(table: pd.DataFrame, *, model: str, output: str, top: int = 20):
    """Mean |SHAP| per input column, as horizontal bars."""
    renamed = table.rename(columns={"mean_abs_shap": "importance"})
    fig = feature_importance_plot(renamed, model=model, method="SHAP", top=top)
    fig.axes[0].set_xlabel(f"mean |SHAP value| ({output})")
    return fig
