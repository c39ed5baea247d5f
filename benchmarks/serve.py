"""Issue 6 benchmark: single-row requests at concurrency 8 against `tabtrack serve`, with
`mlflow models serve` on the same model as the reference, measured in the same run.

    python -m benchmarks.serve [--requests 10000] [--concurrency 8] [--client wrk|python] [--seconds 20]
                               [--model hist_gradient_boosting|random_forest|...]

The client is `wrk` (Debian's `wrk` package: C, one thread, so it leaves the server the cores) when it is
installed, else a Python thread pool, which on a 2-core box competes with the server for CPU.

Prints p50/p99 latency and requests/s for each. Targets: tabtrack p99 < 50 ms, throughput >= reference.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import bundled_csv, free_port, print_table, wait_http


def load_test(port: int, path: str, bodies: list[bytes], concurrency: int) -> tuple[list[float], float, int]:
    """Each worker keeps one connection open and sends its share of requests back to back."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    shares = [bodies[i::concurrency] for i in range(concurrency)]

    def worker(share: list[bytes]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        local = []
        for body in share:
            start = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException) as exc:
                print(f"request failed: {exc!r}", file=sys.stderr)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                ok = False
            local.append(time.perf_counter() - start)
            if not ok:
                with lock:
                    errors[0] += 1
        conn.close()
        with lock:
            latencies.extend(local)

    threads = [threading.Thread(target=worker, args=(share,)) for share in shares]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - start, errors[0]


def wrk_test(port: int, path: str, body: bytes, concurrency: int, seconds: int) -> tuple[float, float, float, int]:
    """(p50 ms, p99 ms, requests/s, non-2xx responses) from one wrk run with `concurrency` connections."""
    import re
    import shutil

    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(body.decode())}\n"
        )
    done = subprocess.run(
        [shutil.which("wrk"), "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", script.name,
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    os.unlink(script.name)
    out = done.stdout

    def millis(label: str) -> float:
        value, unit = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    print(f"  {path}: {total.group(1) if total else '?'} requests in {seconds} s")
    return millis("50%"), millis("99%"), rps, int(errors.group(1)) if errors else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--client", choices=["wrk", "python"], default=None, help="default: wrk when installed")
    parser.add_argument(
        "--seconds", type=int, default=35, help="wrk: duration of each measurement (>= 10,000 requests)"
    )
    parser.add_argument("--workers", type=int, default=1, help="server processes for both servers")
    parser.add_argument("--model", default="hist_gradient_boosting", help="the family trained and served")
    args = parser.parse_args()
    import shutil

    client = args.client or ("wrk" if shutil.which("wrk") else "python")

    import pandas as pd

    import tabtrack

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        csv = bundled_csv("breast_cancer", work)
        uri = f"sqlite:///{work / 'mlflow.db'}"
        result = tabtrack.train(csv, target="target", model=args.model, tracking_uri=uri)
        rows = pd.read_csv(csv).drop(columns=["target"]).to_dict("records")
        ours = [json.dumps({"records": [rows[i % len(rows)]]}).encode() for i in range(args.requests)]
        theirs = [
            json.dumps({"dataframe_split": pd.DataFrame([rows[i % len(rows)]]).to_dict("split")}).encode()
            for i in range(args.requests)
        ]
        # the venv's bin first: mlflow models serve starts `uvicorn` by name
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": uri,
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        }
        model_uri = f"runs:/{result.run_id}/model"
        table = []
        for label, command, path, health, bodies in (
            (
                "tabtrack serve",
                [sys.executable, "-m", "tabtrack", "serve", model_uri, "--workers", str(args.workers)],
                "/predict",
                "/health",
                ours,
            ),
            (
                "mlflow models serve",
                [
                    sys.executable,
                    "-m",
                    "mlflow",
                    "models",
                    "serve",
                    "-m",
                    model_uri,
                    "--env-manager",
                    "local",
                    "--workers",
                    str(args.workers),
                ],
                "/invocations",
                "/ping",
                theirs,
            ),
        ):
            port = free_port()
            proc = subprocess.Popen(
                [*command, "--port", str(port)],
                cwd=work,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                wait_http(f"http://127.0.0.1:{port}{health}", proc)
                load_test(port, path, bodies[:200], args.concurrency)  # warm-up
                if client == "wrk":
                    table.append((label, *wrk_test(port, path, bodies[0], args.concurrency, args.seconds)))
                    continue
                latencies, seconds, errors = load_test(port, path, bodies, args.concurrency)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            latencies.sort()
            p50 = statistics.median(latencies) * 1000
            p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000
            table.append((label, p50, p99, len(latencies) / seconds, errors))

    amount = f"{args.seconds} s per server (wrk)" if client == "wrk" else f"{args.requests:,} requests (Python client)"
    print(f"single-row requests, {amount}, concurrency {args.concurrency}, {args.model} on breast_cancer")
    for label, p50, p99, rps, errors in table:
        print(f"{label:>20}: p50 {p50:.1f} ms, p99 {p99:.1f} ms, {rps:.0f} req/s, {errors} errors")
    ours_row, ref_row = table
    print_table(
        [
            ("tabtrack serve p99", f"{ours_row[2]:.1f} ms", "< 50 ms", "yes" if ours_row[2] < 50 else "NO"),
            (
                "throughput vs mlflow models serve",
                f"{ours_row[3] / ref_row[3]:.2f}x",
                ">= 1.0x",
                "yes" if ours_row[3] >= ref_row[3] else "NO",
            ),
        ]
    )


if __name__ == "__main__":
    main()
