"""Registry, champion gate, batch predict and the HTTP service, against a real SQLite store and a real
`tabtrack serve` subprocess on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request

import joblib
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

import tabtrack
from conftest import TABTRACK, free_port, wait_for_http
from tabtrack.commands import registry
from tabtrack.errors import TabtrackError
from tabtrack.extras import installed


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """Two runs on the same data: a strong and a deliberately weak classifier."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    strong = tabtrack.train(
        data_dir / "breast_cancer.csv", target="target", model="logistic_regression", tracking_uri=uri
    )
    weak = tabtrack.train(
        data_dir / "breast_cancer.csv", target="target", model="random_forest", tracking_uri=uri,
        params={"n_estimators": 2, "max_depth": 1},
    )  # fmt: skip
    return {"uri": uri, "root": root, "strong": strong, "weak": weak}


def test_versions_increment_carry_lineage_and_aliases_move(trained):
    uri = trained["uri"]
    client = MlflowClient(uri, registry_uri=uri)
    first = registry.register(trained["strong"].run_id, name="reg_a", description="baseline", tracking_uri=uri)
    second = registry.register(trained["weak"].run_id, name="reg_a", tracking_uri=uri)
    assert (first.version, second.version) == (1, 2) or (str(first.version), str(second.version)) == ("1", "2")
    run = client.get_run(trained["strong"].run_id)
    tags = client.get_model_version("reg_a", "1").tags
    assert tags["source_run_id"] == trained["strong"].run_id
    assert tags["data.sha256"] == run.data.tags["data.sha256"]
    assert float(tags["metric.test_roc_auc"]) == pytest.approx(run.data.metrics["test_roc_auc"], rel=1e-5)
    description = client.get_model_version("reg_a", "1").description
    # the user's description, then the model card's summary
    assert (
        description.startswith("baseline\n\nModel card: logistic_regression")
        and trained["strong"].run_id in description
    )

    registry.promote("reg_a", version="1", alias="champion", tracking_uri=uri)
    assert client.get_model_version_by_alias("reg_a", "champion").version in ("1", 1)
    registry.promote("reg_a", version="2", alias="champion", tracking_uri=uri)
    assert str(client.get_model_version_by_alias("reg_a", "champion").version) == "2"
    assert registry.promote("reg_a", version="1", stage="Production", tracking_uri=uri) == "production"
    shown = {row["version"]: row for row in registry.show_model("reg_a", tracking_uri=uri)}
    assert shown["1"]["aliases"] == ["production"] and shown["2"]["aliases"] == ["champion"]
    listed = {m["name"]: m for m in registry.list_models(tracking_uri=uri)}
    assert listed["reg_a"]["latest_version"] == 2
    with pytest.raises(TabtrackError, match="version 9"):
        registry.promote("reg_a", version="9", alias="champion", tracking_uri=uri)


def test_gate_decides_both_ways_on_the_same_held_out_rows(trained):
    uri, strong, weak = trained["uri"], trained["strong"], trained["weak"]
    client = MlflowClient(uri, registry_uri=uri)

    def gate(result):
        version = registry.register(result.run_id, name="gated", tracking_uri=uri)
        decision = registry.gate(
            "gated", str(version.version), X_test=strong.X_test, y_test=strong.y_test,
            task="classification", classes=strong.classes, tracking_uri=uri,
        )  # fmt: skip
        return str(version.version), decision

    v1, first = gate(strong)
    assert first.alias == "champion" and "no champion yet" in first.reason
    v2, second = gate(weak)
    assert second.alias == "challenger" and second.champion_version in ("1", 1)
    assert second.new_score < second.champion_score
    # both scores recomputed independently on those same rows
    X, y = strong.X_test, strong.y_test
    from sklearn.metrics import roc_auc_score

    assert second.champion_score == pytest.approx(roc_auc_score(y, strong.pipeline.predict_proba(X)[:, 1]))
    assert second.new_score == pytest.approx(roc_auc_score(y, weak.pipeline.predict_proba(X)[:, 1]))
    tags = client.get_model_version("gated", v2).tags
    assert tags["gate.decision"] == "challenger" and tags["gate.metric"] == "roc_auc"
    assert float(tags["gate.champion_score"]) == pytest.approx(second.champion_score, rel=1e-5)
    assert str(client.get_model_version_by_alias("gated", "champion").version) == v1

    # a metric where lower is better flips the comparison direction: log_loss
    v3, third = gate(strong)
    decision = registry.gate(
        "gated",
        v3,
        X_test=X,
        y_test=y,
        task="classification",
        classes=strong.classes,
        metric="log_loss",
        tracking_uri=uri,
    )
    assert decision.alias == "challenger"  # equal scores do not displace the champion
    assert third.alias == "challenger"


