"""After deployment: the prediction log `serve` and `predict` write, `tabtrack monitor` on it (a simulated month,
bad inputs), and `tabtrack retrain` through the gate. Console scripts and real servers, a real store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from scipy.stats import spearmanr

from conftest import TABTRACK, free_port, git, run_tabtrack, runs_of, wait_for_http
from real_tables import TABLES
from real_tables import write as write_table

REPO = Path(__file__).resolve().parents[1]
DROP = ("--set", "drop_columns=[rownames]")
SMALL = ("--set", "model.params.n_estimators=30")
LOG = Path(".tabtrack") / "predictions"


def _ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> str:
    assert done.returncode == 2, f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    lines = [line for line in done.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _champion(workdir: Path, table: str, target: str, name: str) -> tuple[Path, str]:
    """A real table trained with `tabtrack train --register NAME --gate` (so it is NAME's champion)."""
    raw = write_table(TABLES[table], workdir)
    done = _ok(run_tabtrack("train", raw, "--target", target, *DROP, *SMALL, "--register", name, "--gate", cwd=workdir))
    run_id = next(line.split()[2] for line in done.splitlines() if line.startswith("run id:"))
    return raw, run_id


class Server:
    """`tabtrack serve` as a user starts it, with the options given."""

    def __init__(self, workdir: Path, model: str, *options: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [TABTRACK, "serve", model, "--port", str(self.port), *options], cwd=workdir,
            env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        wait_for_http(f"http://127.0.0.1:{self.port}/health", self.proc, what="tabtrack serve")

    def predict(self, records: list[dict], request_id: str | None = None) -> tuple[int, dict, dict]:
        headers = {"Content-Type": "application/json", **({"X-Request-Id": request_id} if request_id else {})}
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/predict", data=json.dumps({"records": records}).encode(), headers=headers
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), json.loads(response.read())

    def health(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        output, _ = self.proc.communicate(timeout=60)
        return output


def _records(raw: Path, target: str, rows: int) -> list[dict]:
    frame = pd.read_csv(raw).drop(columns=[target, "rownames"]).head(rows)
    return json.loads(frame.to_json(orient="records"))  # gaps as JSON null


@pytest.mark.multiprocess
@pytest.mark.slow
def test_a_simulated_month_of_serving_and_monitoring(tmp_path):
    """benchmarks/month.py: 30 days through a running `tabtrack serve` (8 concurrent clients) and, on two days,
    `tabtrack predict`; `tabtrack.monitor` on each day's window of the log, in the script's own process."""
    out = tmp_path / "month"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.month", "--days", "30", "--predict-days", "2", "--out", str(out)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    month = json.loads((out / "month.json").read_text())
    days, threshold = month["days"], month["threshold"]
    assert [d["rows"] for d in days] == [1000] * 30 and not any(d["failures"] for d in days)

    for column in month["drifting"]:
        series = [d["psi"][column] for d in days]
        predicted, observed = month["predicted_crossing"][column], month["observed_crossing"][column]
        assert spearmanr(range(30), series).statistic > 0.9, series  # rises day by day
        assert series[0] < threshold and series[-1] > threshold
        assert 5 <= predicted <= 25 and abs(observed - predicted) <= 2, (column, observed, predicted, series)
    assert len(month["false_alarm_days"]) <= 1, month["false_alarm_days"]

    labelled = [d for d in days if d["day"] % 2 == 0]
    assert all(d["labelled_rows"] == 1000 for d in labelled)
    assert all(d["labelled_rows"] == 0 and d["accuracy"] is None for d in days if d["day"] % 2)
    early, late = np.mean([d["accuracy"] for d in labelled[:3]]), np.mean([d["accuracy"] for d in labelled[-3:]])
    assert late < early - 0.1, (early, late)

    # One run per day in the model's monitoring experiment: charted in the MLflow UI across the month.
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = runs_of(client, "monitoring-hmda")
    assert len(runs) == 30 and {r.data.tags["model.version"] for r in runs} == {str(month["model_version"])}
    assert all({"psi_pirat", "psi_lvrat", "max_psi", "rows"} <= set(r.data.metrics) for r in runs)
    last = max(runs, key=lambda r: r.info.start_time)
    assert last.data.tags["monitor.drifted"] == "true"
    assert {a.path for a in client.list_artifacts(last.info.run_id)} >= {"monitor.html", "monitoring"}

    # The console script on the first and the last day's windows: exit 0, then 1 with the drifted columns flagged.
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}"}
    first, final = days[0]["window"], days[-1]["window"]
    calm = run_tabtrack("monitor", "hmda@champion", "--since", first[0], "--until", first[1], "--no-track",
                        cwd=out, env=env)  # fmt: skip
    assert calm.returncode == 0, calm.stdout + calm.stderr
    drifted = run_tabtrack("monitor", "hmda@champion", "--since", final[0], "--until", final[1], "-o", "page.html",
                           cwd=out, env=env)  # fmt: skip
    assert drifted.returncode == 1, drifted.stdout + drifted.stderr
    flagged = [line.split("|")[1].strip() for line in drifted.stdout.splitlines() if line.startswith("| *")]
    assert {"* pirat", "* lvrat"} <= set(flagged), drifted.stdout
    assert "drift: pirat: PSI" in drifted.stderr
    page = (out / "page.html").read_text()
    assert "Monitoring hmda v" in page and page.count("<svg") >= 3
    drawn = page.split("<h2>Distributions")[1]
    assert drawn.index("aria-label='prediction'") < min(
        drawn.index("aria-label='pirat'"), drawn.index("aria-label='lvrat'")
    )


@pytest.mark.multiprocess
def test_serve_logs_each_request_off_the_request_path_and_flushes_on_sigterm(workdir):
    raw, run_id = _champion(workdir, "penguins", "species", "penguins")
    records = _records(raw, "species", 12)
    server = Server(workdir, "penguins@champion")
    for i in range(0, 12, 3):
        status, headers, body = server.predict(records[i : i + 3], request_id=f"client-{i}")
        assert status == 200 and body["request_id"] == headers["x-request-id"] == f"client-{i}"
    status, headers, body = server.predict(records[:1])  # no X-Request-Id: the server makes one
    assert len(body["request_id"]) == 32 and headers["x-request-id"] == body["request_id"]
    output = server.stop()  # at once: the writer's last batch is flushed on SIGTERM
    assert "prediction log: .tabtrack/predictions; --log-predictions off to stop it" in output

    from tabtrack.serving.log_reader import read_log

    logged = read_log(str(workdir / LOG))
    assert len(logged) == 13 and set(logged["model_run_id"]) == {run_id} and set(logged["model_version"]) == {"1"}
    mine = logged[logged["request_id"] == "client-3"].sort_values("row")
    assert mine["row"].tolist() == [0, 1, 2] and mine["island"].tolist() == [r["island"] for r in records[3:6]]
    assert set(logged["prediction"]) <= {"Adelie", "Chinstrap", "Gentoo"}
    assert np.allclose(logged[["proba_Adelie", "proba_Chinstrap", "proba_Gentoo"]].sum(axis=1), 1.0)
    days = [p.name for p in (workdir / LOG).iterdir()]
    assert days == [f"date={pd.Timestamp.now(tz='UTC'):%Y-%m-%d}"]

    # a sample of requests, whole requests at a time; and off
    sampled = Server(workdir, "penguins@champion", "--log-predictions", "sampled", "--log-sample", "0.5")
    for i in range(40):
        server_rows = records[i % 10 : i % 10 + 2]
        sampled.predict(server_rows, request_id=f"s-{i}")
    sampled.stop()
    kept = read_log(str(workdir / "sampled"))
    assert 5 < kept["request_id"].nunique() < 35 and (kept.groupby("request_id").size() == 2).all()
    off = Server(workdir, "penguins@champion", "--log-predictions", "off")
    assert off.health()["prediction_log"] is None
    assert "prediction log: off" in off.stop()


@pytest.mark.multiprocess
def test_an_unwritable_log_location_never_fails_a_request(workdir):
    raw, _ = _champion(workdir, "penguins", "species", "penguins")
    (workdir / "blocker").write_text("a file where the log's folder would go")
    server = Server(workdir, "penguins@champion", "--log-predictions", "blocker/predictions")
    records = _records(raw, "species", 5)
    for i in range(6):
        status, _, body = server.predict(records, request_id=f"r{i}")
        assert status == 200 and len(body["predictions"]) == 5
    deadline = time.time() + 30
    while server.health()["prediction_log"]["rows_dropped"] < 30 and time.time() < deadline:
        time.sleep(0.3)
    stats = server.health()["prediction_log"]
    assert stats["rows_dropped"] == 30 and stats["rows_logged"] == 0 and "blocker" in stats["error"]
    output = server.stop()
    assert output.count("prediction log: cannot write to blocker/predictions") == 1, output


def test_a_full_queue_drops_rows_and_counts_them(tmp_path):
    from tabtrack.serving.log_reader import read_log
    from tabtrack.serving.prediction_log import PredictionLog

    log = PredictionLog(str(tmp_path / "log"), model={"name": "m", "version": "1", "run_id": "r"},
                        columns={"x": "number", "c": "text"}, classes=None, max_waiting=1)  # fmt: skip
    started = time.perf_counter()
    for i in range(2000):
        log.record([{"x": i, "c": "a"}], [float(i)], request_id=f"q{i}")
    elapsed = time.perf_counter() - started
    log.close()
    assert log.logged + log.dropped == 2000 and log.dropped > 0, log.stats
    assert elapsed < 5  # never waits for the writer
    assert len(read_log(str(tmp_path / "log"))) == log.logged
    log.record([{"x": 1, "c": "a"}], [1.0], request_id="late")  # after close: counted, not raised
    assert log.logged + log.dropped == 2001


def test_the_log_reads_plain_records_by_arrow_and_converts_what_arrow_cannot_alike(tmp_path):
    """serve's records are read by Arrow in one call; a batch holding a value Arrow will not take as its column's
    kind (a number sent as text, a number where text goes) is converted column by column instead. The same rows
    come back the same either way (a gap is null, an input named like a log column is input.<name>)."""
    from tabtrack.serving.prediction_log import PredictionLog

    columns = {"x": "number", "c": "text", "row": "number"}
    plain = [{"x": 1, "c": "u", "row": 5}, {"x": None, "c": None, "row": 6.5}, {"x": True, "c": "v"}]
    read = {}
    for name, extra in (("arrow", []), ("converted", [{"x": "2.5", "c": 7, "row": 1}])):
        log = PredictionLog(str(tmp_path / name), model={"name": "m", "version": "1", "run_id": "r"},
                            columns=columns, classes=["no", "yes"])  # fmt: skip
        rows = plain + extra
        log.record(rows, np.array(["no", "yes", "no", "yes"][: len(rows)], dtype=object),
                   np.tile([0.25, 0.75], (len(rows), 1)), request_id=f"{name}-1")  # fmt: skip
        log.close()
        assert log.stats["rows_logged"] == len(rows) and log.stats["error"] is None
        read[name] = pd.read_parquet(tmp_path / name).sort_values("row")
    arrow, converted = read["arrow"], read["converted"]
    assert arrow["x"].tolist()[::2] == [1.0, 1.0] and np.isnan(arrow["x"].iloc[1])
    assert arrow["c"].tolist()[::2] == ["u", "v"] and pd.isna(arrow["c"].iloc[1])
    assert arrow["input.row"].tolist()[:2] == [5.0, 6.5] and pd.isna(arrow["input.row"].iloc[2])
    assert arrow["row"].tolist() == [0, 1, 2] and arrow["prediction"].tolist() == ["no", "yes", "no"]
    inputs = ["x", "c", "input.row", "row", "prediction", "proba_yes"]
    pd.testing.assert_frame_equal(converted[inputs].head(3), arrow[inputs])
    assert converted[["x", "c", "input.row"]].iloc[3].tolist() == [2.5, "7", 1.0]


def test_a_shadow_batch_is_logged_as_its_requests_with_their_sample(tmp_path):
    """The shadow logs a batch of many requests as one item: each row keeps its request's id and its place in
    that request, and a sampled log keeps or leaves each request whole, as it does for single requests."""
    from tabtrack.serving.prediction_log import PredictionLog, share_of

    requests = [(f"q{i}", 1 + i % 3) for i in range(60)]
    rows = [{"x": float(i)} for i, (_, count) in enumerate(requests) for _ in range(count)]
    predictions = np.array([100 * i + place for i, (_, count) in enumerate(requests) for place in range(count)], float)
    for sample in (1.0, 0.5):
        log = PredictionLog(str(tmp_path / f"log-{sample}"), model={"name": "m", "version": "2", "run_id": "r"},
                            columns={"x": "number"}, classes=None, sample=sample)  # fmt: skip
        log.record_many(rows, predictions, requests=requests, role="shadow")
        log.close()
        logged = pd.read_parquet(tmp_path / f"log-{sample}")
        kept = [
            (i, request_id, count) for i, (request_id, count) in enumerate(requests) if share_of(request_id) < sample
        ]
        assert 0 < len(kept) <= len(requests) and (sample == 1.0) == (len(kept) == len(requests))
        expected = [(request_id, place, float(i), 100.0 * i + place) for i, request_id, count in kept
                    for place in range(count)]  # fmt: skip
        got = logged.sort_values("prediction")[["request_id", "row", "x", "prediction"]]
        assert [tuple(r) for r in got.itertuples(index=False)] == expected
        assert set(logged["role"]) == {"shadow"} and log.stats["rows_logged"] == len(expected)


@pytest.mark.multiprocess
def test_monitor_bad_inputs_are_one_line_each(workdir):
    raw, run_id = _champion(workdir, "penguins", "species", "penguins")
    frame = pd.read_csv(raw)

    # an empty window, and a time that is not one
    _one_line_error(run_tabtrack("monitor", "penguins@champion", "--since", "2020-01-01", "--until", "2020-01-02",
                                 cwd=workdir), "no logged predictions", "--since")  # fmt: skip
    _one_line_error(run_tabtrack("monitor", "penguins@champion", "--since", "last week", cwd=workdir), "7d")
    # a data file without a column the model needs
    frame.drop(columns=["bill_length_mm"]).to_csv(workdir / "short.csv", index=False)
    _one_line_error(run_tabtrack("monitor", "penguins@champion", "--data", "short.csv", cwd=workdir), "bill_length_mm")

    # logged rows whose columns differ from the model's (another scorer wrote them): reported, not a crash
    from tabtrack.serving.prediction_log import PredictionLog

    columns = {"island": "text", "bill_depth_mm": "number", "flipper_length_mm": "number", "body_mass_g": "number",
               "sex": "text", "year": "number", "colour": "text"}  # fmt: skip
    log = PredictionLog(str(workdir / LOG), model={"name": "penguins", "version": "1", "run_id": run_id},
                        columns=columns, classes=["Adelie", "Chinstrap", "Gentoo"])  # fmt: skip
    rows = frame.drop(columns=["species", "rownames", "bill_length_mm"]).assign(colour="grey")
    log.record(rows, frame["species"].to_numpy(), np.full((len(rows), 3), 1 / 3), request_id="other-scorer")
    log.close()
    differing = run_tabtrack("monitor", "penguins@champion", "--since", "1h", "--no-track", cwd=workdir)
    assert differing.returncode == 1, differing.stdout + differing.stderr
    assert "input column 'bill_length_mm' is missing from the rows" in differing.stderr
    assert "| * bill_length_mm" in differing.stdout and "Traceback" not in differing.stderr

    # a labels file without the column --on names
    pd.DataFrame({"id": ["other-scorer"], "species": ["Adelie"]}).to_csv(workdir / "labels.csv", index=False)
    _one_line_error(run_tabtrack("monitor", "penguins@champion", "--since", "1h", "--labels", "labels.csv",
                                 cwd=workdir), "--on 'request_id'", "labels.csv")  # fmt: skip

    # a run recorded before runs kept a reference: one line naming --reference, which then works
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    reference = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://")) / "monitoring/reference.json"
    reference.unlink()
    _one_line_error(run_tabtrack("monitor", "penguins@champion", "--data", raw.name, cwd=workdir),
                    "monitoring/reference.json", "--reference FILE")  # fmt: skip
    rebuilt = run_tabtrack("monitor", "penguins@champion", "--data", raw.name, "--reference", raw.name, cwd=workdir)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "344 labelled rows" in rebuilt.stdout  # the file's species column, scored as labels


@pytest.mark.multiprocess
def test_retrain_a_train_champion_through_the_gate(workdir):
    """The champion's recorded recipe on new data where the label's relation to the inputs changed: the
    new version wins on the new data's test split; without --promote it is the challenger."""
    raw, champion_run = _champion(workdir, "titanicsurvival", "survived", "titanic")
    changed = pd.read_csv(raw)
    third = changed["passengerClass"] == "3rd"
    changed.loc[third, "survived"] = changed.loc[third, "survived"].map({"yes": "no", "no": "yes"})
    changed.to_csv(workdir / "changed.csv", index=False)
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")

    held = _ok(run_tabtrack("retrain", "titanic", "--data", "changed.csv", cwd=workdir))
    assert "registered: titanic version 2" in held and "v2 is now challenger" in held
    version = client.get_model_version("titanic", "2")
    assert version.tags["gate.decision"] == "champion" and version.tags["gate.promoted"] == "false"
    assert str(client.get_model_version_by_alias("titanic", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("titanic", "challenger").version) == "2"
    new_run = client.get_run(version.run_id)
    assert new_run.data.tags["tabtrack.retrains"] == champion_run
    assert new_run.data.tags["data.path"] == str(workdir / "changed.csv")
    original = client.get_run(champion_run)
    assert {k: v for k, v in new_run.data.params.items() if k.startswith("model.")} == {
        k: v for k, v in original.data.params.items() if k.startswith("model.")
    }  # the same recipe

    promoted = _ok(run_tabtrack("retrain", "titanic", "--data", "changed.csv", "--promote", cwd=workdir))
    assert "v3 is now champion" in promoted
    assert str(client.get_model_version_by_alias("titanic", "champion").version) == "3"

    _one_line_error(run_tabtrack("retrain", "nobody", "--data", "changed.csv", cwd=workdir), "no champion")


OWN_SCRIPT = """
import argparse, pandas as pd, tabtrack
from sklearn.compose import make_column_transformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OrdinalEncoder
parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True)
args = parser.parse_args()
frame = pd.read_csv(args.data)
X, y = frame[["sex", "age", "passengerClass"]], frame["survived"]
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
encode = make_column_transformer((OrdinalEncoder(), ["sex", "passengerClass"]), remainder="passthrough")
with tabtrack.start_run(experiment="own", run_name="forest", data=args.data, seed=0) as run:
    model = make_pipeline(encode, RandomForestClassifier(n_estimators=30, random_state=0)).fit(X_train, y_train)
    run.evaluate(model, X_test, y_test, X_train=X_train, y_train=y_train)
tabtrack.register(run.run_id, name="own-titanic")
print(run.run_id)
"""


@pytest.mark.multiprocess
def test_retrain_an_own_code_champion_reruns_its_script_on_the_new_file(git_repo):
    raw = write_table(TABLES["titanicsurvival"], git_repo)
    changed = pd.read_csv(raw)
    third = changed["passengerClass"] == "3rd"
    changed.loc[third, "survived"] = changed.loc[third, "survived"].map({"yes": "no", "no": "yes"})
    changed.iloc[:900].to_csv(git_repo / "changed.csv", index=False)
    changed.iloc[900:].to_csv(git_repo / "changed_test.csv", index=False)
    (git_repo / "train.py").write_text(OWN_SCRIPT)
    git(git_repo, "add", "train.py")
    git(git_repo, "commit", "-qm", "train")
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    first = subprocess.run([sys.executable, "train.py", "--data", raw.name], cwd=git_repo, env=environment,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    champion_run = first.stdout.strip().splitlines()[-1]
    _ok(run_tabtrack("promote", "own-titanic", "--version", "1", "--alias", "champion", cwd=git_repo))

    _one_line_error(run_tabtrack("retrain", "own-titanic", "--data", "changed.csv", cwd=git_repo), "--test-data")
    done = _ok(run_tabtrack("retrain", "own-titanic", "--data", "changed.csv", "--test-data", "changed_test.csv",
                            "--promote", cwd=git_repo))  # fmt: skip
    assert "registered: own-titanic version 2" in done and "v2 is now champion" in done
    client = MlflowClient(f"sqlite:///{git_repo / 'mlflow.db'}")
    assert sorted(int(v.version) for v in client.search_model_versions("name = 'own-titanic'")) == [1, 2]
    new_run = client.get_run(client.get_model_version("own-titanic", "2").run_id)
    assert new_run.data.tags["tabtrack.retrains"] == champion_run
    assert json.loads(new_run.data.tags["tabtrack.argv"]) == ["--data", str(git_repo / "changed.csv")]

    # a script that reads a fixed file cannot be pointed at new data: one line saying so
    (git_repo / "fixed.py").write_text(OWN_SCRIPT.replace("args.data", f"{raw.name!r}").replace("own-titanic", "fixed"))
    git(git_repo, "add", "fixed.py")
    git(git_repo, "commit", "-qm", "fixed")
    fixed = subprocess.run([sys.executable, "fixed.py", "--data", "ignored"], cwd=git_repo, env=environment,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    _ok(run_tabtrack("promote", "fixed", "--version", "1", "--alias", "champion", cwd=git_repo))
    _one_line_error(run_tabtrack("retrain", "fixed", "--data", "changed.csv", "--test-data", "changed_test.csv",
                                 cwd=git_repo), "does not take its data file as an argument")  # fmt: skip
