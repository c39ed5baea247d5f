"""Decisions that carry their uncertainty: the paired bootstrap behind the champion gate (evaluate/paired.py).

Its metrics are checked against scikit-learn's on real tables' predictions; its decisions by seeded simulations
of model pairs whose true difference is known; the gate itself through the console script."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from mlflow import MlflowClient

import real_tables
from conftest import run_tabtrack
from tabtrack.evaluate.metrics import compute_metrics
from tabtrack.evaluate.paired import Scored, _resampled, _Weighted, paired_bootstrap

CLASSIFICATION = ["accuracy", "log_loss", "roc_auc", "pr_auc"]
BINARY = [*CLASSIFICATION, "precision", "recall", "f1"]
MULTICLASS = [*CLASSIFICATION] + [f"{m}_{a}" for m in ("precision", "recall", "f1") for a in ("macro", "weighted")]


def _fitted(name: str, model):
    """A real table's test rows, and a scikit-learn model's answers on them."""
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    table = real_tables.TABLES[name]
    frame = real_tables.load(table).drop(columns=["rownames"]).dropna(subset=[table.target])
    X, y = frame.drop(columns=[table.target]), frame[table.target]
    y = y.astype(str) if table.task == "classification" else y.astype(float)
    numbers = X.select_dtypes("number").columns.tolist()
    text = [c for c in X.columns if c not in numbers]
    pipeline = make_pipeline(
        make_column_transformer(
            (SimpleImputer(), numbers),
            (make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")), text),
        ),
        model,
    )
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    pipeline.fit(X_train, y_train)
    proba = pipeline.predict_proba(X_test) if table.task == "classification" else None
    classes = list(pipeline.classes_) if table.task == "classification" else None
    return table.task, y_test.to_numpy(), Scored(pipeline.predict(X_test), proba), classes


@pytest.mark.parametrize(
    ("table", "metrics"), [("hmda", BINARY), ("penguins", MULTICLASS), ("cps1985", ["rmse", "mae", "r2", "mape"])]
)
def test_resampled_metrics_are_scikit_learns_on_the_resampled_rows(table, metrics):
    from sklearn.linear_model import LinearRegression, LogisticRegression

    model = LinearRegression() if table == "cps1985" else LogisticRegression(max_iter=2000)
    task, y, scored, classes = _fitted(table, model)
    weights = np.vstack([np.ones(len(y)), _resampled(np.random.default_rng(0), len(y), 4)])
    for metric in metrics:
        computed = _Weighted(metric, task, y, classes)(scored, weights)
        for row, value in zip(weights, computed, strict=True):
            rows = np.repeat(np.arange(len(y)), row.astype(int))  # the resample as rows drawn
            proba = None if scored.proba is None else scored.proba[rows]
            expected = compute_metrics(task, y[rows], scored.predictions[rows], proba, classes=classes)[metric]
            assert value == pytest.approx(expected, abs=1e-9), (table, metric)


def _pair(seed: int, rows: int, new_signal: float, old_signal: float = 1.0) -> tuple[np.ndarray, Scored, Scored]:
    """Two classifiers' probabilities on the same rows: each a logistic of the label times its signal plus its own
    noise, and a noise both share (rows that are hard for one are hard for the other)."""
    rng = np.random.default_rng(seed)
    y = rng.random(rows) < 0.4
    shared = rng.normal(size=rows)

    def model(signal: float) -> Scored:
        logit = signal * (2 * y - 1) + shared + 0.7 * rng.normal(size=rows)
        p = 1 / (1 + np.exp(-logit))
        return Scored(np.where(p > 0.5, "yes", "no"), np.c_[1 - p, p])

    return np.where(y, "yes", "no"), model(new_signal), model(old_signal)


def _promotions(rows: int, new_signal: float, seeds: int = 100) -> tuple[float, float]:
    """The share of seeds whose gate promotes the new model, and the share the point estimate alone would."""
    gated = naive = 0
    for seed in range(seeds):
        y, new, old = _pair(seed, rows, new_signal)
        difference = paired_bootstrap("roc_auc", "classification", y, new, old, classes=["no", "yes"], seed=seed)
        gated += difference.beyond(0.0)
        naive += difference.improvement > 0
    return gated / seeds, naive / seeds


def test_the_gate_does_not_flip_on_noise_and_promotes_what_is_clearly_better():
    equal, equal_naive = _promotions(rows=500, new_signal=1.0)
    assert equal <= 0.06, equal  # two models of equal skill
    assert equal_naive >= 0.3, equal_naive  # what `new > champion` did: a coin flip
    better, _ = _promotions(rows=500, new_signal=1.6)
    assert better >= 0.95, better  # clearly better
    tiny, tiny_naive = _promotions(rows=200, new_signal=1.03)
    assert tiny <= 0.1 and tiny_naive > tiny, (tiny, tiny_naive)  # real, but too small to see in 200 rows

    # seeded: the same inputs give the same interval, another seed another draw
    y, new, old = _pair(7, 300, 1.2)
    first, again = (paired_bootstrap("roc_auc", "classification", y, new, old, seed=3) for _ in range(2))
    assert (first.low, first.high) == (again.low, again.high) and first.rows == 300 and first.resamples == 1000
    assert paired_bootstrap("roc_auc", "classification", y, new, old, seed=4).low != first.low


@pytest.mark.multiprocess
def test_the_gate_records_what_its_decision_rests_on(workdir, data_dir):
    shutil.copy(data_dir / "breast_cancer.csv", workdir / "cancer.csv")

    def train(*args: str) -> str:
        done = run_tabtrack("train", "cancer.csv", "--target", "target", "--register", "cancer", "--seed", "5",
                            "--cv", "0", *args, cwd=workdir)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    assert "gate: champion" in train("--model", "logistic_regression", "--gate")
    # a different model of about the same skill: within noise, so the champion stays
    out = train("--model", "random_forest", "--set", "model.params.n_estimators=50", "--gate")
    assert "gate: challenger: v2 does not beat champion v1 on roc_auc beyond noise" in out, out
    registry = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    tags = registry.get_model_version("cancer", "2").tags
    low, high = float(tags["gate.interval_low"]), float(tags["gate.interval_high"])
    assert low <= float(tags["gate.improvement"]) <= high and low <= 0 < high
    assert tags["gate.rows"] == "114" and tags["gate.resamples"] == "1000" and tags["gate.seed"] == "5"
    assert tags["gate.level"] == "0.95" and tags["gate.min_improvement"] == "0"
    assert "1,000 paired resamples of the same 114 held-out rows" in tags["gate.reason"]
    card = run_tabtrack("card", "cancer/2", "-o", "card.md", cwd=workdir)
    assert card.returncode == 0, card.stderr
    assert "beyond noise" in (workdir / "card.md").read_text() and "95% interval" in (workdir / "card.md").read_text()

    # a margin the improvement must clear: the same recipe again cannot
    out = train("--model", "logistic_regression", "--min-improvement", "0.01")
    assert "not above the margin 0.01" in out, out
    assert registry.get_model_version("cancer", "3").tags["gate.min_improvement"] == "0.01"
    assert str(registry.get_model_version_by_alias("cancer", "champion").version) == "1"