def test_train_register_gate_from_the_cli(workdir, data_dir, cli, client):
    code, out, err = cli(
        "train",
        data_dir / "wine.csv",
        "--target",
        "target",
        "--model",
        "logistic_regression",
        "--register",
        "wine",
        "--gate",
    )
    assert code == 0, err
    assert "registered: wine version 1" in out and "gate: champion" in out
    code, out, err = cli(
        "train", data_dir / "wine.csv", "--target", "target", "--model", "random_forest",
        "--set", "model.params.n_estimators=1", "--set", "model.params.max_depth=1",
        "--register", "wine", "--gate",
    )  # fmt: skip
    assert code == 0, err
    assert "gate: challenger: v2 does not beat champion v1 on f1_macro" in out
    code, _, err = cli("train", data_dir / "wine.csv", "--target", "target", "--gate")
    assert code == 2 and "--gate needs --register" in err


def test_predict_file_adds_predictions_and_probabilities(trained, tmp_path, data_dir, cli):
    uri = trained["uri"]
    registry.register(trained["strong"].run_id, name="pred", tracking_uri=uri)
    registry.promote("pred", version="1", alias="champion", tracking_uri=uri)
    rows = pd.read_csv(data_dir / "breast_cancer.csv").drop(columns=["target"]).head(40)
    rows["note"] = "extra column"
    rows.to_csv(tmp_path / "in.csv", index=False)
    for model_uri in ("models:/pred@champion", "models:/pred/1", f"runs:/{trained['strong'].run_id}/model"):
        code, _out, err = cli(
            "predict", model_uri, tmp_path / "in.csv", "-o", tmp_path / "out.csv", "--tracking-uri", uri
        )
        assert code == 0, err
        assert "ignoring column(s) the model does not use: note" in err
        out_frame = pd.read_csv(tmp_path / "out.csv")
        assert len(out_frame) == 40
        assert list(out_frame.columns[-3:]) == ["prediction", "proba_0", "proba_1"]
        pipeline = trained["strong"].pipeline
        np.testing.assert_array_equal(out_frame["prediction"], pipeline.predict(rows.drop(columns=["note"])))
        np.testing.assert_allclose(out_frame["proba_1"], pipeline.predict_proba(rows.drop(columns=["note"]))[:, 1])
    rows.drop(columns=["mean_radius", "worst_area"]).to_csv(tmp_path / "short.csv", index=False)
    code, _, err = cli("predict", "models:/pred/1", tmp_path / "short.csv", "--tracking-uri", uri)
    assert code == 2 and "'mean_radius', 'worst_area'" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("predict", "models:/nope/1", tmp_path / "in.csv", "--tracking-uri", uri)
    assert code == 2 and "cannot load model 'models:/nope/1'" in err


