"""A challenger beside the champion: `tabtrack serve --shadow` (every response from the champion, the challenger
scoring the same rows off the response path into the prediction log), `--canary FRACTION` (a sticky share of
requests answered by the challenger, each response naming who answered), and `tabtrack monitor --shadow` (how
often the two agree and, on labelled rows, both models' metric with the paired interval). Console scripts, a real
table, the real log."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest

import real_tables
from conftest import TABTRACK, free_port, run_tabtrack, wait_for_http
from tabtrack.serving.challenger import Shadow, canary_share

pytestmark = pytest.mark.multiprocess


def _train(workdir, path, model: str, *extra: str) -> None:
    done = run_tabtrack("train", path, "-t", "survived", "--model", model, "--register", "titanic",
                        "--set", "drop_columns=[rownames]", *extra, cwd=workdir)  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A store with titanic v1 (logistic regression), v2 (a random forest on the same columns) and v3 (trained
    without `age`), copied into each test's working directory."""
    folder = tmp_path_factory.mktemp("challenger")
    path = real_tables.write(real_tables.TABLES["titanicsurvival"], folder)
    _train(folder, path, "logistic_regression")
    _train(folder, path, "random_forest")
    _train(folder, path, "logistic_regression", "--set", "drop_columns=[rownames, age]")
    return folder


@pytest.fixture
def served(trained, workdir):
    import shutil

    for name in ("mlflow.db", "mlruns", "titanicsurvival.csv"):
        source = trained / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, workdir / name)
    return real_tables.read(workdir / "titanicsurvival.csv")


class _Service:
    def __init__(self, workdir, *options: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [TABTRACK, "serve", "models:/titanic/1", "--port", str(self.port), "--log-predictions", "log", *options],
            cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_for_http(f"http://127.0.0.1:{self.port}/health", self.proc, what="tabtrack serve")

    def predict(self, records, request_id: str):
        body = json.dumps({"records": records}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/predict", data=body,
                                         headers={"content-type": "application/json", "X-Request-Id": request_id})  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read()), dict(response.headers)

    def health(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=30) as response:
            return json.loads(response.read())

    def stop(self) -> str:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=60)
        return err


def _records(raw: pd.DataFrame, start: int, count: int):
    return json.loads(raw.drop(columns=["rownames", "survived"]).iloc[start : start + count].to_json(orient="records"))


def test_shadow_scores_every_request_off_the_response_path_and_monitor_compares_the_pair(workdir, served):
    raw = served
    service = _Service(workdir, "--shadow", "models:/titanic/2")
    try:
        for index in range(40):
            body, headers = service.predict(_records(raw, index * 5, 5), f"req-{index}")
            assert body["model"]["version"] == "1" and body["model"]["role"] == "primary"
            assert headers["x-model-version"] == "titanic/1"
        deadline = time.time() + 30
        while (health := service.health())["challenger"]["rows_scored"] < 200 and time.time() < deadline:
            time.sleep(0.2)
        assert health["challenger"] | {"requests_waiting": 0} == {
            "mode": "shadow", "model": "models:/titanic/2", "version": "2", "rows_scored": 200, "rows_failed": 0,
            "rows_dropped": 0, "requests_waiting": 0, "last_error": None, "answers": health["challenger"]["answers"],
            "scored": "between requests, on the event loop",  # (it answers from ONNX Runtime)
        }  # fmt: skip
    finally:
        service.stop()
    logged = pd.read_parquet(workdir / "log")
    assert logged.groupby(["role", "model_version"]).size().to_dict() == {("primary", "1"): 200, ("shadow", "2"): 200}

    primary = logged[logged["role"] == "primary"].set_index(["request_id", "row"]).sort_index()
    shadow = logged[logged["role"] == "shadow"].set_index(["request_id", "row"]).sort_index()
    agreement = float(np.mean(primary["prediction"] == shadow["prediction"]))
    file_rows = primary.index.map(lambda key: int(key[0].removeprefix("req-")) * 5 + key[1])
    labels = pd.DataFrame({"request_id": primary.index.get_level_values(0), "row": primary.index.get_level_values(1),
                           "survived": raw["survived"].to_numpy()[file_rows]})  # fmt: skip
    labels.to_csv(workdir / "labels.csv", index=False)
    done = run_tabtrack("monitor", "models:/titanic/1", "--shadow", "models:/titanic/2", "--log-predictions", "log",
                        "--labels", "labels.csv", "-o", "monitor.html", cwd=workdir)  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    assert f"shadow titanic v2: 200 rows scored by both; agreement {agreement:.1%}" in done.stdout
    assert "on 200 labelled rows: roc_auc champion" in done.stdout and "95% interval" in done.stdout
    assert "Champion and shadow on the same requests" in (workdir / "monitor.html").read_text()
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    (run,) = mlflow.search_runs(experiment_names=["monitoring-titanic"], output_format="list")
    assert run.data.metrics["shadow_agreement"] == pytest.approx(agreement)
    assert {"shadow_roc_auc", "champion_roc_auc", "shadow_improvement_low", "shadow_improvement_high"} <= set(
        run.data.metrics
    )


