"""The team stack as real processes (scripts/team-stack.sh): PostgreSQL, an S3-compatible object store (moto's
server) and `mlflow server` in front of both, proxied and direct. Every command goes through the installed
console script; what they record is read back from MLflow, and the artifacts from the bucket."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TABTRACK, free_port, require, run_tabtrack, wait_for_http
from real_tables import TABLES
from real_tables import write as write_table

ROOT = Path(__file__).resolve().parents[1]
POSTGRES = os.environ.get("TABTRACK_TEST_POSTGRES_URL", "postgresql://tabtrack:tabtrack@127.0.0.1:5432/tabtrack_test")
BUCKET = "team"
SECRET = "s3SecretKey-TeamStack-987"
DROP = ("--set", "drop_columns=[rownames]")  # R's row names, an ID column (tabtrack refuses to train on it)
SMALL = ("--set", "model.params.n_estimators=30")

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]


class Stack:
    """One running team stack: its client environment and its bucket."""

    def __init__(self, workdir: Path, *, direct: bool) -> None:
        self.dir = workdir / "stack"
        tag = f"{os.getpid()}_{int(time.time() * 1000) % 10**8}"
        self.settings = {
            "PYTHON": sys.executable,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "TEAM_STACK_DIR": str(self.dir),
            "TEAM_STACK_PORT": str(free_port()),
            "TEAM_STACK_S3_PORT": str(free_port()),
            "TEAM_STACK_BUCKET": BUCKET,
            "TEAM_STACK_DB": f"team_{tag}",
            "TEAM_STACK_POSTGRES_URL": POSTGRES,
            "TEAM_STACK_WORKERS": "1",  # two cores: one server process is plenty for the tests
            "AWS_ACCESS_KEY_ID": "team-key",
            "AWS_SECRET_ACCESS_KEY": SECRET,
        }
        started = self._script("start", *(["--direct"] if direct else []))
        if started.returncode != 0 and "could not connect" in started.stderr.lower() and not os.environ.get("CI"):
            pytest.skip(f"PostgreSQL not reachable at {POSTGRES}")
        assert started.returncode == 0, started.stderr[-3000:]
        self.exports = _exports(started.stdout)
        self.uri = self.exports["MLFLOW_TRACKING_URI"]
        self.endpoint = self.exports["TEAM_STACK_S3_ENDPOINT_URL"]
        self.study_db = self.exports["TEAM_STACK_STUDY_DB"]
        # What a client has: the server's URL; in direct mode also the store's endpoint and credentials.
        # Data on the object store is read with credentials in both modes.
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
        self.env = {
            **base, **self.exports, "AWS_ACCESS_KEY_ID": "team-key", "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": self.endpoint,
        }  # fmt: skip

    def _script(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(ROOT / "scripts" / "team-stack.sh"), *args], env={**os.environ, **self.settings},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    def stop(self) -> None:
        stopped = self._script("stop", "--purge")
        assert stopped.returncode == 0, stopped.stderr[-2000:]

    def s3(self):
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id="team-key", aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )  # fmt: skip

    def keys(self, prefix: str = "") -> dict[str, int]:
        paginator = self.s3().get_paginator("list_objects_v2")
        return {
            item["Key"]: item["Size"]
            for page in paginator.paginate(Bucket=BUCKET, Prefix=prefix)
            for item in page.get("Contents", [])
        }

    def upload(self, path: Path, key: str) -> str:
        self.s3().upload_file(str(path), BUCKET, key)
        return f"s3://{BUCKET}/{key}"

    def tabtrack(self, *args, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
        return run_tabtrack(*args, cwd=cwd, env=self.env, timeout=timeout)

    def client(self, user: str = "admin", password: str | None = None):
        """A client for this test process, as `user` (the server runs MLflow's basic-auth app). The credentials go
        in the URL (requests sends them as basic auth), not in this process's environment, which the other tests
        of this worker share."""
        from mlflow import MlflowClient

        password = password or self.exports["MLFLOW_TRACKING_PASSWORD"]
        return MlflowClient(self.uri.replace("http://", f"http://{user}:{password}@"))


def _exports(text: str) -> dict[str, str]:
    pairs = {}
    for line in text.splitlines():
        if line.startswith("export "):
            for item in line.removeprefix("export ").split():
                key, _, value = item.partition("=")
                pairs[key] = value
    return pairs


def _started(folder: Path, *, direct: bool):
    for module in ("boto3", "moto", "s3fs", "psycopg"):
        require(module)
    return Stack(folder, direct=direct)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One proxied stack for the tests of this module that one worker runs (experiments and names differ)."""
    running = _started(tmp_path_factory.mktemp("team"), direct=False)
    yield running
    running.stop()


@pytest.fixture
def direct_stack(workdir):
    running = _started(workdir, direct=True)
    yield running
    running.stop()


def _ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _run_id(stdout: str) -> str:
    return next(line.split()[2] for line in stdout.splitlines() if line.startswith("run id:"))


def test_team_stack_proxied_every_command(stack, workdir):
    """train --cv, validate, compare, tune on 2 workers, register + promote + serve, reproduce, runs export
    and sync of an offline bundle, with the data read from the bucket and the artifacts written to it."""
    client = stack.client()
    raw = write_table(TABLES["penguins"], workdir)  # integers with gaps, text with gaps
    url = stack.upload(raw, "data/penguins.csv")
    sha = hashlib.sha256(raw.read_bytes()).hexdigest()

    _ok(stack.tabtrack("validate", url, "--target", "species", *DROP, cwd=workdir))
    run_id = _run_id(_ok(stack.tabtrack("train", url, "--target", "species", "--cv", "2", *DROP, *SMALL, cwd=workdir)))
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["data.path"] == url and run.data.tags["data.sha256"] == sha
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied: the client never sees s3://
    assert [d.dataset.source for d in run.inputs.dataset_inputs] == [json.dumps({"uri": url})] * 3
    folds = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(folds) == 2 and all(f.info.status == "FINISHED" for f in folds)
    stored = stack.keys(f"mlflow/{run.info.experiment_id}/{run_id}/artifacts/")
    assert any(key.endswith("report.html") for key in stored) and any("plots/" in key for key in stored)
    model_keys = stack.keys(f"mlflow/{run.info.experiment_id}/models/")
    assert any(key.endswith("/artifacts/MLmodel") for key in model_keys)

    compare = _ok(stack.tabtrack("compare", url, "--target", "species", "--models", "logistic_regression,random_forest", "--cv", "2", *DROP,
                                 "--experiment", "team_compare", cwd=workdir))  # fmt: skip
    assert "random_forest" in compare
    exp = client.get_experiment_by_name("team_compare")
    runs = client.search_runs([exp.experiment_id])
    assert all(r.info.status == "FINISHED" for r in runs)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    models = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.params["model_type"] for r in models) == ["logistic_regression", "random_forest"]

    _ok(stack.tabtrack("tune", url, "--target", "species", "--model", "random_forest", "--trials", "4",
                       "--jobs", "2", "--cv", "2", *DROP, "--storage", stack.study_db, "--study-name", "team_study",
                       "--experiment", "team_tune", cwd=workdir))  # fmt: skip
    import optuna

    study = optuna.load_study(study_name="team_study", storage=stack.study_db)
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) >= 4
    tune_runs = client.search_runs([client.get_experiment_by_name("team_tune").experiment_id])
    assert sum(r.info.run_name.startswith("trial_") for r in tune_runs) >= 4

    _ok(stack.tabtrack("register", run_id, "--name", "team_model", cwd=workdir))
    _ok(stack.tabtrack("promote", "team_model", "--version", "1", "--alias", "champion", cwd=workdir))
    port = free_port()
    server = subprocess.Popen(
        [TABTRACK, "serve", "models:/team_model@champion", "--port", str(port)], cwd=workdir, env=stack.env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", server, what="tabtrack serve")
        rows = pd.read_csv(raw).drop(columns=["species"]).head(5)
        records = json.loads(rows.to_json(orient="records"))  # gaps arrive as JSON null
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict", data=json.dumps({"records": records}).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        assert len(answer["predictions"]) == 5
        assert set(answer["predictions"]) <= {"Adelie", "Chinstrap", "Gentoo"}
    finally:
        server.terminate()
        server.wait(timeout=30)

    reproduced = stack.tabtrack("reproduce", run_id, cwd=workdir)
    assert "reproduced: all" in _ok(reproduced)
    again = client.get_run(reproduced.stdout.split("new run: ")[1].split()[0])
    assert again.data.tags["data.path"] == url and again.data.tags["tabtrack.reproduces"] == run_id

    exported = _ok(stack.tabtrack("runs", "export", "--experiment", "penguins", cwd=workdir))
    table = pd.read_csv(__import__("io").StringIO(exported))
    assert {run_id, again.info.run_id} <= set(table["run_id"])

    offline = _ok(stack.tabtrack("train", raw, "--target", "species", "--offline", *DROP, *SMALL,
                                 "--experiment", "team_offline", cwd=workdir))  # fmt: skip
    assert "offline: recorded in" in offline
    _ok(stack.tabtrack("sync", cwd=workdir))
    synced = client.search_runs([client.get_experiment_by_name("team_offline").experiment_id])
    assert len(synced) == 1 and synced[0].info.status == "FINISHED"
    synced_keys = stack.keys(f"mlflow/{synced[0].info.experiment_id}/")
    assert any(synced[0].info.run_id in key and key.endswith("report.html") for key in synced_keys)


def test_team_stack_direct_artifacts_and_no_credentials_recorded(direct_stack, workdir):
    """--no-serve-artifacts: the client writes s3:// itself, with credentials it holds; none of them is
    recorded anywhere (store, artifacts, output)."""
    client = direct_stack.client()
    raw = write_table(TABLES["titanicsurvival"], workdir)
    url = direct_stack.upload(raw, "data/titanic.csv")
    done = direct_stack.tabtrack("train", url, "--target", "survived", "--model", "hist_gradient_boosting",
                          "--cv", "2", "--tag", "team=direct", *DROP, cwd=workdir)  # fmt: skip
    run = client.get_run(_run_id(_ok(done)))
    assert run.info.status == "FINISHED" and run.data.tags["data.path"] == url
    assert run.info.artifact_uri.startswith(f"s3://{BUCKET}/mlflow/")
    stored = direct_stack.keys(f"mlflow/{run.info.experiment_id}/")
    assert any(key.endswith("/artifacts/MLmodel") for key in stored)

    # MLflow's own tools, in a fresh process holding what a direct-mode client holds, read s3:// themselves.
    predicted = subprocess.run(
        [sys.executable, "-c", "import sys, mlflow, pandas as pd; "
         "m = mlflow.pyfunc.load_model(f'runs:/{sys.argv[1]}/model'); "
         "print(len(m.predict(pd.read_csv(sys.argv[2]).drop(columns=['survived']))))",
         run.info.run_id, str(raw)],
        env=direct_stack.env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert int(predicted.stdout.split()[-1]) == len(pd.read_csv(raw))

    recorded = [done.stdout, done.stderr, json.dumps(run.data.params), json.dumps(run.data.tags)]
    s3 = direct_stack.s3()
    for key in stored:
        recorded.append(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode("latin-1"))
    assert not [text for text in recorded if SECRET in text]


def test_large_model_through_the_proxied_server_does_not_fail_over(stack, workdir):
    """A >= 300 MB model goes through the proxied server to the bucket: a long upload is reported while it
    runs, and is not mistaken for an unreachable server."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40_000, 4)), columns=list("abcd")).assign(y=rng.normal(size=40_000))
    frame.to_csv(workdir / "noise.csv", index=False)
    args = ("train", "noise.csv", "--target", "y", "--model", "random_forest", "--cv", "0",
            "--set", "model.params.n_estimators=120", "--experiment", "large_model")  # fmt: skip
    # The notice's interval is a setting, checked before anything trains; 1 s here, so that a fast machine's
    # upload (a few seconds) is still reported.
    refused = run_tabtrack(*args, cwd=workdir, env={**stack.env, "TABTRACK_UPLOAD_NOTICE": "0"})
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        "error: TABTRACK_UPLOAD_NOTICE must be positive, got '0'."
    ], refused.stderr[-2000:]
    done = run_tabtrack(*args, cwd=workdir, env={**stack.env, "TABTRACK_UPLOAD_NOTICE": "1"}, timeout=900)
    run = stack.client().get_run(_run_id(_ok(done)))
    assert len(stack.client().search_runs([run.info.experiment_id])) == 1  # the refused command made no run
    assert run.info.status == "FINISHED"
    assert not (workdir / ".tabtrack" / "offline").exists(), done.stderr[-2000:]
    assert "logging the model to" in done.stderr and "s so far" in done.stderr
    models = stack.keys(f"mlflow/{run.info.experiment_id}/models/")
    assert sum(models.values()) >= 300 * 2**20, f"{sum(models.values()) / 2**20:.0f} MiB"


def test_eight_concurrent_trains_through_the_team_stack(stack, workdir, data_dir):
    """Eight `tabtrack train` processes at once against the server (PostgreSQL runs, S3 artifacts)."""
    from test_reliability import _assert_complete_runs, _concurrent_trains

    shutil.copy(data_dir / "breast_cancer.csv", workdir / "data.csv")
    results = _concurrent_trains(workdir, Path("data.csv"), 8, stack.env)
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    _assert_complete_runs(stack.client(), 8)


@pytest.fixture
def ray_cluster(workdir, stack, ray_to_itself):
    """`ray start --head` plus a second node on 127.0.0.1, one CPU each, started with the team stack's
    client environment; `ray stop` after."""
    ray_cli = str(Path(sys.executable).with_name("ray"))
    port = free_port()
    # A cluster on loopback for one test: no token (Ray's token files in ~/.ray belong to the user's own clusters).
    stack.env["RAY_AUTH_MODE"] = "disabled"
    env = {**stack.env, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    for args in (["--head", "--port", str(port), "--include-dashboard", "false"], ["--address", f"127.0.0.1:{port}"]):
        done = subprocess.run([ray_cli, "start", *args, *common], env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
    yield f"127.0.0.1:{port}"
    subprocess.run([ray_cli, "stop", "--force"], env=env, capture_output=True, timeout=120)


def _kill_a_running_trial(stack, study_name: str, deadline: float) -> bool:
    """Once a trial of the study runs, SIGKILL the Ray workers running trials (a node losing its processes)."""
    import optuna

    # One storage for the whole wait: a study loaded from a URL opens a connection pool of its own, and
    # one every 0.2 s used up PostgreSQL's connection slots.
    storage = optuna.storages.RDBStorage(stack.study_db)
    while time.time() < deadline:
        try:
            study = optuna.load_study(study_name=study_name, storage=storage)
            # RUNNING with its run started: its parameters are drawn (a trial just asked has none yet)
            if any(t.state.name == "RUNNING" and t.user_attrs.get("run_id") for t in study.trials):
                return subprocess.run(["pkill", "-9", "-f", "ray::_one_trial"]).returncode == 0
        except KeyError:  # the study does not exist yet
            pass
        time.sleep(0.2)
    return False


def test_compare_and_tune_on_a_ray_cluster(stack, ray_cluster, workdir):
    """A 3-model compare and an 8-trial tune as Ray tasks on a two-node cluster, each task a complete child
    run on the team stack; the same seeds give the metrics of the run without Ray; a trial whose worker is
    killed is FAILED, given back to the study, and the command goes on."""
    client = stack.client()
    raw = write_table(TABLES["penguins"], workdir)
    url = stack.upload(raw, "data/penguins.csv")
    models = "logistic_regression,random_forest,hist_gradient_boosting"
    common = ("compare", url, "--target", "species", "--models", models, "--cv", "2", *DROP, *SMALL)
    plain = subprocess.Popen(
        [TABTRACK, *common, "--experiment", "plain"], cwd=workdir, env=stack.env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _ok(stack.tabtrack(*common, "--experiment", "on_ray", "--ray", ray_cluster, cwd=workdir))
    assert plain.wait(timeout=600) == 0, plain.stderr.read()[-3000:]

    def children(experiment: str) -> dict[str, dict[str, float]]:
        runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
        (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        assert all(r.info.status == "FINISHED" for r in runs)
        models = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        return {r.data.params["model_type"]: r.data.metrics for r in models}

    on_ray, without = children("on_ray"), children("plain")
    assert sorted(on_ray) == sorted(models.split(","))
    for model, metrics in on_ray.items():
        tests = {k: v for k, v in metrics.items() if k.startswith("test_")}
        assert tests and tests == pytest.approx({k: without[model][k] for k in tests}, rel=1e-9), model

    tune = subprocess.Popen(
        [TABTRACK, "tune", url, "--target", "species", "--model", "random_forest", "--trials", "8", "--cv", "2",
         *DROP, "--storage", stack.study_db, "--study-name", "ray_study", "--experiment", "ray_tune",
         "--ray", ray_cluster],
        cwd=workdir, env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    killed = _kill_a_running_trial(stack, "ray_study", time.time() + 240)
    _, err = tune.communicate(timeout=900)
    assert tune.returncode == 0, err[-3000:]
    assert killed, "no trial was seen running"

    import optuna

    trials = optuna.load_study(study_name="ray_study", storage=stack.study_db).trials
    states = [t.state.name for t in trials]
    # random_forest's trials are pruned fold by fold: COMPLETE or PRUNED both finish the trial
    assert states.count("COMPLETE") + states.count("PRUNED") == 8 and states.count("FAIL") >= 1, states
    assert len({t.number for t in trials}) == len(trials)
    assert "given back to the study" in err
    runs = client.search_runs([client.get_experiment_by_name("ray_tune").experiment_id])
    by_id = {r.info.run_id: r for r in runs}
    for trial in trials:
        run = by_id[trial.user_attrs["run_id"]] if trial.user_attrs.get("run_id") else None
        if trial.state.name == "FAIL" and run is not None:
            assert run.info.status == "FAILED" and "died" in run.data.tags["error"]
        if trial.state.name in ("COMPLETE", "PRUNED"):
            assert run is not None and run.info.status == "FINISHED"
    # What a killed trial had drawn is tried again (pkill may also catch a trial still drawing its parameters).
    given_back = [t for t in trials if t.state.name == "FAIL"]
    tried = [t.params for t in trials if t.state.name != "FAIL"]
    assert all(any(all(p.get(k) == v for k, v in g.params.items()) for p in tried) for g in given_back)


def test_predictions_logged_to_the_bucket_and_monitored_from_there(stack, workdir):
    """`predict` writes the prediction log to s3:// on the team's object store; `monitor` reads it back from there,
    and records its run, page and drift on the tracking server."""
    raw = write_table(TABLES["titanicsurvival"], workdir)
    run_id = _run_id(_ok(stack.tabtrack("train", str(raw), "--target", "survived", "--model", "random_forest",
                                        "--cv", "0", *SMALL, *DROP, cwd=workdir)))  # fmt: skip
    model = f"runs:/{run_id}/model"
    frame = pd.read_csv(raw).drop(columns=["survived"])
    frame.to_csv(workdir / "today.csv", index=False)
    frame.assign(age=frame["age"] + 30).to_csv(workdir / "older.csv", index=False)
    for name in ("today", "older"):
        log = f"s3://{BUCKET}/predictions/{name}"
        _ok(stack.tabtrack("predict", model, f"{name}.csv", "--log-predictions", log, cwd=workdir))
    keys = stack.keys("predictions/")
    day = f"date={time.strftime('%Y-%m-%d', time.gmtime())}"
    assert {key.split("/")[1] for key in keys} == {"today", "older"}
    assert all(key.split("/")[2] == day and key.endswith(".parquet") for key in keys), keys

    calm = stack.tabtrack("monitor", model, "--since", "1h", "--log-predictions", f"s3://{BUCKET}/predictions/today",
                          cwd=workdir)  # fmt: skip
    drifted = stack.tabtrack("monitor", model, "--since", "1h", "--log-predictions",
                             f"s3://{BUCKET}/predictions/older", cwd=workdir)  # fmt: skip
    assert drifted.returncode == 1, drifted.stdout + drifted.stderr
    flagged = [line.split("|")[1].strip() for line in drifted.stdout.splitlines() if line.startswith("| *")]
    assert "* age" in flagged and not {"* sex", "* passengerClass"} & set(flagged), drifted.stdout
    assert calm.returncode in (0, 1) and "* age" not in calm.stdout, calm.stdout + calm.stderr

    client = stack.client()
    runs = client.search_runs([client.get_experiment_by_name(f"monitoring-run-{run_id}").experiment_id])
    assert len(runs) == 2 and {r.data.metrics["rows"] for r in runs} == {len(frame)}
    older = next(r for r in runs if r.data.tags["monitor.drifted"] == "true" and r.data.metrics["psi_age"] > 0.2)
    assert {a.path for a in client.list_artifacts(older.info.run_id)} >= {"monitor.html", "monitoring"}


def test_the_stack_runs_with_logins_and_a_user_without_rights_cannot_write(stack, workdir, data_dir):
    """MLflow's basic-auth app: no credentials is one line naming both variables; a user with only the default READ
    permission cannot record runs into an experiment someone else owns (one line, exit 2, no run); the admin's
    password is in nothing recorded."""
    from mlflow.server.auth.client import AuthServiceClient

    password = stack.exports["MLFLOW_TRACKING_PASSWORD"]
    assert urllib.request.urlopen(f"{stack.uri}/health", timeout=30).status == 200  # health needs no login
    try:
        urllib.request.urlopen(f"{stack.uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=30)
        raise AssertionError("the server answered without credentials")
    except urllib.error.HTTPError as exc:
        assert exc.code == 401
    shutil.copy(data_dir / "wine.csv", workdir / "wine.csv")
    train = ("train", "wine.csv", "--target", "target", "--experiment", "team_locked", *SMALL)
    anonymous = {
        k: v for k, v in stack.env.items() if k not in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    }
    done = run_tabtrack(*train, cwd=workdir, env=anonymous)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "MLFLOW_TRACKING_USERNAME" in lines[0] and "MLFLOW_TRACKING_PASSWORD" in lines[0]

    admin = stack.client()
    owned = admin.create_experiment("team_locked")
    auth = AuthServiceClient(stack.uri.replace("http://", f"http://admin:{password}@"))
    auth.create_user("viewer", "Viewer-Passw0rd-123")
    viewer = {**stack.env, "MLFLOW_TRACKING_USERNAME": "viewer", "MLFLOW_TRACKING_PASSWORD": "Viewer-Passw0rd-123"}
    done = run_tabtrack(*train, cwd=workdir, env=viewer)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "lacks permission" in lines[0] and "HTTP 403" in lines[0]
    assert admin.search_runs([owned]) == []
    assert not (workdir / ".tabtrack" / "offline").exists()  # refused is not unreachable: nothing goes offline

    auth.grant_user_permission("viewer", "experiment", owned, "EDIT")  # once granted, the same command records the run
    done = run_tabtrack(*train, cwd=workdir, env=viewer)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = admin.search_runs([owned])
    assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics
    recorded = [done.stdout, done.stderr, json.dumps(run.data.params), json.dumps(run.data.tags)]
    recorded += [Path(admin.download_artifacts(run.info.run_id, "config/resolved.yaml", str(workdir))).read_text()]
    assert not [text for text in recorded if password in text or "Viewer-Passw0rd-123" in text]
