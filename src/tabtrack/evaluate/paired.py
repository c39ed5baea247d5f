"""How sure a difference between two models is: a paired bootstrap over the rows both were scored on, and a
corrected t-test over the cross-validation folds both were scored on.

Both models' predictions on the same held-out rows are resampled together (the same rows drawn, with replacement,
for both), so what the rows have in common (hard rows, easy rows) cancels and only the models' difference varies.
Each resample is a vector of row counts; a metric computed with those counts as weights is the metric on the
resampled rows. The task's default metrics are computed for a block of resamples at once (matrix products and,
for ROC AUC, weighted ranks): 1,000 resamples of 10,000 rows take a fraction of a second. Any other metric is
computed resample by resample with scikit-learn.
Pure: numpy and scikit-learn's metrics; seeded, so the same inputs give the same interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tabtrack.evaluate.metrics import GREATER_IS_BETTER, compute_metrics

RESAMPLES = 1000
LEVEL = 0.95
_BLOCK = 100  # resamples weighed at once: 100 x 10,000 rows of float64 is 8 MB


@dataclass
class Scored:
    """One model's answers on the held-out rows."""

    predictions: np.ndarray
    proba: np.ndarray | None = None


@dataclass
class PairedDifference:
    """The new model's improvement over the old on `metric` (positive: better, whichever way the metric points),
    on all rows and as a `level` bootstrap interval."""

    metric: str
    new: float
    old: float
    improvement: float
    low: float
    high: float
    rows: int
    resamples: int
    seed: int
    level: float = LEVEL

    def beyond(self, margin: float = 0.0) -> bool:
        """Whether the improvement is above `margin` at this level: the interval's lower bound is."""
        return bool(self.low > margin)

    @property
    def interval(self) -> str:
        return f"{self.level:.0%} interval {self.low:+.4f} to {self.high:+.4f}"