def test_workers_serve_the_models_converted_once_and_flush_both_logs_on_stop(workdir, served):
    """`serve --workers 2 --shadow`: the parent converts both models to ONNX before the workers start (each worker
    answers from the copy it was handed, saying so on /health as the parent did), answers match the pipeline, and
    on SIGTERM every worker flushes its primary and shadow rows."""
    import mlflow

    from conftest import require

    require("skl2onnx")
    raw = served
    service = _Service(workdir, "--shadow", "models:/titanic/2", "--workers", "2")
    answers, seen = [], set()
    try:
        for index in range(20):
            body, _ = service.predict(_records(raw, index * 5, 5), f"req-{index}")
            answers += body["predictions"]
        for _ in range(20):  # both workers' /health (the kernel hands connections to either)
            health = service.health()
            seen.add((health["runtime"], health["answers"], health["challenger"]["answers"]))
    finally:
        service.proc.terminate()
        out, err = service.proc.communicate(timeout=60)
    assert service.proc.returncode == 0, err
    primary = [line.removeprefix("answers from ") for line in out.splitlines() if line.startswith("answers from ")]
    challenger = [line.partition(", from ")[2] for line in out.splitlines() if line.startswith("challenger ")]
    assert len(primary) == len(challenger) == 1 and primary[0].startswith("ONNX Runtime (converted at start-up in ")
    assert seen == {("onnx", primary[0], challenger[0])}, (seen, out)
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    rows = raw.drop(columns=["rownames", "survived"]).iloc[:100]
    assert answers == mlflow.sklearn.load_model("models:/titanic/1").predict(rows).tolist()
    logged = pd.read_parquet(workdir / "log")
    assert logged.groupby(["role", "model_version"]).size().to_dict() == {("primary", "1"): 100, ("shadow", "2"): 100}


def test_canary_answers_a_sticky_seeded_share_and_says_who_answered(workdir, served):
    raw = served
    service = _Service(workdir, "--shadow", "models:/titanic/2", "--canary", "0.3")
    try:
        answered = {}
        for index in range(120):
            body, headers = service.predict(_records(raw, index, 1), f"id-{index}")
            answered[f"id-{index}"] = body["model"]["version"]
            assert headers["x-model-version"] == f"titanic/{body['model']['version']}"
            assert body["model"]["role"] == ("canary" if body["model"]["version"] == "2" else "primary")
        again = [service.predict(_records(raw, 7, 1), f"id-{i}")[0]["model"]["version"] for i in range(20)]
        assert health_mode(service) == {"mode": "canary", "share": 0.3}
    finally:
        service.stop()
    expected = {key: "2" if canary_share(key) < 0.3 else "1" for key in answered}
    assert answered == expected  # the share is the seeded hash of the request id: the same id, the same model
    assert again == [expected[f"id-{i}"] for i in range(20)]  # sticky whatever the rows
    assert 0.15 < list(answered.values()).count("2") / 120 < 0.45
    logged = pd.read_parquet(workdir / "log")
    assert set(logged.loc[logged["model_version"] == "2", "role"]) == {"canary"}
    # monitoring the challenger reads the requests it answered
    done = run_tabtrack("monitor", "models:/titanic/2", "--log-predictions", "log", "--no-track", cwd=workdir)
    assert done.returncode in (0, 1), done.stderr
    assert f"{(logged['model_version'] == '2').sum()} rows from the prediction log" in done.stdout


def health_mode(service) -> dict:
    challenger = service.health()["challenger"]
    return {"mode": challenger["mode"], "share": challenger["share"]}


def test_a_challenger_with_other_inputs_or_a_canary_alone_is_refused_at_start_up(workdir, served):
    for options, said in (
        (["--shadow", "models:/titanic/3"], "--shadow models:/titanic/3: its inputs differ from the champion's (it lacks 'age')"),
        (["--canary", "0.2"], "--canary needs the challenger that answers its share: add --shadow MODEL_URI."),
        (["--shadow", "models:/titanic/1", "--canary", "1.5"], "--canary 1.5: give the share of requests"),
    ):  # fmt: skip
        done = run_tabtrack(
            "serve", "models:/titanic/1", "--port", str(free_port()), *options, cwd=workdir, timeout=120
        )
        assert done.returncode == 2, done.stderr
        assert said in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_shadow_in_scikit_learn_scores_in_its_own_thread_and_logs_every_request(workdir, served):
    """A challenger not in ONNX Runtime may be slow: it is scored by its own thread, never on the event loop that
    answers requests; its answers and the champion's all reach the log by the time the service stops."""
    service = _Service(workdir, "--shadow", "models:/titanic/2", "--runtime", "sklearn")
    try:
        for index in range(10):
            service.predict(_records(served, index * 3, 3), f"req-{index}")
        health = service.health()
        assert health["runtime"] == "sklearn" and health["challenger"]["scored"] == "in its own thread"
    finally:
        service.stop()
    logged = pd.read_parquet(workdir / "log")
    assert logged.groupby(["role", "model_version"]).size().to_dict() == {("primary", "1"): 30, ("shadow", "2"): 30}


@pytest.mark.parametrize("own_thread", [True, False])
def test_a_failing_shadow_is_counted_never_raised(tmp_path, own_thread):
    """A challenger whose scoring raises (here: on any row with a negative value) fails its rows alone: the other
    requests in the same batch are still scored, and the failures are counted with the last error."""
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from tabtrack.serving.model import LoadedModel

    def refuse_negatives(X):
        if (np.asarray(X) < 0).any():
            raise ValueError("negative input")
        return X

    pipeline = make_pipeline(FunctionTransformer(refuse_negatives), LinearRegression())
    pipeline.fit(pd.DataFrame({"a": [1.0, 2.0, 3.0]}), [1.0, 2.0, 3.0])
    shadow = Shadow(
        LoadedModel(uri="models:/x/2", model=pipeline, columns={"a": "number"}), None, own_thread=own_thread
    )
    shadow.submit([{"a": 1.0}, {"a": 2.0}], "ok-1")
    shadow.submit([{"a": -1.0}], "bad")
    shadow.submit([{"a": 3.0}], "ok-2")
    shadow.close()
    assert (shadow.scored, shadow.failed, shadow.dropped) == (3, 1, 0)
    assert shadow.stats["last_error"] == "ValueError: negative input"
