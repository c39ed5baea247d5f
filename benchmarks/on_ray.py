"""Issue 26 benchmark: what Ray costs on one 2-core machine (it cannot show scale here, only its price).

    python -m benchmarks.on_ray [--repeats 1] [--rows 20000] [--trials 16] [--skip tune]

1. `compare` of 4 families on a local 2-CPU Ray (one CPU and one model thread per task) / the same
   `compare` without Ray (families with their default threads), two ways:                target <= 1.15x
   a. `--ray auto`: a Ray already running on this machine (`ray start --head --num-cpus 2`), as a team
      runs its cluster;
   b. a bare `--ray`: the command starts a local Ray and stops it (Ray's start-up included).
2. 16 `tune` trials with a bare `--ray` / `tune --jobs 2` (two tune-worker processes on the study).
                                                                                          target <= 1.10x
Whole commands, wall time, fresh processes, the embedded SQLite store; interleaved when repeated.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
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
    parser.add_argument("--skip", default="", help="comma-separated: compare, tune")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    times: dict[str, list[float]] = {k: [] for k in ("compare", "compare_auto", "compare_ray", "tune_jobs", "tune_ray")}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = generated_classification(work / "data.csv", rows=args.rows, features=8)
        compare = tabtrack_cmd("compare", str(data), "--target", "y", "--models", FAMILIES, "--cv", "3")
        tune = tabtrack_cmd(
            "tune", str(data), "--target", "y", "--model", "random_forest", "--trials", str(args.trials), "--cv", "3"
        )
        time_command([*compare, "--no-track"], cwd=work, repeats=1)  # warm-up: first imports, disk cache
        for index in range(args.repeats):
            if "compare" not in skip:
                times["compare"] += time_command(compare, cwd=work, repeats=1)
                with _running_ray(work):
                    times["compare_auto"] += time_command([*compare, "--ray", "auto"], cwd=work, repeats=1, env=RAY_ENV)
                times["compare_ray"] += time_command([*compare, "--ray"], cwd=work, repeats=1, env=RAY_ENV)
            if "tune" not in skip:
                times["tune_jobs"] += time_command(
                    [*tune, "--jobs", "2", "--study-name", f"jobs{index}"], cwd=work, repeats=1
                )
                times["tune_ray"] += time_command(
                    [*tune, "--study-name", f"ray{index}", "--ray"], cwd=work, repeats=1, env=RAY_ENV
                )
    m = {k: median(v) for k, v in times.items() if v}
    rows = []
    if "compare" not in skip:
        print(
            f"compare of {FAMILIES} ({args.rows:,} x 8, 3-fold CV): {m['compare']:.1f} s; "
            f"--ray auto {m['compare_auto']:.1f} s; bare --ray {m['compare_ray']:.1f} s"
        )
        for key, label in (("compare_auto", "--ray auto (running Ray)"), ("compare_ray", "bare --ray (starts Ray)")):
            ratio = m[key] / m["compare"]
            rows.append((f"compare 4 families: {label} / without", f"{ratio:.2f}x", "<= 1.15x", _ok(ratio <= 1.15)))
    if "tune" not in skip:
        print(f"tune {args.trials} trials: --jobs 2 {m['tune_jobs']:.1f} s, --ray {m['tune_ray']:.1f} s")
        ratio = m["tune_ray"] / m["tune_jobs"]
        rows.append((f"tune {args.trials} trials: --ray / --jobs 2", f"{ratio:.2f}x", "<= 1.10x", _ok(ratio <= 1.10)))
    print_table(rows)


@contextlib.contextmanager
def _running_ray(work: Path):
    """A local 2-CPU Ray started with `ray start --head` (what `--ray auto` joins), stopped after."""
    ray_cli = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, **RAY_ENV}
    start = [ray_cli, "start", "--head", "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats"]
    subprocess.run(start, cwd=work, env=env, check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run([ray_cli, "stop", "--force"], cwd=work, env=env, capture_output=True)


def _ok(passed: bool) -> str:
    return "yes" if passed else "NO"


if __name__ == "__main__":
    main()
