"""The performance suite: one table of ratios, each measured side by side in this run, fresh processes.

    python -m benchmarks [--repeats 5] [--skip fixed,realistic,scale,throughput,startup,explain]

1. Fixed cost, RF 20,000 x 8: tabtrack's overhead (tracked - `--no-track`) / the overhead of MLflow's
   own tools on the same work (`mlflow.sklearn.autolog()` + `mlflow.models.evaluate`, SHAP off,
   benchmarks/workloads.py) over bare scikit-learn.                                      target <= 0.35
2. Realistic run: hist_gradient_boosting, 600,000 x 20, 5-fold CV, tracked / `--no-track`.   target <= 1.25x
3. Scale: hist_gradient_boosting, 1,000,000 x 30, tracked / bare scikit-learn in time,        target <= 1.35x
   and tracked peak RSS / bare scikit-learn's own peak RSS.                                  target <= 1.15x
4. 1,000 epochs x 4 metrics to an `mlflow server` on 127.0.0.1: one log_metric call per value vs
   tabtrack's buffered logging (median of --repeats pairs).                                  target >= 50x
5. `tabtrack --help` and `--version`.                                                        target <= 0.3 s
6. `--explain` (SHAP) on a 20,000 x 8 run: extra time / the untracked run's time,
   hist_gradient_boosting (target <= 0.5x) and the default random forest (printed, with its row count).
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    big_parquet,
    free_port,
    generated_classification,
    median,
    print_table,
    tabtrack_cmd,
    time_command,
    timed_peak,
    wait_http,
)

Row = tuple[str, str, str, str]
REPO = Path(__file__).resolve().parent.parent
WORKLOAD_ENV = {"PYTHONPATH": str(REPO)}


def _ok(passed: bool) -> str:
    return "yes" if passed else "NO"


def fixed_cost(work: Path, repeats: int) -> list[Row]:
    """What the standard costs on a short run, against what MLflow's own tools cost for the same record."""
    data = generated_classification(work / "rf20k.csv", rows=20_000, features=8)
    train = tabtrack_cmd("train", str(data), "--target", "y", "--model", "random_forest")
    workload = [sys.executable, "-m", "benchmarks.workloads"]
    # Warm-ups: SQLite schema creation and first-import disk reads are not charged to the first timed run.
    time_command(train, cwd=work, repeats=1)
    time_command([*workload, "autolog", str(data)], cwd=work, repeats=1, env=WORKLOAD_ENV)
    timings: dict[str, list[float]] = {k: [] for k in ("tracked", "untracked", "bare", "autolog")}
    for _ in range(repeats):  # interleaved, so drift in machine load hits all alike
        timings["untracked"] += time_command([*train, "--no-track"], cwd=work, repeats=1)
        timings["tracked"] += time_command(train, cwd=work, repeats=1)
        timings["bare"] += time_command([*workload, "bare", str(data)], cwd=work, repeats=1, env=WORKLOAD_ENV)
        timings["autolog"] += time_command([*workload, "autolog", str(data)], cwd=work, repeats=1, env=WORKLOAD_ENV)
    m = {k: median(v) for k, v in timings.items()}
    ours, theirs = m["tracked"] - m["untracked"], m["autolog"] - m["bare"]
    print(
        f"[1] RF 20k x 8, median of {repeats}: tabtrack tracked {m['tracked']:.2f} s, --no-track {m['untracked']:.2f} s; "
        f"autolog+evaluate {m['autolog']:.2f} s, bare scikit-learn {m['bare']:.2f} s"
    )
    return [
        (
            "1. fixed cost: tabtrack overhead / autolog+evaluate overhead (RF 20k x 8)",
            f"{ours / theirs:.2f} (+{ours:.1f} s / +{theirs:.1f} s)",
            "<= 0.35",
            _ok(ours / theirs <= 0.35),
        ),
        ("   ref: tracked / untracked", f"{m['tracked'] / m['untracked']:.2f}x", "", ""),
    ]