def paired_bootstrap(
    metric: str,
    task: str,
    y_true: Sequence,
    new: Scored,
    old: Scored,
    *,
    classes: Sequence | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> PairedDifference:
    """The paired bootstrap interval of `new`'s improvement over `old` on `metric`."""
    found = paired_differences(
        task, y_true, [old, new], [metric], classes=classes, resamples=resamples, seed=seed, level=level
    )
    return found[1][metric]


def paired_differences(
    task: str,
    y_true: Sequence,
    models: Sequence[Scored],
    metrics: Sequence[str],
    *,
    classes: Sequence | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[int, dict[str, PairedDifference]]:
    """Each later model's improvement over the first on each metric, `{index: {metric: PairedDifference}}`, all on
    the same resamples (drawn once), so the intervals of a page's runs are comparable and cost one draw."""
    y = np.asarray(y_true)
    scorers = {metric: _Weighted(metric, task, y, classes) for metric in metrics}
    signs = {metric: 1.0 if GREATER_IS_BETTER[metric] else -1.0 for metric in metrics}
    ones = np.ones((1, len(y)))
    whole = {metric: [float(scorer(m, ones)[0]) for m in models] for metric, scorer in scorers.items()}
    drawn: dict[tuple[int, str], list[np.ndarray]] = {(i, m): [] for i in range(1, len(models)) for m in metrics}
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, _BLOCK):
        weights = _resampled(rng, len(y), min(_BLOCK, resamples - start))
        for metric, scorer in scorers.items():
            first = scorer(models[0], weights)
            for index in range(1, len(models)):
                drawn[index, metric].append(signs[metric] * (scorer(models[index], weights) - first))
    tail = (1 - level) / 2 * 100
    found: dict[int, dict[str, PairedDifference]] = {}
    for (index, metric), blocks in drawn.items():
        values = np.concatenate(blocks)
        values = values[np.isfinite(values)]  # a resample without a class leaves some metrics undefined
        low, high = (np.percentile(values, [tail, 100 - tail]) if len(values) else (np.nan, np.nan))  # fmt: skip
        new_all, old_all = whole[metric][index], whole[metric][0]
        found.setdefault(index, {})[metric] = PairedDifference(
            metric, new_all, old_all, signs[metric] * (new_all - old_all), float(low), float(high), len(y),
            resamples, seed, level,
        )  # fmt: skip
    return found


def fast_metrics(task: str, n_classes: int) -> tuple[str, ...]:
    """The metrics computed for a block of resamples at once (any other costs scikit-learn per resample)."""
    if task == "regression":
        return ("rmse", "mae", "mape", "r2")
    averaged = ("precision", "recall", "f1") if n_classes <= 2 else tuple(
        f"{name}_{average}" for name in ("precision", "recall", "f1") for average in ("macro", "weighted")
    )  # fmt: skip
    return ("accuracy", "log_loss", "roc_auc", *averaged)


@dataclass
class FoldDifference:
    """The winner's advantage over another model across shared CV folds (positive: the winner is better), with its
    `level` interval and two-sided p-value from Nadeau & Bengio's corrected resampled t-test."""

    difference: float
    low: float
    high: float
    p_value: float
    folds: int
    level: float = LEVEL

    @property
    def beyond_noise(self) -> bool:
        return bool(self.low > 0 or self.high < 0)


def corrected_fold_test(
    winner: Sequence[float], other: Sequence[float], *, greater_is_better: bool, level: float = LEVEL
) -> FoldDifference:
    """Nadeau & Bengio (2003): K-fold scores of two models on the same folds are paired, but the folds' training
    sets overlap, so the plain paired t-test is overconfident. The variance of the mean difference is inflated from
    1/K to 1/K + n_test/n_train, which for K-fold is 1/(K-1); K-1 degrees of freedom."""
    from scipy import stats

    differences = (np.asarray(winner, float) - np.asarray(other, float)) * (1.0 if greater_is_better else -1.0)
    folds = len(differences)
    mean = float(differences.mean())
    error = float(np.sqrt((1 / folds + 1 / (folds - 1)) * differences.var(ddof=1)))
    if error == 0:
        return FoldDifference(mean, mean, mean, 1.0 if mean == 0 else 0.0, folds, level)
    half = float(stats.t.ppf(0.5 + level / 2, folds - 1)) * error
    p_value = float(2 * stats.t.sf(abs(mean) / error, folds - 1))
    return FoldDifference(mean, mean - half, mean + half, p_value, folds, level)


def _resampled(rng: np.random.Generator, rows: int, count: int) -> np.ndarray:
    """`count` bootstrap resamples of `rows` rows, as how often each row was drawn (count x rows)."""
    drawn = rng.integers(0, rows, size=(count, rows))
    offsets = (np.arange(count) * rows)[:, None]
    return np.bincount((drawn + offsets).ravel(), minlength=count * rows).reshape(count, rows).astype(float)


class _Weighted:
    """`metric` of a model's answers under each row of a weights matrix: one score per resample."""

    def __init__(self, metric: str, task: str, y: np.ndarray, classes: Sequence | None) -> None:
        self.metric, self.task, self.y = metric, task, y
        self.classes = list(classes) if classes is not None else sorted(set(y.tolist()))
        if task == "regression":
            self.y = y.astype(float)
            fast = {"rmse": self._rmse, "mae": self._mae, "mape": self._mape, "r2": self._r2}
        else:
            self.index = self._positions(y)
            self.actual = np.stack([self.index == i for i in range(len(self.classes))], axis=1).astype(float)
            fast = {"accuracy": self._accuracy, "log_loss": self._log_loss, "roc_auc": self._roc_auc}
            averages = ("macro", "weighted") if len(self.classes) > 2 else ("binary",)
            for name in ("precision", "recall", "f1"):
                for average in averages:
                    key = name if average == "binary" else f"{name}_{average}"
                    fast[key] = lambda scored, weights, name=name, average=average: self._by_class(
                        scored, weights, name, average
                    )
        self.fast = fast.get(metric, self._each)

    def _positions(self, labels: np.ndarray) -> np.ndarray:
        """Each label's index among the classes (-1: not one of them)."""
        position = {c: i for i, c in enumerate(self.classes)}
        return np.array([position.get(v, -1) for v in labels.tolist()])

    def __call__(self, scored: Scored, weights: np.ndarray) -> np.ndarray:
        return self.fast(scored, weights)

    def _rmse(self, scored: Scored, weights: np.ndarray) -> np.ndarray:
        return np.sqrt(weights @ (np.asarray(scored.predictions, float) - self.y) ** 2 / weights.sum(1))

    def _mae(self, scored: Scored, weights: np.ndarray) -> np.ndarray:
        return weights @ np.abs(np.asarray(scored.predictions, float) - self.y) / weights.sum(1)

    def _mape(self, scored: Scored, weights: np.ndarray) -> np.ndarray:
        error = np.abs(np.asarray(scored.predictions, float) - self.y) / np.maximum(np.abs(self.y), np.finfo(float).eps)
        return weights @ error / weights.sum(1)

    def _r2(self, scored: Scored, weights: np.ndarray) -> np.ndarray:
        spread = weights @ self.y**2 - (weights @ self.y) ** 2 / weights.sum(1)
        return 1 - (weights @ (np.asarray(scored.predictions, float) - self.y) ** 2) / spread

    def _accuracy(self, scored: Scored, weights: np.ndarray) -> np.ndarray:
        return weights @ (np.asarray(scored.predictions) == self.y) / weights.sum(1)

    def _log_loss(self, scored: Scored, weights: np.ndarray) -> np.ndarray:
        if scored.proba is None or (self.index < 0).any():
            return self._each(scored, weights)
        eps = np.finfo(float).eps
        true = np.clip(np.asarray(scored.proba, float)[np.arange(len(self.y)), self.index], eps, 1 - eps)
        return weights @ -np.log(true) / weights.sum(1)

    def _roc_auc(self, scored: Scored, weights: np.ndarray) -> np.ndarray:
        if scored.proba is None:
            return self._each(scored, weights)
        proba = np.asarray(scored.proba, float)
        if len(self.classes) == 2:
            return _weighted_auc(self.index == 1, proba[:, 1], weights)
        # one-vs-rest, the classes' plain average (scikit-learn's multi_class="ovr", average="macro")
        return np.mean([_weighted_auc(self.index == i, proba[:, i], weights) for i in range(len(self.classes))], 0)

    def _by_class(self, scored: Scored, weights: np.ndarray, name: str, average: str) -> np.ndarray:
        """Precision, recall or F1 from each class's weighted hits, predicted and actual counts."""
        predicted_index = self._positions(np.asarray(scored.predictions))
        predicted = np.stack([predicted_index == i for i in range(len(self.classes))], axis=1).astype(float)
        hits, said, actual = weights @ (self.actual * predicted), weights @ predicted, weights @ self.actual
        with np.errstate(invalid="ignore", divide="ignore"):
            value = {"precision": hits / said, "recall": hits / actual, "f1": 2 * hits / (said + actual)}[name]
        value = np.nan_to_num(value)  # scikit-learn's zero_division=0
        if average == "binary":
            return value[:, 1]
        if average == "macro":
            return value.mean(1)
        return (value * actual).sum(1) / actual.sum(1)

    def _each(self, scored: Scored, weights: np.ndarray) -> np.ndarray:
        """Any other metric: scikit-learn on each resample's rows."""
        scores = []
        for row in weights:
            rows = np.repeat(np.arange(len(self.y)), row.astype(int))
            proba = None if scored.proba is None else np.asarray(scored.proba)[rows]
            classes = self.classes if self.task == "classification" else None
            values = compute_metrics(self.task, self.y[rows], np.asarray(scored.predictions)[rows], proba,
                                     classes=classes)  # fmt: skip
            scores.append(values.get(self.metric, np.nan))
        return np.asarray(scores, float)


def _weighted_auc(positive: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC under each row of `weights`: the weighted share of (positive, negative) pairs ranked right, ties
    counting half. Each positive's negatives below it and tied with it are read off a running sum of the
    negatives' weights in score order."""
    negative_order = np.flatnonzero(~positive)[np.argsort(scores[~positive], kind="stable")]
    negative_scores = scores[negative_order]
    running = np.zeros((len(weights), len(negative_order) + 1))
    np.cumsum(weights[:, negative_order], axis=1, out=running[:, 1:])
    positives = np.flatnonzero(positive)
    below = np.searchsorted(negative_scores, scores[positives], side="left")
    up_to = np.searchsorted(negative_scores, scores[positives], side="right")
    positive_weights = weights[:, positives]
    ranked_right = (positive_weights * (running[:, below] + running[:, up_to])).sum(1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return ranked_right / (positive_weights.sum(1) * running[:, -1])
