"""Issues 38 and 40 benchmarks: what the prediction log and a shadow challenger cost `tabtrack serve`, and how fast
`monitor` reads a big log.

    python -m benchmarks.monitoring [--only serve|monitor] [--requests 6000] [--rounds 2] [--rows 1000000]

serve: the same model served with the prediction log off, on, and on with a second model of the same family in
shadow (`--shadow`), single-row requests at concurrency 8 (a Python client: threads on one connection each),
alternated for `--rounds` rounds; the median of each. Targets: p99 with the log <= 1.10x without, throughput
>= 0.90x (issue 38); p99 with the log and the shadow <= 1.20x plain (issue 40).

monitor: `--rows` logged rows x 20 input columns (written as a running server writes them: files of 5,000 rows)
against a model trained on 20 columns; `tabtrack.monitor` over all of them (reading, profiling, the page, the
MLflow run) against `pandas.read_parquet` of the same files, alternated 5 times, the medians. Target: <= 2x.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import free_port, print_table, wait_http
from benchmarks.serve import load_test

FEATURES = 20
MONITOR_ROUNDS = 5


def generated(rows: int, seed: int) -> pd.DataFrame:
    """16 numeric columns, 4 text ones (one with gaps), a binary target."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, 16)), columns=[f"x{i}" for i in range(16)])
    for i in range(4):
        frame[f"c{i}"] = rng.choice([f"v{j}" for j in range(3 + 4 * i)], rows)
    frame.loc[rng.random(rows) < 0.05, "c0"] = None
    frame["y"] = np.where(frame["x0"] + frame["x1"] + (frame["c1"] == "v2") + rng.normal(size=rows) > 0, "yes", "no")
    return frame


def trained(work: Path, model: str) -> str:
    import tabtrack

    data = work / "train.csv"
    generated(3000, 0).to_csv(data, index=False)
    result = tabtrack.train(data, target="y", model=model, cv=0, tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    return f"runs:/{result.run_id}/model"


def serve_with_and_without_the_log(
    work: Path, model_uri: str, requests: int, rounds: int, shadow_uri: str
) -> dict[str, list]:
    rows = generated(500, 1).drop(columns=["y"])
    bodies = [json.dumps({"records": json.loads(rows.iloc[[i % 500]].to_json(orient="records"))}).encode()
              for i in range(requests)]  # fmt: skip
    measured: dict[str, list] = {"on": [], "off": [], "shadow": []}
    for _ in range(rounds):
        for mode in ("off", "on", "shadow"):
            port = free_port()
            log = ["--log-predictions", "off"] if mode == "off" else ["--log-predictions", str(work / "log")]
            log += ["--shadow", shadow_uri] if mode == "shadow" else []
            server = subprocess.Popen(
                [sys.executable, "-m", "tabtrack", "serve", model_uri, "--port", str(port), *log], cwd=work,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
            try:
                wait_http(f"http://127.0.0.1:{port}/health", server)
                load_test(port, "/predict", bodies[:300], 8)  # warm-up
                latencies, seconds, errors = load_test(port, "/predict", bodies, 8)
            finally:
                server.terminate()
                server.wait(timeout=60)
            latencies.sort()
            measured[mode].append(
                (latencies[int(0.99 * (len(latencies) - 1))] * 1000, len(latencies) / seconds, errors)
            )
    return measured


def monitor_a_big_log(work: Path, model_uri: str, rows: int) -> tuple[float, float, int]:
    import mlflow

    import tabtrack
    from tabtrack.serving.model import load
    from tabtrack.serving.prediction_log import BATCH_ROWS, PredictionLog

    model = load(model_uri)
    location = str(work / "big-log")
    log = PredictionLog(location, model=model.metadata, columns=model.columns, classes=model.classes)
    frame = generated(rows, 2).drop(columns=["y"])
    predictions, proba = model.score(frame)
    for start in range(0, rows, BATCH_ROWS):  # as a server writes them: a file per batch
        end = start + BATCH_ROWS
        log.record(frame.iloc[start:end], predictions[start:end], proba[start:end], request_id=f"b{start}")
    log.close()
    del frame, predictions, proba
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])

    # alternated, the median of each: on a shared machine one reading of a second can be off by 2x
    pandas_seconds, monitor_seconds = [], []
    for _ in range(MONITOR_ROUNDS):
        started = time.perf_counter()
        read = pd.read_parquet(location)
        pandas_seconds.append(time.perf_counter() - started)
        assert len(read) == rows, len(read)
        del read
        started = time.perf_counter()
        report = tabtrack.monitor(model_uri, since="1d", log_location=location)
        monitor_seconds.append(time.perf_counter() - started)
    print("monitor runs:", ", ".join(f"{s:.2f}" for s in monitor_seconds), "s; pandas reads:",
          ", ".join(f"{s:.2f}" for s in pandas_seconds), "s")  # fmt: skip
    return statistics.median(monitor_seconds), statistics.median(pandas_seconds), report.rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["serve", "monitor"], default=None)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--model", default="hist_gradient_boosting")
    args = parser.parse_args()
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
        model_uri = trained(work, args.model)
        if args.only in (None, "serve"):
            shadow_uri = trained(work, args.model)  # a second fit: a challenger as costly as the champion
            measured = serve_with_and_without_the_log(work, model_uri, args.requests, args.rounds, shadow_uri)
            for mode, results in measured.items():
                for p99, rps, errors in results:
                    print(f"log {mode:>3}: p99 {p99:.1f} ms, {rps:.0f} req/s, {errors} errors")
            p99 = {mode: statistics.median(r[0] for r in results) for mode, results in measured.items()}
            rps = {mode: statistics.median(r[1] for r in results) for mode, results in measured.items()}
            table += [
                ("serve p99, log on / off", f"{p99['on'] / p99['off']:.2f}x", "<= 1.10x",
                 "yes" if p99["on"] <= 1.10 * p99["off"] else "NO"),
                ("serve throughput, log on / off", f"{rps['on'] / rps['off']:.2f}x", ">= 0.90x",
                 "yes" if rps["on"] >= 0.90 * rps["off"] else "NO"),
                ("serve p99, log and shadow / plain", f"{p99['shadow'] / p99['off']:.2f}x", "<= 1.20x",
                 "yes" if p99["shadow"] <= 1.20 * p99["off"] else "NO"),
                ("serve throughput, log and shadow / plain", f"{rps['shadow'] / rps['off']:.2f}x", "(printed)", ""),
            ]  # fmt: skip
        if args.only in (None, "monitor"):
            monitor_seconds, pandas_seconds, rows = monitor_a_big_log(work, model_uri, args.rows)
            print(f"monitor over {rows:,} rows x {FEATURES} columns: {monitor_seconds:.2f} s; "
                  f"pandas.read_parquet: {pandas_seconds:.2f} s")  # fmt: skip
            ratio = monitor_seconds / pandas_seconds
            table.append(("monitor / pandas read, 1M rows", f"{ratio:.2f}x", "<= 2x", "yes" if ratio <= 2 else "NO"))
    print(f"{args.model}, single-row requests, concurrency 8, {args.requests:,} requests x {args.rounds} rounds")
    print_table(table)


if __name__ == "__main__":
    main()