def realistic(work: Path, rows: int, repeats: int) -> list[Row]:
    """A run the size teams train every day: HGB with 5-fold CV, each fold a tracked child run."""
    data = work / "realistic.parquet"
    big_parquet(data, rows=rows, features=20)
    train = tabtrack_cmd("train", str(data), "--target", "y", "--model", "hist_gradient_boosting", "--cv", "5")
    tracked, untracked, tracked_mem, untracked_mem = [], [], [], []
    for _ in range(repeats):
        seconds, peak = timed_peak([*train, "--no-track"], cwd=work)
        untracked.append(seconds)
        untracked_mem.append(peak)
        seconds, peak = timed_peak(train, cwd=work)
        tracked.append(seconds)
        tracked_mem.append(peak)
    ratio = median(tracked) / median(untracked)
    print(
        f"[2] HGB {rows:,} x 20, 5-fold CV, median of {repeats}: tracked {median(tracked):.1f} s, "
        f"--no-track {median(untracked):.1f} s; peak RSS tracked {max(tracked_mem):.0f} MiB, "
        f"--no-track {max(untracked_mem):.0f} MiB"
    )
    return [
        (
            f"2. realistic: tracked / --no-track, HGB {rows:,} x 20, 5-fold CV",
            f"{ratio:.2f}x",
            "<= 1.25x",
            _ok(ratio <= 1.25),
        ),
        ("   ref: peak RSS tracked / --no-track", f"{max(tracked_mem) / max(untracked_mem):.2f}x", "", ""),
    ]


def scale(work: Path, rows: int, repeats: int) -> list[Row]:
    data = work / "big.parquet"
    dataset_mb = big_parquet(data, rows=rows)  # in another process: see big_parquet
    train = tabtrack_cmd("train", str(data), "--target", "y", "--model", "hist_gradient_boosting")
    bare = [sys.executable, "-m", "benchmarks.workloads", "bare", str(data), "hist_gradient_boosting"]
    tracked_t, bare_t, tracked_mem, bare_mem = [], [], [], []
    for _ in range(repeats):
        seconds, peak = timed_peak(bare, cwd=work, env=WORKLOAD_ENV)
        bare_t.append(seconds)
        bare_mem.append(peak)
        seconds, peak = timed_peak(train, cwd=work)
        tracked_t.append(seconds)
        tracked_mem.append(peak)
    ratio = median(tracked_t) / median(bare_t)
    memory = max(tracked_mem) / max(bare_mem)
    print(
        f"[3] HGB {rows:,} x 30, median of {repeats}: tracked {median(tracked_t):.1f} s, bare {median(bare_t):.1f} s; "
        f"peak RSS tracked {max(tracked_mem):.0f} MiB, bare {max(bare_mem):.0f} MiB, dataset {dataset_mb:.0f} MiB"
    )
    return [
        (f"3a. scale: tracked / bare scikit-learn, HGB {rows:,} x 30", f"{ratio:.2f}x", "<= 1.35x", _ok(ratio <= 1.35)),
        (
            "3b. scale: peak RSS tracked / bare scikit-learn",
            f"{memory:.2f}x ({max(tracked_mem):.0f} / {max(bare_mem):.0f} MiB)",
            "<= 1.15x",
            _ok(memory <= 1.15),
        ),
    ]


def throughput(work: Path, repeats: int, epochs: int = 1000, metrics: int = 4) -> list[Row]:
    """Both loggers write the same values to the same server; only the call pattern differs. Each repeat
    is one fresh run per pattern, one after the other, so drift in the machine's disk and CPU speed (the
    per-value pattern waits on one SQLite commit per call) hits both alike."""
    import mlflow
    from mlflow import MlflowClient

    sys.path.insert(0, str(REPO / "src"))
    from tabtrack.commands.ui import ui_env
    from tabtrack.tracking.mlflow_tracker import MlflowTracker

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{work / 'server.db'}", "--workers", "1"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env=ui_env(),  # as `tabtrack ui` starts it: no GenAI job-runner processes
    )  # fmt: skip
    per_call: list[float] = []
    buffered: list[float] = []
    try:
        uri = f"http://127.0.0.1:{port}"
        wait_http(f"{uri}/health", server)
        names = [f"m{i}" for i in range(metrics)]
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("throughput")
        tracker, reader = MlflowTracker(uri), MlflowClient(uri)
        for _ in range(repeats):
            with mlflow.start_run(run_name="per_value"):
                start = time.perf_counter()
                for epoch in range(epochs):
                    for name in names:
                        mlflow.log_metric(name, epoch * 0.001, step=epoch)
                per_call.append(time.perf_counter() - start)
            with tracker.run(experiment="throughput", run_name="buffered", tags={}) as run:
                start = time.perf_counter()
                for epoch in range(epochs):
                    run.log_metrics({name: epoch * 0.001 for name in names}, step=epoch)
                run.flush()
                buffered.append(time.perf_counter() - start)
            history = reader.get_metric_history(run.run_id, "m0")
            assert len(history) == epochs, len(history)  # every value arrived
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    ratio = median(per_call) / median(buffered)
    print(
        f"[4] {epochs} epochs x {metrics} metrics, median of {repeats}: log_metric per value {median(per_call):.2f} s "
        f"({min(per_call):.1f}-{max(per_call):.1f}), buffered {median(buffered):.3f} s "
        f"({min(buffered):.2f}-{max(buffered):.2f})"
    )
    return [("4. buffered vs per-value logging to a server", f"{ratio:.0f}x faster", ">= 50x", _ok(ratio >= 50))]


