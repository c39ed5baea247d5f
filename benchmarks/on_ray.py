"""Issue 26 benchmark: what Ray costs on one 2-core machine (it cannot show scale here, only its price).

    python -m benchmarks.on_ray [--repeats 1] [--rows 20000]

1. `compare` of 4 families with `--ray` (a local 2-CPU Ray started by the command itself, one CPU and one
   model thread per task) / the same `compare` without Ray (families with their default threads).
                                                                                          target <= 1.15x
2. 16 `tune` trials with `--ray` / `tune --jobs 2` (two tune-worker processes on the study).
                                                                                          target <= 1.10x
Whole commands, wall time, fresh processes, the embedded SQLite store; interleaved when repeated.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.common import generated_classification, median, print_table, tabtrack_cmd, time_command

FAMILIES = "logistic_regression,random_forest,hist_gradient_boosting,xgboost"
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--trials", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = generated_classification(work / "data.csv", rows=args.rows, features=8)
        compare = tabtrack_cmd("compare", str(data), "--target", "y", "--models", FAMILIES, "--cv", "3")
        tune = tabtrack_cmd(
            "tune", str(data), "--target", "y", "--model", "random_forest", "--trials", str(args.trials), "--cv", "3"
        )
        time_command([*compare, "--no-track"], cwd=work, repeats=1)  # warm-up: first imports, disk cache
        times: dict[str, list[float]] = {k: [] for k in ("compare", "compare_ray", "tune_jobs", "tune_ray")}
        for index in range(args.repeats):
            times["compare"] += time_command(compare, cwd=work, repeats=1)
            times["compare_ray"] += time_command([*compare, "--ray"], cwd=work, repeats=1, env=RAY_ENV)
            times["tune_jobs"] += time_command(
                [*tune, "--jobs", "2", "--study-name", f"jobs{index}"], cwd=work, repeats=1
            )
            times["tune_ray"] += time_command(
                [*tune, "--study-name", f"ray{index}", "--ray"], cwd=work, repeats=1, env=RAY_ENV
            )
    m = {k: median(v) for k, v in times.items()}
    print(
        f"compare of {FAMILIES} ({args.rows:,} x 8, 3-fold CV): {m['compare']:.1f} s, with --ray {m['compare_ray']:.1f} s; "
        f"tune {args.trials} trials: --jobs 2 {m['tune_jobs']:.1f} s, --ray {m['tune_ray']:.1f} s"
    )
    compare_ratio, tune_ratio = m["compare_ray"] / m["compare"], m["tune_ray"] / m["tune_jobs"]
    print_table(
        [
            ("compare 4 families: --ray / without", f"{compare_ratio:.2f}x", "<= 1.15x", _ok(compare_ratio <= 1.15)),
            (f"tune {args.trials} trials: --ray / --jobs 2", f"{tune_ratio:.2f}x", "<= 1.10x", _ok(tune_ratio <= 1.10)),
        ]
    )


def _ok(passed: bool) -> str:
    return "yes" if passed else "NO"


if __name__ == "__main__":
    main()