def _request(url: str, body: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def service(trained):
    uri = trained["uri"]
    registry.register(trained["strong"].run_id, name="svc", tracking_uri=uri)
    registry.promote("svc", version="1", alias="champion", tracking_uri=uri)
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.Popen(
        [TABTRACK, "serve", "models:/svc@champion", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    wait_for_http(f"{base}/health", proc, what="tabtrack serve")
    yield base
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.multiprocess
def test_service_predictions_equal_in_process_and_trace_back(service, trained, data_dir):
    rows = pd.read_csv(data_dir / "breast_cancer.csv").drop(columns=["target"]).head(25)
    status, headers, body = _request(f"{service}/predict", json.dumps({"records": rows.to_dict("records")}).encode())
    assert status == 200, body
    pipeline = trained["strong"].pipeline
    assert body["predictions"] == pipeline.predict(rows).tolist()
    # (served by ONNX Runtime, converted at start-up: within 1e-4 of the pipeline)
    np.testing.assert_allclose([p["1"] for p in body["probabilities"]], pipeline.predict_proba(rows)[:, 1], atol=1e-4)
    onnx_installed = all(map(installed, ("skl2onnx", "onnxmltools", "onnxruntime")))  # (CI installs it)
    assert _request(f"{service}/health")[2]["runtime"] == ("onnx" if onnx_installed else "sklearn")
    assert body["model"] == {
        "name": "svc",
        "version": "1",
        "run_id": trained["strong"].run_id,
        "uri": "models:/svc@champion",
        "role": "primary",  # no challenger: the champion answered
    }
    lowered = {k.lower(): v for k, v in headers.items()}
    assert lowered["x-model-version"] == "svc/1" and lowered["x-model-run-id"] == trained["strong"].run_id

    status, _, meta = _request(f"{service}/metadata")
    run = MlflowClient(trained["uri"]).get_run(trained["strong"].run_id)
    assert status == 200 and meta["aliases"] == ["champion"] and meta["version"] == "1"
    assert meta["data_sha256"] == run.data.tags["data.sha256"]
    assert meta["test_metrics"]["roc_auc"] == pytest.approx(run.data.metrics["test_roc_auc"])


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        (b"not json", 422, "JSON decode error"),
        (b'{"rows": []}', 422, "records: Field required"),
        (b'{"records": []}', 422, "at least 1 item"),
        (b'{"records": [{"mean_radius": 1.0}]}', 422, "input lacks column(s)"),
        (b'{"records": "abc"}', 422, "records"),
        (b'{"records": [{"mean_radius": [1, 2]}]}', 422, "each value must be a number, string, boolean or null"),
    ],
)
@pytest.mark.multiprocess
def test_malformed_payloads_get_4xx_with_reason(service, payload, status, fragment):
    code, _, body = _request(f"{service}/predict", payload)
    assert code == status and fragment in body["detail"], body


@pytest.mark.multiprocess
def test_wrong_type_and_oversized_bodies(service, data_dir):
    row = pd.read_csv(data_dir / "breast_cancer.csv").drop(columns=["target"]).iloc[0].to_dict()
    row["mean_radius"] = "large"
    code, _, body = _request(f"{service}/predict", json.dumps({"records": [row]}).encode())
    assert code == 422 and "column 'mean_radius' must be numeric; got 'large'" in body["detail"]
    # an oversized body is refused from its Content-Length, before the server reads (or the client sends) it
    import http.client
    from urllib.parse import urlparse

    target = urlparse(service)
    connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
    connection.putrequest("POST", "/predict")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(11 * 1024 * 1024))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and "over" in json.loads(response.read())["detail"]
    connection.close()
    code, _, _ = _request(f"{service}/health")
    assert code == 200  # still alive after every bad request