def startup(work: Path, repeats: int) -> list[Row]:
    help_t = median(time_command(tabtrack_cmd("--help"), cwd=work, repeats=repeats))
    version_t = median(time_command(tabtrack_cmd("--version"), cwd=work, repeats=repeats))
    return [
        ("5a. tabtrack --help", f"{help_t:.3f} s", "<= 0.3 s", _ok(help_t <= 0.3)),
        ("5b. tabtrack --version", f"{version_t:.3f} s", "<= 0.3 s", _ok(version_t <= 0.3)),
    ]


def explain_cost(work: Path, repeats: int) -> list[Row]:
    """What `--explain` adds to a tracked run, against the run's own (untracked) time."""
    data = generated_classification(work / "explain20k.csv", rows=20_000, features=8)
    rows: list[Row] = []
    for model, target in (("hist_gradient_boosting", 0.5), ("random_forest", None)):
        train = tabtrack_cmd("train", str(data), "--target", "y", "--model", model)
        time_command(train, cwd=work, repeats=1)  # warm-up
        timings: dict[str, list[float]] = {"untracked": [], "tracked": [], "explained": []}
        for _ in range(repeats):
            timings["untracked"] += time_command([*train, "--no-track"], cwd=work, repeats=1)
            timings["tracked"] += time_command(train, cwd=work, repeats=1)
            timings["explained"] += time_command([*train, "--explain"], cwd=work, repeats=1)
        m = {k: median(v) for k, v in timings.items()}
        extra = m["explained"] - m["tracked"]
        explained_rows = _last_param(work, "explain20k", "shap_rows")
        print(
            f"[6] {model} 20k x 8, median of {repeats}: --no-track {m['untracked']:.2f} s, tracked {m['tracked']:.2f} s, "
            f"tracked --explain {m['explained']:.2f} s ({explained_rows} rows explained)"
        )
        rows.append(
            (
                f"6. --explain extra / untracked run, {model} 20k x 8 ({explained_rows} rows)",
                f"{extra / m['untracked']:.2f}x (+{extra:.1f} s / {m['untracked']:.1f} s)",
                f"<= {target}x" if target else "(printed)",
                _ok(extra / m["untracked"] <= target) if target else "",
            )
        )
    return rows


def _last_param(work: Path, experiment: str, key: str) -> str:
    """A param of the latest run in `experiment` that has it, from the store `train` wrote in `work`."""
    code = (
        "import mlflow; c = mlflow.MlflowClient('sqlite:///mlflow.db'); "
        f"e = c.get_experiment_by_name({experiment!r}); "
        "runs = c.search_runs([e.experiment_id], order_by=['attributes.start_time DESC']); "
        f"print(next((r.data.params[{key!r}] for r in runs if {key!r} in r.data.params), '?'))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True, check=False)
    return done.stdout.strip() or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scale-repeats", type=int, default=3)
    parser.add_argument("--realistic-rows", type=int, default=600_000)
    parser.add_argument("--scale-rows", type=int, default=1_000_000)
    parser.add_argument(
        "--skip", default="", help="comma-separated: fixed, realistic, scale, throughput, startup, explain"
    )
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    # tabtrack byte-compiled, as an install leaves it: from an editable install on a machine that sets
    # PYTHONDONTWRITEBYTECODE, every timed run would otherwise compile its modules again (~0.8 s).
    # Found, not imported: this process stays small (see timed_peak).
    compileall.compile_dir(importlib.util.find_spec("tabtrack").submodule_search_locations[0], quiet=1)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # Peak RSS is read with wait4, which counts the peak this process had when it started the child
        # (exec keeps it): the memory-measuring parts run before throughput imports MLflow here.
        if "fixed" not in skip:
            rows += fixed_cost(work, args.repeats)
        if "realistic" not in skip:
            rows += realistic(work, args.realistic_rows, args.scale_repeats)
        if "scale" not in skip:
            rows += scale(work, args.scale_rows, args.scale_repeats)
        if "throughput" not in skip:
            rows += throughput(work, args.repeats)
        if "startup" not in skip:
            rows += startup(work, args.repeats)
        if "explain" not in skip:
            rows += explain_cost(work, min(args.repeats, 3))
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
