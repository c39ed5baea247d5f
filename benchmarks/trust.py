"""Issue 39 benchmark: what the champion gate's paired bootstrap costs on 10,000 held-out rows, and what the
comparison page's intervals cost for 3 runs (every metric it recomputes, each run against the first).

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
    table += page_intervals(args.rows, args.resamples)
    print(f"{args.rows:,} held-out rows, {args.resamples:,} paired resamples, best of 3")
    print_table(table)


def page_intervals(rows: int, resamples: int) -> list[tuple[str, str, str, str]]:
    """The comparison page's intervals for 3 runs sharing `rows` test rows: runs #2 and #3 against #1 on every
    metric recomputed from the predictions, through the page's own code (pages/shared_rows.py)."""
    import numpy as np
    import pandas as pd

    from tabtrack.evaluate.paired import fast_metrics
    from tabtrack.pages.comparison_page import RunView
    from tabtrack.pages.shared_rows import against_first

    table = []
    for label, task, classes in (("binary", "classification", 2), ("regression", "regression", None)):
        y, scored = answers(task, rows, classes or 2)
        runs = []
        for index, answer in enumerate([*scored, scored[0]]):
            frame = pd.DataFrame({"row": np.arange(rows), "y_true": y, "y_pred": answer.predictions})
            if answer.proba is not None:
                frame = frame.assign(**{f"proba_{c}": answer.proba[:, c] for c in range(answer.proba.shape[1])})
            names = fast_metrics(task, classes or 0)
            metrics = {f"test_{name}": 0.0 for name in names}
            runs.append(RunView(f"{index:032d}", f"run{index}", {"task": task}, metrics, {}, predictions=frame))
        seconds = []
        for _ in range(3):
            started = time.perf_counter()
            against_first(runs, resamples=resamples)
            seconds.append(time.perf_counter() - started)
        best = min(seconds)
        table.append((f"page intervals, 3 runs, {label}, {len(names)} metrics", f"{best:.2f} s", "< 2 s",
                      "yes" if best < 2 else "NO"))  # fmt: skip
    return table


if __name__ == "__main__":
    main()
