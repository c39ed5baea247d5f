"""The own-code door: `tabtrack.start_run` + `Run.evaluate` around the user's own training code, against a
real SQLite store, read back with MlflowClient: the standard run (names, lineage, plots, model), the
lifecycle (FINISHED, FAILED, KILLED), user MLflow calls, nesting, notebooks, offline, and the errors."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import real_tables
import tabtrack
from conftest import free_port, git, run_tabtrack, runs_of
from tabtrack.errors import TabtrackError


@pytest.fixture
def penguins(workdir):
    """The raw penguins file and its split: integers with gaps, text with gaps, three classes."""
    path = real_tables.write(real_tables.TABLES["penguins"], workdir)
    frame = pd.read_csv(path).drop(columns=["rownames"])
    X, y = frame.drop(columns=["species"]), frame["species"]
    return (path, *train_test_split(X, y, test_size=0.25, stratify=y, random_state=0))


def users_pipeline(estimator=None) -> Pipeline:
    numeric = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year"]
    preprocess = ColumnTransformer([
        ("numbers", Pipeline([("fill", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric),
        ("words", Pipeline([("fill", SimpleImputer(strategy="most_frequent")),
                            ("encode", OneHotEncoder(handle_unknown="ignore"))]), ["island", "sex"]),
    ])  # fmt: skip
    return Pipeline(
        [("prep", preprocess), ("clf", estimator if estimator is not None else LogisticRegression(max_iter=1000))]
    )


def test_the_standard_run_for_a_users_pipeline(penguins, store_uri, client, git_repo):
    path, X_train, X_test, y_train, y_test = penguins
    git(git_repo, "add", ".gitignore")
    git(git_repo, "commit", "-qm", "project")
    with tabtrack.start_run(experiment="penguins-own", run_name="logreg", data=path, params={"C": 1.0},
                            tags={"stage": "dev"}, seed=7, tracking_uri=store_uri) as run:  # fmt: skip
        assert tabtrack.active_run() is run and mlflow.active_run().info.run_id == run.run_id
        model = users_pipeline().fit(X_train, y_train)
        result = run.evaluate(model, X_test, y_test, X_train=X_train, y_train=y_train)
    assert tabtrack.active_run() is None
    assert result.run_id == run.run_id and result.metrics["test"]["accuracy"] > 0.9

    logged = client.get_run(run.run_id)
    assert logged.info.status == "FINISHED" and logged.info.run_name == "logreg"
    params, metrics, tags = logged.data.params, logged.data.metrics, logged.data.tags
    assert params["C"] == "1.0" and params["random_state"] == "7" and params["task"] == "classification"
    assert params["model_type"] == "LogisticRegression" and params["n_test_samples"] == str(len(X_test))
    assert params["clf__max_iter"] == "1000" and params["feature_importance_method"] == "permutation"
    for split in ("train", "test"):
        assert {f"{split}_accuracy", f"{split}_f1_macro", f"{split}_roc_auc", f"{split}_log_loss"} <= set(metrics)
    assert metrics["test_accuracy"] == pytest.approx(result.metrics["test"]["accuracy"])
    assert tags["stage"] == "dev" and tags["tabtrack.kind"] == "own_code" and tags["tabtrack.version"]
    assert tags["data.path"] == str(path.resolve()) and len(tags["data.sha256"]) == 64
    assert tags["git.commit"] and tags["tabtrack.host"] and tags["tabtrack.pid"] == str(os.getpid())
    artifacts = {a.path for a in client.list_artifacts(run.run_id, "plots")} | {
        a.path for a in client.list_artifacts(run.run_id, "reports")
    } | {a.path for a in client.list_artifacts(run.run_id)}  # fmt: skip
    assert {"plots/confusion_matrix.png", "plots/roc_curve.png", "plots/feature_importance.png",
            "reports/classification_report.txt", "reports/feature_importance.csv", "report.html"} <= artifacts  # fmt: skip
    contexts = sorted(
        next(t.value for t in d.tags if t.key == "mlflow.data.context") for d in logged.inputs.dataset_inputs
    )
    assert contexts == ["source", "test", "training"]

    # the model takes the raw file's rows through MLflow's own tools, fed as given to the user's pipeline
    mlflow.set_tracking_uri(store_uri)
    raw = pd.read_csv(path)
    loaded = mlflow.pyfunc.load_model(result.model_uri)
    np.testing.assert_array_equal(loaded.predict(raw), model.predict(raw.drop(columns=["rownames", "species"])))
    info = mlflow.models.get_model_info(result.model_uri)
    assert {spec["type"] for spec in info.signature.inputs.to_dict()} == {"any"}
    assert info.flavors["sklearn"]["serialization_format"] == "skops"


@pytest.mark.fresh_store
def test_untracked_runs_record_nothing_and_still_compute(penguins, workdir):
    _, X_train, X_test, y_train, y_test = penguins
    with tabtrack.start_run(experiment="x", track=False, seed=1) as run:
        result = run.evaluate(users_pipeline().fit(X_train, y_train), X_test, y_test)
        run.log_metrics({"extra": 1.0})
    assert result.metrics["test"]["accuracy"] > 0.9 and result.model_uri is None and result.run_id is None
    assert not (workdir / "mlflow.db").exists() and not (workdir / "mlruns").exists()


def test_an_exception_in_the_block_fails_the_run_and_propagates_unchanged(store_uri, client):
    error = RuntimeError("the GPU caught fire")
    with pytest.raises(RuntimeError) as raised, tabtrack.start_run(experiment="boom", tracking_uri=store_uri) as run:
        run.log_params({"stage": 1})
        raise error
    assert raised.value is error
    logged = client.get_run(run.run_id)
    assert logged.info.status == "FAILED" and logged.data.tags["error"] == "RuntimeError: the GPU caught fire"
    assert "the GPU caught fire" in mlflow.artifacts.load_text(f"runs:/{run.run_id}/error/traceback.txt")
    assert logged.data.params["stage"] == "1"

    with pytest.raises(KeyboardInterrupt), tabtrack.start_run(experiment="boom", tracking_uri=store_uri) as stopped:
        raise KeyboardInterrupt
    assert client.get_run(stopped.run_id).info.status == "KILLED"


def test_sigterm_marks_a_script_run_killed(workdir, store_uri, client):
    script = workdir / "slow.py"
    script.write_text(
        textwrap.dedent(f"""
        import time, tabtrack
        with tabtrack.start_run(experiment="term", tracking_uri={store_uri!r}) as run:
            run.log_params({{"started": True}})
            run.log_metrics({{"ready": 1.0}})
            print(run.run_id, flush=True)
            time.sleep(120)
    """)
    )
    proc = subprocess.Popen([sys.executable, str(script)], cwd=workdir, stdout=subprocess.PIPE, text=True)
    run_id = proc.stdout.readline().strip()
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    logged = client.get_run(run_id)
    assert logged.info.status == "KILLED" and logged.data.params["started"] == "True"


def test_user_mlflow_calls_land_in_the_run_and_an_active_run_becomes_its_parent(store_uri, client):
    mlflow.set_tracking_uri(store_uri)
    mlflow.set_experiment("outer")
    with (
        mlflow.start_run(run_name="sweep") as outer,
        tabtrack.start_run(experiment="ignored", run_name="inner", tracking_uri=store_uri) as run,
    ):
        mlflow.log_param("flux_features_extracted", "true")
        mlflow.log_metric("users_own", 3.0)
    inner = client.get_run(run.run_id)
    assert inner.data.tags["mlflow.parentRunId"] == outer.info.run_id
    assert inner.info.experiment_id == outer.info.experiment_id
    assert inner.data.params["flux_features_extracted"] == "true" and inner.data.metrics["users_own"] == 3.0
    assert client.get_run(outer.info.run_id).info.status == "FINISHED"


def test_two_runs_in_one_process_as_a_notebook_makes_them(penguins, store_uri, client):
    _, X_train, X_test, y_train, y_test = penguins
    ids = []
    for estimator in (LogisticRegression(max_iter=1000), RandomForestClassifier(50, random_state=0)):
        with tabtrack.start_run(experiment="notebook", tracking_uri=store_uri, seed=0) as run:
            run.evaluate(users_pipeline(estimator).fit(X_train, y_train), X_test, y_test)
        ids.append(run.run_id)
    runs = {r.info.run_id: r for r in runs_of(client, "notebook")}
    assert set(runs) == set(ids) and {r.info.status for r in runs.values()} == {"FINISHED"}
    assert "mlflow.parentRunId" not in runs[ids[1]].data.tags


def test_log_epoch_buffers_the_curves_and_draws_the_losses(store_uri, client):
    with tabtrack.start_run(experiment="loop", tracking_uri=store_uri) as run:
        for epoch in range(1, 31):
            run.log_epoch(epoch, train_loss=1 / epoch, val_loss=1.2 / epoch, val_accuracy=1 - 1 / epoch)
    history = client.get_metric_history(run.run_id, "val_loss")
    assert sorted(m.step for m in history) == list(range(1, 31))
    assert "plots/loss_curve.png" in {a.path for a in client.list_artifacts(run.run_id, "plots")}


def test_cross_validate_logs_folds_as_train_cv_does(penguins, store_uri, client):
    _, X_train, _, y_train, _ = penguins
    with tabtrack.start_run(experiment="cv", tracking_uri=store_uri, seed=3) as run:
        scores = run.cross_validate(users_pipeline(), X_train, y_train, cv=4)
    folds = [r for r in runs_of(client, "cv") if r.data.tags.get("mlflow.parentRunId") == run.run_id]
    assert sorted(r.info.run_name for r in folds) == ["fold_1", "fold_2", "fold_3", "fold_4"]
    parent = client.get_run(run.run_id).data
    assert parent.metrics["cv_accuracy_mean"] == pytest.approx(scores["accuracy_mean"])
    assert parent.params["cv_folds"] == "4" and "cv_accuracy_std" in parent.metrics
    assert np.mean([f.data.metrics["cv_accuracy"] for f in folds]) == pytest.approx(scores["accuracy_mean"])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: (object(), d[1], d[3]), "has no predict"),
        (lambda d: (users_pipeline(), d[1], d[3]), "is not fitted"),
        (lambda d: (users_pipeline().fit(d[0], d[2]), d[1], d[3][:-5]), "has 86 rows but y has 81"),
        (
            lambda d: (users_pipeline().fit(d[0], d[2]), d[1], d[3].replace("Adelie", "Emperor")),
            "'Emperor' the model never saw",
        ),
    ],
    ids=["no predict", "unfitted", "lengths", "unseen labels"],
)
def test_evaluate_refuses_what_it_cannot_record(make, message, penguins, store_uri, client):
    _, X_train, X_test, y_train, y_test = penguins
    model, X, y = make((X_train, X_test, y_train, y_test))
    with (
        pytest.raises(TabtrackError, match=message),
        tabtrack.start_run(experiment="bad", tracking_uri=store_uri) as run,
    ):
        run.evaluate(model, X, y)
    assert client.get_run(run.run_id).info.status == "FAILED"


def test_a_class_outside_code_paths_is_refused_by_name(penguins, store_uri, client, workdir):
    _, X_train, X_test, y_train, y_test = penguins
    (workdir / "elsewhere").mkdir()
    (workdir / "elsewhere" / "odd_steps.py").write_text(
        "from sklearn.preprocessing import FunctionTransformer\nclass Passthrough(FunctionTransformer):\n    pass\n"
    )
    sys.path.insert(0, str(workdir / "elsewhere"))
    try:
        from odd_steps import Passthrough

        model = Pipeline([("odd", Passthrough()), ("rest", users_pipeline())]).fit(X_train, y_train)
        with (
            pytest.raises(TabtrackError, match=r"odd_steps\.Passthrough.*trusted_types="),
            tabtrack.start_run(experiment="trust", tracking_uri=store_uri) as run,
        ):
            run.evaluate(model, X_test, y_test)
        with tabtrack.start_run(experiment="trust", tracking_uri=store_uri, code_paths=["elsewhere"]) as shipped:
            result = shipped.evaluate(model, X_test, y_test)
        assert "odd_steps.Passthrough" in result.trusted_types
        assert client.get_run(shipped.run_id).data.tags["tabtrack.trusted_types"].count("odd_steps.Passthrough") == 1
    finally:
        sys.path.remove(str(workdir / "elsewhere"))
        sys.modules.pop("odd_steps", None)


def test_scikit_learns_own_idioms_pass_the_trust_check_and_load_back(penguins, store_uri, client):
    """make_column_selector (its dtype_include=object holds Python's `object`), a FunctionTransformer with a numpy
    function, a TransformedTargetRegressor: public scikit-learn, so trusted, and the model loads back through
    MLflow's own tools in a fresh process."""
    from sklearn.compose import TransformedTargetRegressor, make_column_selector
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import FunctionTransformer

    path, X_train, X_test, y_train, y_test = penguins
    selected = ColumnTransformer([
        ("numbers", Pipeline([("fill", SimpleImputer()), ("log", FunctionTransformer(np.log1p))]),
         make_column_selector(dtype_include=np.number)),
        ("words", Pipeline([("fill", SimpleImputer(strategy="most_frequent")),
                            ("encode", OneHotEncoder(handle_unknown="ignore"))]), make_column_selector(dtype_include=object)),
    ])  # fmt: skip
    classifier = Pipeline([("prep", selected), ("clf", LogisticRegression(max_iter=2000))]).fit(X_train, y_train)
    mass = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm"]
    regressor = TransformedTargetRegressor(
        regressor=Pipeline([("fill", SimpleImputer()), ("fit", Ridge())]), func=np.log, inverse_func=np.exp
    ).fit(X_train[mass], X_train["body_mass_g"].fillna(4000))
    uris = []
    for model, X, y in ((classifier, X_test, y_test), (regressor, X_test[mass], X_test["body_mass_g"].fillna(4000))):
        with tabtrack.start_run(experiment="idioms", tracking_uri=store_uri) as run:
            result = run.evaluate(model, X, y)
        assert client.get_run(run.run_id).info.status == "FINISHED"
        uris.append(result.model_uri)
    code = (
        f"import mlflow, pandas as pd; mlflow.set_tracking_uri({store_uri!r}); raw = pd.read_csv({str(path)!r}); "
        f"print(len(mlflow.pyfunc.load_model({uris[0]!r}).predict(raw)), "
        f"len(mlflow.pyfunc.load_model({uris[1]!r}).predict(raw)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.split()[-2:] == ["344", "344"]


def test_the_track_decorator_logs_scalar_arguments_and_masks_secrets(store_uri, client):
    @tabtrack.track(experiment="decorated", tracking_uri=store_uri)
    def main(n_estimators: int = 200, learning_rate: float = 0.1, api_key: str = "s3cr3t", data=None):
        run = tabtrack.active_run()
        run.log_metrics({"score": n_estimators * learning_rate})
        return run.run_id

    run_id = main(n_estimators=50, data=[1, 2])
    logged = client.get_run(run_id).data
    assert logged.params == {"n_estimators": "50", "learning_rate": "0.1", "api_key": "***"}
    assert logged.metrics["score"] == 5.0


def test_the_same_run_from_both_doors(penguins, store_uri, client):
    """tabtrack.train on a DataFrame with the user's Pipeline, and start_run + evaluate on the same data, split,
    model and seed: identical metric names and values."""
    path, *_ = penguins
    frame = pd.read_csv(path).drop(columns=["rownames"])
    X, y = frame.drop(columns=["species"]), frame["species"]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=42, stratify=y)
    model = users_pipeline(RandomForestClassifier(60, random_state=42))

    trained = tabtrack.train(frame, target="species", model=model, tracking_uri=store_uri, experiment="doors")
    with tabtrack.start_run(experiment="doors", tracking_uri=store_uri, seed=42) as run:
        from sklearn.base import clone

        run.evaluate(clone(model).fit(X_train, y_train), X_test, y_test, X_train=X_train, y_train=y_train)
    by_train, by_run = client.get_run(trained.run_id).data, client.get_run(run.run_id).data
    assert by_train.metrics == by_run.metrics
    assert by_train.tags["data.path"] == "dataframe" and len(by_train.tags["data.sha256"]) == 64
    assert by_train.params["model_type"] == "python:Pipeline" and by_train.params["clf__n_estimators"] == "60"
    # no tabtrack preprocessing around the user's Pipeline
    assert [name for name, _ in trained.pipeline.steps] == ["prep", "clf"]


@pytest.mark.fresh_store
def test_train_takes_a_factory_with_run_name_extra_params_and_code(workdir, data_dir):
    (workdir / "helpers.py").write_text(
        "from sklearn.base import BaseEstimator, TransformerMixin\n"
        "class Doubler(BaseEstimator, TransformerMixin):\n"
        "    def fit(self, X, y=None):\n        return self\n"
        "    def transform(self, X):\n        return X * 2\n"
    )
    (workdir / "models.py").write_text(
        "from sklearn.linear_model import LogisticRegression\nfrom sklearn.pipeline import Pipeline\n"
        "from helpers import Doubler\n"
        "def make(C=1.0):\n"
        "    return Pipeline([('double', Doubler()), ('model', LogisticRegression(C=C, max_iter=2000))])\n"
    )
    args = ["train", data_dir / "breast_cancer.csv", "--target", "target", "--model", "models.py:make",
            "--set", "model.params.C=0.5", "--run-name", "doubled", "--log-param", "flux_features_extracted=true"]  # fmt: skip
    refused = run_tabtrack(*args, cwd=workdir)
    # the class lives in helpers.py, which the model would not carry: refused before any run exists
    assert refused.returncode == 2 and "helpers.Doubler" in refused.stderr and "--code PATH" in refused.stderr
    assert not (workdir / "mlflow.db").exists()
    done = run_tabtrack(*args, "--code", "helpers.py", cwd=workdir)
    assert done.returncode == 0, done.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    (run,) = runs_of(client, "breast_cancer")
    assert run.info.run_name == "doubled" and run.data.params["flux_features_extracted"] == "true"
    assert run.data.params["model_type"] == "models.py:make" and run.data.params["model__C"] == "0.5"
    # the model ships models.py and helpers.py: a fresh interpreter in an empty folder loads it
    empty = workdir / "elsewhere"
    empty.mkdir()
    rows = pd.read_csv(data_dir / "breast_cancer.csv").drop(columns=["target"]).head(10)
    rows.to_csv(empty / "rows.csv", index=False)
    store = f"sqlite:///{workdir / 'mlflow.db'}"
    code = (
        f"import mlflow, pandas as pd; mlflow.set_tracking_uri({store!r}); "
        f"print(list(mlflow.pyfunc.load_model('runs:/{run.info.run_id}/model').predict(pd.read_csv('rows.csv'))))"
    )
    loaded = subprocess.run([sys.executable, "-I", "-c", code], cwd=empty, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert len(eval(loaded.stdout.strip().splitlines()[-1])) == 10


def test_register_and_promote_from_python(penguins, store_uri, client):
    _, X_train, X_test, y_train, y_test = penguins
    with tabtrack.start_run(experiment="reg", tracking_uri=store_uri) as run:
        run.evaluate(users_pipeline().fit(X_train, y_train), X_test, y_test)
    version = tabtrack.register(run.run_id, name="penguin-species", tracking_uri=store_uri)
    assert (
        tabtrack.promote("penguin-species", version=version.version, alias="champion", tracking_uri=store_uri)
        == "champion"
    )
    assert client.get_model_version_by_alias("penguin-species", "champion").tags["source_run_id"] == run.run_id


def test_a_pytorch_module_through_its_adapter(workdir, store_uri, client, data_dir):
    torch = pytest.importorskip("torch") if not os.environ.get("CI") else __import__("torch")
    (workdir / "nets.py").write_text(
        "import torch\n"
        "class Tiny(torch.nn.Module):\n"
        "    def __init__(self, width):\n"
        "        super().__init__()\n"
        "        self.layers = torch.nn.Sequential(torch.nn.Linear(width, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))\n"
        "    def forward(self, x):\n"
        "        return self.layers(x)\n"
    )
    sys.path.insert(0, str(workdir))
    try:
        from nets import Tiny

        frame = pd.read_csv(data_dir / "wine.csv")
        X, y = frame.drop(columns=["target"]), frame["target"]
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
        scaler = StandardScaler().fit(X_train)
        torch.manual_seed(0)
        net = Tiny(X.shape[1])
        optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
        features = torch.as_tensor(scaler.transform(X_train), dtype=torch.float32)
        labels = torch.as_tensor(y_train.to_numpy())
        with tabtrack.start_run(experiment="torch", tracking_uri=store_uri, code_paths=["nets.py"], seed=0) as run:
            for epoch in range(1, 61):
                optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(net(features), labels)
                loss.backward()
                optimizer.step()
                run.log_epoch(epoch, train_loss=loss.item())
            model = tabtrack.TorchModel(net, task="classification", preprocess=scaler, classes=[0, 1, 2])
            result = run.evaluate(model, X_test, y_test, X_train=X_train, y_train=y_train)
    finally:
        sys.path.remove(str(workdir))
        sys.modules.pop("nets", None)
    assert result.metrics["test"]["accuracy"] > 0.85
    experiment = client.get_run(run.run_id).info.experiment_id
    logged = {m.name: m for m in mlflow.search_logged_models([experiment], output_format="list")}
    assert set(logged) == {"model", "model_native"}
    assert "pytorch" in mlflow.models.get_model_info(logged["model_native"].model_uri).flavors
    assert "plots/loss_curve.png" in {a.path for a in client.list_artifacts(run.run_id, "plots")}
    # a fresh interpreter that cannot import nets.py (isolated, another folder) loads both from the store
    code = (
        f"import mlflow, pandas as pd; mlflow.set_tracking_uri({store_uri!r}); "
        f"rows = pd.read_csv({str(data_dir / 'wine.csv')!r}).drop(columns=['target']); "
        f"print([int(v) for v in mlflow.pyfunc.load_model({result.model_uri!r}).predict(rows)]); "
        f"import torch; print(isinstance(mlflow.pytorch.load_model({logged['model_native'].model_uri!r}), torch.nn.Module))"
    )
    (workdir / "away").mkdir()
    loaded = subprocess.run(
        [sys.executable, "-I", "-c", code], cwd=workdir / "away", capture_output=True, text=True, timeout=300
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    predictions, native = loaded.stdout.strip().splitlines()[-2:]
    assert eval(predictions) == [int(v) for v in model.predict(X)] and native == "True"
    # `tabtrack predict` there too: it keeps torch from skops' import, and the module's loading imports it
    done = run_tabtrack("predict", result.model_uri, data_dir / "wine.csv", "-o", "p.csv", "--tracking-uri", store_uri,
                        cwd=workdir / "away")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert pd.read_csv(workdir / "away" / "p.csv")["prediction"].tolist() == [int(v) for v in model.predict(X)]


def test_a_saved_torch_checkpoint_may_only_name_module_classes():
    pytest.importorskip("torch")
    from tabtrack_runtime.adapters import _module_class

    assert _module_class("torch.nn.modules.linear.Linear").__name__ == "Linear"
    for name in ("os.system", "builtins.eval", "subprocess.Popen"):
        with pytest.raises(TypeError, match=r"may only name torch\.nn\.Module subclasses"):
            _module_class(name)


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_a_native_booster_through_its_adapter_with_per_round_metrics(library, store_uri, client, data_dir):
    lib = pytest.importorskip(library)
    frame = pd.read_csv(data_dir / "breast_cancer.csv")
    X, y = frame.drop(columns=["target"]), frame["target"]
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    with tabtrack.start_run(experiment=f"booster-{library}", tracking_uri=store_uri) as run:
        if library == "xgboost":

            class LogRounds(lib.callback.TrainingCallback):
                def after_iteration(self, model, epoch, evals_log):
                    run.log_epoch(
                        epoch + 1, **{f"{d}_{m}": v[-1] for d, ms in evals_log.items() for m, v in ms.items()}
                    )
                    return False

            train, val = lib.DMatrix(X_train, y_train), lib.DMatrix(X_test, y_test)
            params = {"objective": "binary:logistic", "eval_metric": "logloss", "max_depth": 3, "seed": 0}
            booster = lib.train(params, train, num_boost_round=40, evals=[(val, "val")], callbacks=[LogRounds()])
        else:

            def log_rounds(env):
                run.log_epoch(env.iteration + 1, **{f"{d}_{m}": v for d, m, v, _ in env.evaluation_result_list})

            train = lib.Dataset(X_train, y_train)
            val = lib.Dataset(X_test, y_test, reference=train)
            params = {"objective": "binary", "verbose": -1, "seed": 0, "deterministic": True}
            booster = lib.train(
                params, train, num_boost_round=40, valid_sets=[val], valid_names=["val"], callbacks=[log_rounds]
            )
        model = tabtrack.BoosterModel(booster, task="classification", classes=[0, 1])
        result = run.evaluate(model, X_test, y_test, X_train=X_train, y_train=y_train)
    assert result.metrics["test"]["roc_auc"] > 0.97
    rounds = client.get_metric_history(run.run_id, "val_logloss" if library == "xgboost" else "val_binary_logloss")
    assert sorted(m.step for m in rounds) == list(range(1, 41))
    mlflow.set_tracking_uri(store_uri)
    np.testing.assert_array_equal(mlflow.pyfunc.load_model(result.model_uri).predict(X_test), model.predict(X_test))


SCRIPT = """
import argparse, pandas as pd, tabtrack
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split
parser = argparse.ArgumentParser()
parser.add_argument("--n-estimators", type=int, default=10)
parser.add_argument("--api-key", default=None)
args = parser.parse_args()
frame = pd.read_csv("data/wine.csv")
X, y = frame.drop(columns=["target"]), frame["target"]
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y, random_state=1)
with tabtrack.start_run(experiment="scripted", run_name="forest", data="data/wine.csv", seed=5) as run:
    model = RandomForestClassifier(n_estimators=args.n_estimators, random_state=5).fit(X_train, y_train)
    run.evaluate(model, X_test, y_test)
tabtrack.register(run.run_id, name="wine-forest")
print(run.run_id)
"""


def test_reproduce_reruns_a_script_run_and_leaves_the_registry_alone(git_repo, data_dir):
    (git_repo / "data").mkdir()
    (git_repo / "data" / "wine.csv").write_bytes((data_dir / "wine.csv").read_bytes())
    (git_repo / "src").mkdir()
    (git_repo / "src" / "train.py").write_text(SCRIPT)
    git(git_repo, "add", "-A")
    git(git_repo, "commit", "-qm", "project")
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([sys.executable, "src/train.py", "--n-estimators", "25"], cwd=git_repo, env=environment,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    original = done.stdout.strip().splitlines()[-1]
    client = MlflowClient(f"sqlite:///{git_repo / 'mlflow.db'}")
    tags = client.get_run(original).data.tags
    assert tags["tabtrack.entrypoint"] == "src/train.py" and tags["tabtrack.argv"] == '["--n-estimators", "25"]'
    assert tags["tabtrack.workdir"] == "."

    reproduced = run_tabtrack("reproduce", original, cwd=git_repo)
    assert reproduced.returncode == 0, reproduced.stdout + reproduced.stderr
    assert "reproduced: all" in reproduced.stdout
    (copy,) = [r for r in runs_of(client, "scripted") if r.data.tags.get("tabtrack.reproduces") == original]
    assert copy.info.run_name == "forest" and copy.data.tags["tabtrack.reproduced"] == "true"
    assert copy.data.params["n_estimators"] == "25"
    assert {k: v for k, v in copy.data.metrics.items() if k.startswith("test_")} == {
        k: v for k, v in client.get_run(original).data.metrics.items() if k.startswith("test_")
    }
    assert [str(v.version) for v in client.search_model_versions("name = 'wine-forest'")] == ["1"]  # the original's

    secret = subprocess.run([sys.executable, "src/train.py", "--api-key", "hunter2"], cwd=git_repo, env=environment,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert secret.returncode == 0, secret.stderr[-2000:]
    masked = secret.stdout.strip().splitlines()[-1]
    assert "hunter2" not in client.get_run(masked).data.tags["tabtrack.argv"]
    refused = run_tabtrack("reproduce", masked, cwd=git_repo)
    assert refused.returncode == 2 and "cannot be re-run as recorded" in refused.stderr


def test_offline_failover_writes_a_bundle_that_sync_uploads(penguins, store_uri, client):
    from tabtrack.tracking.sync import sync_bundles

    _, X_train, X_test, y_train, y_test = penguins
    unreachable = f"http://127.0.0.1:{free_port()}"
    with tabtrack.start_run(experiment="away", tracking_uri=unreachable, seed=2, params={"where": "train"}) as run:
        result = run.evaluate(users_pipeline().fit(X_train, y_train), X_test, y_test, X_train=X_train, y_train=y_train)
    assert run.offline_bundle and result.metrics["test"]["accuracy"] > 0.9
    report = sync_bundles(tracking_uri=store_uri)
    assert not report.failed and len(report.synced) == 1
    (synced,) = runs_of(client, "away")
    assert synced.info.status == "FINISHED" and synced.data.params["where"] == "train"
    assert synced.data.metrics["test_accuracy"] == pytest.approx(result.metrics["test"]["accuracy"])
    models = mlflow.search_logged_models([synced.info.experiment_id], output_format="list")
    assert [m.name for m in models if m.source_run_id == synced.info.run_id] == ["model"]


def test_artifacts_figures_and_every_command_on_an_own_code_run(penguins, store_uri, client, cli, workdir):
    """log_artifact and log_figure; diff, runs export, register, predict and serve take these runs as any."""
    from matplotlib.figure import Figure

    path, X_train, X_test, y_train, y_test = penguins
    (workdir / "notes").mkdir()
    (workdir / "notes" / "why.md").write_text("# the reasons\n")
    run_ids = []
    for C in (0.1, 1.0):
        with tabtrack.start_run(experiment="cmds", tracking_uri=store_uri, params={"C": C}, seed=0) as run:
            figure = Figure()
            figure.add_subplot().plot([1, 2, 3])
            run.log_figure(figure, "plots/custom.png")
            run.log_artifact(workdir / "notes")
            run.log_artifact(path, artifact_path="inputs")
            result = run.evaluate(
                users_pipeline(LogisticRegression(C=C, max_iter=1000)).fit(X_train, y_train), X_test, y_test
            )
        run_ids.append(run.run_id)
    listed = {a.path for folder in ("plots", "notes", "inputs") for a in client.list_artifacts(run_ids[1], folder)}
    assert {"plots/custom.png", "notes/why.md", f"inputs/{path.name}"} <= listed
    code, out, err = cli("diff", *run_ids, "--format", "json", "--tracking-uri", store_uri)
    assert code == 0, err
    assert any(row["name"] == "C" and row["changed"] for row in json.loads(out)["params"])
    code, out, err = cli("runs", "export", "--experiment", "cmds", "--tracking-uri", store_uri)
    assert code == 0 and len(pd.read_csv(io.StringIO(out))) == 2, err
    code, out, err = cli("register", run_ids[1], "--name", "own-species", "--tracking-uri", store_uri)
    assert code == 0 and "version 1" in out, err
    code, _, err = cli("predict", "models:/own-species/1", path, "-o", workdir / "p.csv", "--tracking-uri", store_uri)
    assert code == 0, err
    raw = pd.read_csv(path)
    expected = users_pipeline(LogisticRegression(C=1.0, max_iter=1000)).fit(X_train, y_train).predict(raw)
    assert list(pd.read_csv(workdir / "p.csv")["prediction"]) == list(expected)
    from fastapi.testclient import TestClient

    from tabtrack.serving.model import load
    from tabtrack.serving.service import _prepared_app

    records = json.loads(raw.head(5).drop(columns=["species", "rownames"]).to_json(orient="records"))
    answer = TestClient(_prepared_app(load("models:/own-species/1", tracking_uri=store_uri))).post(
        "/predict", json={"records": records}
    )
    assert answer.status_code == 200 and answer.json()["predictions"] == list(expected[:5])
    assert result.model_uri