def test_bad_model_uri_fails_at_startup(trained):
    env = {**os.environ, "MLFLOW_TRACKING_URI": trained["uri"]}
    done = subprocess.run(
        [TABTRACK, "serve", "models:/does_not_exist@champion", "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "cannot load model 'models:/does_not_exist@champion'" in done.stderr
    assert "Traceback" not in done.stderr


def test_served_model_loads_through_pyfunc_too(trained):
    mlflow.set_tracking_uri(trained["uri"])
    loaded = mlflow.pyfunc.load_model(f"runs:/{trained['strong'].run_id}/model")
    assert loaded.metadata.get_input_schema() is not None


@pytest.mark.parametrize(
    ("dataset", "family"),
    [("breast_cancer", "hist_gradient_boosting"), ("mixed", "hist_gradient_boosting"), ("mixed", "random_forest")],
)
def test_serve_converts_a_run_without_model_onnx_at_start_up_and_answers_like_the_pipeline(
    workdir, data_dir, store_uri, dataset, family
):
    """serve's default runtime on a run trained without --onnx: the pipeline converted to ONNX at start-up, checked
    on the run's test rows and probe rows (on the input example once the data file is gone), answering with the
    pipeline's labels and its probabilities within 1e-4, for records as JSON sends them (nulls in numbers and text)."""
    from conftest import mixed_frame, require
    from tabtrack.serving.model import load

    require("skl2onnx")
    if dataset == "mixed":
        mixed_frame(300).to_csv("mixed.csv", index=False)
        path, target = "mixed.csv", "churn"
    else:
        path, target = str(data_dir / "breast_cancer.csv"), "target"
    result = tabtrack.train(path, target=target, model=family, tracking_uri=store_uri)
    uri = f"runs:/{result.run_id}/model"
    model = load(uri, tracking_uri=store_uri, runtime="auto")
    n_test = MlflowClient(store_uri).get_run(result.run_id).data.params["n_test_samples"]
    assert model.onnx is not None, model.answered_by
    assert model.answered_by.startswith("ONNX Runtime (converted at start-up in ")
    assert (
        f"checked on the run's {n_test} test rows and 8 probe rows: same label on 100.00% of rows" in model.answered_by
    )
    frame = pd.read_csv(path).drop(columns=[target])
    predictions, proba = model.score(frame)
    with joblib.parallel_config(backend="sequential"):
        expected_proba = result.pipeline.predict_proba(frame)
        expected = result.pipeline.predict(frame)
    assert np.max(np.abs(proba - expected_proba)) < 1e-4
    assert list(predictions) == list(expected)
    number = next(c for c, k in model.columns.items() if k == "number")
    # a request's few records are read in Python, a shadow batch's hundreds by Arrow: both straight to the graph
    for count in (50, len(frame)):
        records = json.loads(frame.head(count).to_json(orient="records"))  # as JSON sends them: missing is null
        by_records, proba_records = model.score_records(records)
        assert model.onnx.score_records(records) is not None
        assert np.max(np.abs(proba_records - expected_proba[:count])) < 1e-4
        assert list(by_records) == list(expected[:count])
        # what plain JSON values cannot say goes through pandas and the input step: numbers as text, a bad value
        as_text = [{**r, number: None if r[number] is None else str(r[number])} for r in records]
        assert model.onnx.score_records(as_text) is None
        assert list(model.score_records(as_text)[0]) == list(expected[:count])
    with pytest.raises(TabtrackError, match=f"column '{number}' must be numeric; got 'many'"):
        model.score_records([{**records[0], number: "many"}])
    if dataset == "mixed":
        os.rename(path, "elsewhere.csv")
        moved = load(uri, tracking_uri=store_uri, runtime="auto")
        assert (
            moved.onnx is not None and "checked on the model's input example (the run's data file" in moved.answered_by
        )
        assert load(uri, tracking_uri=store_uri, runtime="sklearn").onnx is None


def test_service_scores_without_a_joblib_pool_per_request(workdir, data_dir, store_uri):
    """A forest with n_jobs=-1 would start a thread pool for every request (23 of a row's 31 ms, measured):
    the service scores in its own thread, where scikit-learn answers."""
    from fastapi.testclient import TestClient

    from tabtrack.serving.model import load
    from tabtrack.serving.service import create_app

    path = data_dir / "breast_cancer.csv"
    result = tabtrack.train(path, target="target", model="random_forest", tracking_uri=store_uri)
    model = load(f"runs:/{result.run_id}/model", tracking_uri=store_uri, runtime="sklearn")
    forest = model.model.steps[-1][1]
    assert forest.n_jobs == -1
    backends = []
    scikit_learns = forest.predict_proba

    def recording(features):
        backends.append(type(joblib.parallel.get_active_backend()[0]).__name__)
        return scikit_learns(features)

    forest.predict_proba = recording  # the forest's own method, recording how joblib is set up around it
    rows = pd.read_csv(path).drop(columns=["target"]).head(100)
    with TestClient(create_app(model)) as service:
        answer = service.post("/predict", json={"records": rows.to_dict("records")})
    assert answer.status_code == 200, answer.text
    assert backends == ["SequentialBackend"]
    with joblib.parallel_config(backend="sequential"):
        expected = result.pipeline.predict_proba(rows)[:, 1]
    assert np.array_equal([p["1"] for p in answer.json()["probabilities"]], expected)
