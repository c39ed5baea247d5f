"""Issue 39 benchmark: what the champion gate's paired bootstrap costs on 10,000 held-out rows.

    python -m benchmarks.trust [--rows 10000] [--resamples 1000]

Two real models' answers (scikit-learn, fitted on generated rows: the timing depends on the rows and the metric,
not on the data), the gate's default metric for each task; the best of 3. Target: under 2 s each.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common import print_table


def answers(task: str, rows: int, classes: int = 2):
    from sklearn.datasets import make_classification, make_regression
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LinearRegression, LogisticRegression

    from tabtrack.evaluate.paired import Scored

    if task == "regression":
        X, y = make_regression(2 * rows, 20, noise=10, random_state=0)
        models = [LinearRegression(), HistGradientBoostingRegressor(max_iter=50)]
    else:
        X, y = make_classification(2 * rows, 20, n_informative=8, n_classes=classes, random_state=0)
        models = [LogisticRegression(max_iter=1000), HistGradientBoostingClassifier(max_iter=50)]
    scored = []
    for model in models:
        model.fit(X[:rows], y[:rows])
        proba = model.predict_proba(X[rows:]) if task == "classification" else None
        scored.append(Scored(model.predict(X[rows:]), proba))
    return y[rows:], scored


def main() -> None:
    from tabtrack.evaluate.paired import paired_bootstrap

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    table = []
    for label, task, classes, metric in (("binary", "classification", 2, "roc_auc"),
                                         ("3 classes", "classification", 3, "f1_macro"),
                                         ("3 classes", "classification", 3, "roc_auc"),
                                         ("regression", "regression", None, "rmse")):  # fmt: skip
        y, (new, old) = answers(task, args.rows, classes or 2)
        seconds = []
        for _ in range(3):
            started = time.perf_counter()
            difference = paired_bootstrap(metric, task, y, new, old, resamples=args.resamples)
            seconds.append(time.perf_counter() - started)
        best = min(seconds)
        print(f"{label} {metric}: improvement {difference.improvement:+.4f}, {difference.interval}")
        table.append((f"gate bootstrap, {label}, {metric}", f"{best:.2f} s", "< 2 s", "yes" if best < 2 else "NO"))
    print(f"{args.rows:,} held-out rows, {args.resamples:,} paired resamples, best of 3")
    print_table(table)


if __name__ == "__main__":
    main()
