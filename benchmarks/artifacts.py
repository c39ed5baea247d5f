"""Issue 3 benchmark: time spent producing all evaluation artifacts (plots, reports, importance)
for a 20,000-row run, printed next to the training time. Target: artifacts <= 1 s.

    python -m benchmarks.artifacts [--repeats 5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import generated_classification, median, print_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import numpy as np
    import pandas as pd

    import tabtrack
    from tabtrack.evaluate.evidence import (
        draw_model_plots,
        draw_prediction_plots,
        model_evidence,
        prediction_evidence,
        prediction_plot_data,
    )

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = generated_classification(Path(tmp) / "c20k.csv", rows=20_000, features=8)
        frame = pd.read_csv(data)
        frame["y"] = frame["y"] * 50.0 + np.random.default_rng(0).normal(0, 5, len(frame))  # a regression twin
        reg = Path(tmp) / "r20k.csv"
        frame.to_csv(reg, index=False)
        for label, path, task, model in (
            ("classification, random_forest", data, "classification", "random_forest"),
            ("classification, hist_gradient_boosting", data, "classification", "hist_gradient_boosting"),
            ("regression, hist_gradient_boosting", reg, "regression", "hist_gradient_boosting"),
        ):
            artifacts, totals = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                result = tabtrack.train(path, target="y", model=model, task=task, track=False)
                totals.append(time.perf_counter() - start)
                pipeline, X_test, y_test = result.pipeline, result.X_test, result.y_test
                proba = pipeline.predict_proba(X_test) if task == "classification" else None
                start = time.perf_counter()
                y_pred = pipeline.predict(X_test)
                prediction_evidence(
                    y_test, y_pred, proba, task=task, classes=result.classes, thresholds=[0.3, 0.5, 0.7]
                )
                evidence = model_evidence(pipeline, X_test, y_test, model_name=model, random_state=42)
                draw_prediction_plots(
                    prediction_plot_data(y_test, y_pred, proba, task=task, classes=result.classes, model_name=model)
                )
                draw_model_plots(evidence.model_plots)
                artifacts.append(time.perf_counter() - start)
            a = median(artifacts)
            rows.append(
                (
                    f"artifacts, {label} (untracked train+eval {median(totals):.2f} s)",
                    f"{a:.2f} s",
                    "<= 1 s",
                    "yes" if a <= 1 else "NO",
                )
            )
    print(f"20,000 rows x 8 features, median of {args.repeats}")
    print_table(rows)


if __name__ == "__main__":
    main()
