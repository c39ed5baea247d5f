"""A portable model: `train/compare/tune --onnx` log `model_onnx` (the whole pipeline as ONNX, checked on the test
split), `tabtrack export` writes it as one file, `serve --runtime onnx` answers from it. Console scripts, real
tables (text and numbers with gaps, string labels, a test value sitting exactly on a tree's threshold), and the
graph checked with ONNX Runtime directly on the raw file's rows against the logged scikit-learn model."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request

import numpy as np
import pandas as pd
import pytest

import real_tables
from conftest import TABTRACK, free_port, require, run_tabtrack, wait_for_http

pytestmark = pytest.mark.multiprocess


@pytest.fixture(scope="session", autouse=True)
def _onnx_extra():
    """Skipped where the onnx extra is absent (a failure in CI, which installs it)."""
    require("skl2onnx")


def _session(path):
    """ONNX Runtime itself, without tabtrack (skipped where the onnx extra is absent, except in CI)."""
    return require("onnxruntime").InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _train(folder, path, target, model, *extra):
    done = run_tabtrack("train", path, "-t", target, "--model", model, "--set", "drop_columns=[rownames]", "--onnx",
                        *extra, cwd=folder)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """titanic v1 (HistGradientBoosting: text, a float with gaps; test ages fall exactly on its thresholds),
    penguins (XGBoost, three string labels, text with gaps), CPS1985 wages (LightGBM regression) and titanic v2
    (the PyTorch MLP, which no converter handles). Trained once for both xdist workers (a lock in the folder they
    share); the tests only read the store, but for export's run without a model."""
    from filelock import FileLock

    folder = tmp_path_factory.getbasetemp().parent / "onnx-trained"
    paths = {name: folder / f"{name}.csv" for name in ("titanicsurvival", "penguins", "cps1985")}
    with FileLock(str(folder) + ".lock"):
        if not (folder / "mlp.stderr").exists():
            folder.mkdir(exist_ok=True)
            for name in paths:
                real_tables.write(real_tables.TABLES[name], folder)
            _train(folder, paths["titanicsurvival"], "survived", "hist_gradient_boosting", "--register", "titanic")
            _train(folder, paths["penguins"], "species", "xgboost")
            _train(folder, paths["cps1985"], "wage", "lightgbm")
            mlp = _train(folder, paths["titanicsurvival"], "survived", "mlp", "--register", "titanic",
                         "--set", "model.params.epochs=5")  # fmt: skip
            (folder / "mlp.stderr").write_text(mlp.stderr)
    return folder, paths, (folder / "mlp.stderr").read_text()


def _runs(folder):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    return {run.data.params["model_type"]: run for run in mlflow.search_runs(search_all_experiments=True, output_format="list")
            if "model_type" in run.data.params}  # fmt: skip


def _feeds(raw: pd.DataFrame, session) -> dict[str, np.ndarray]:
    """The graph's inputs from the raw file's rows, built here without tabtrack: numbers as float64, text as str
    with "" for a gap."""
    feeds = {}
    for spec in session.get_inputs():
        values = raw[spec.name]
        if spec.type == "tensor(double)":
            feeds[spec.name] = values.to_numpy(dtype="float64")
        else:
            feeds[spec.name] = values.astype(object).where(values.notna(), "").astype(str).to_numpy()
    return feeds


@pytest.mark.parametrize(("model", "table", "target"), [("hist_gradient_boosting", "titanicsurvival", "survived"),
                                                        ("xgboost", "penguins", "species"), ("lightgbm", "cps1985", "wage")])  # fmt: skip
def test_model_onnx_answers_like_the_model_on_every_row_of_the_raw_file(trained, model, table, target):
    import mlflow

    folder, paths, _ = trained
    run = _runs(folder)[model]
    # the test split and 8 probe rows (all missing, numbers far out, unseen categories)
    assert run.data.metrics["onnx_verified_rows"] == float(run.data.params["n_test_samples"]) + 8
    assert run.data.metrics["onnx_max_difference"] <= 1e-4
    raw = real_tables.read(paths[table])
    local = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model_onnx")
    session = _session(f"{local}/model.onnx")
    answers = dict(zip([o.name for o in session.get_outputs()], session.run(None, _feeds(raw, session)), strict=True))
    sklearn_model = mlflow.sklearn.load_model(f"runs:/{run.info.run_id}/model")
    if target == "wage":
        expected = sklearn_model.predict(raw)
        assert np.max(np.abs(answers["variable"].ravel() - expected) / np.maximum(1, np.abs(expected))) < 1e-4
        return
    proba = sklearn_model.predict_proba(raw)
    classes = list(sklearn_model.classes_)
    assert sorted(answers) == sorted(["label", *(f"probability_{c}" for c in classes)])
    got = np.hstack([answers[f"probability_{c}"] for c in classes])
    assert np.max(np.abs(got - proba)) < 1e-4
    assert list(answers["label"]) == list(np.asarray(classes)[proba.argmax(axis=1)])
    if target == "species":
        assert raw["sex"].isna().any() and run.data.metrics["onnx_same_labels"] == 1.0
    # MLflow's own onnx flavor: one column per input, one output column per class. It converts nothing, so numbers
    # go as float64 (its schema check will not turn int64 into float64) and text as object with "" for a gap (its
    # wrapper hands pandas 3's Arrow-backed text to ONNX Runtime, which takes numpy arrays only).
    typed = pd.DataFrame({c: v.astype("float64") if pd.api.types.is_numeric_dtype(v) else v.astype(object).fillna("")
                          for c, v in raw.items()})  # fmt: skip
    frame = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model_onnx").predict(typed)
    assert list(frame["label"]) == list(answers["label"])


def test_a_family_without_a_converter_is_one_line_and_the_run_is_otherwise_complete(trained):
    folder, _, mlp = trained
    lines = [line for line in mlp.splitlines() if "model_onnx" in line]
    assert lines == ["WARNING: model_onnx not logged (the run is otherwise complete): cannot convert step 'model' "
                     "(TorchMLPClassifier) to ONNX: neither skl2onnx nor onnxmltools has a converter for it."]  # fmt: skip
    run = _runs(folder)["mlp"]
    assert run.info.status == "FINISHED" and "onnx.error" in run.data.tags and "test_accuracy" in run.data.metrics
    assert not any(k.startswith("onnx_") for k in run.data.metrics)


def test_export_writes_the_checked_file_and_refuses_bad_inputs_in_one_line(trained, tmp_path):
    import mlflow

    folder, paths, _ = trained
    done = run_tabtrack("export", "titanic/1", "--format", "onnx", "-o", str(tmp_path / "titanic.onnx"), cwd=folder)
    assert done.returncode == 0, done.stderr
    n_test = _runs(folder)["hist_gradient_boosting"].data.params["n_test_samples"]
    assert f"checked on the run's {n_test} test rows and 8 probe rows: same label on 100.00% of rows" in done.stdout
    assert "inputs: sex (text), age (number), passengerClass (text)" in done.stdout
    session = _session(tmp_path / "titanic.onnx")
    raw = real_tables.read(paths["titanicsurvival"])
    expected = mlflow.sklearn.load_model("models:/titanic/1").predict_proba(raw)[:, 1]
    assert np.max(np.abs(session.run(["probability_yes"], _feeds(raw, session))[0].ravel() - expected)) < 1e-4

    with mlflow.start_run(experiment_id="0") as bare:
        mlflow.log_param("a", 1)
    for args, says in [((bare.info.run_id,), f"run {bare.info.run_id} has no model to export"),
                       (("titanic/1", "--format", "pmml"), "unknown format 'pmml'; use onnx.")]:  # fmt: skip
        done = run_tabtrack("export", *args, cwd=folder)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and says in done.stderr, done.stderr


def _serve(folder, model: str, use):
    """`tabtrack serve MODEL` as users start it (default runtime): `use(base_url)` once it is healthy, then stopped.
    Returns what `use` returned and what serve printed."""
    port = free_port()
    proc = subprocess.Popen([TABTRACK, "serve", model, "--port", str(port), "--log-predictions", "off"],
                            cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", proc, what=f"tabtrack serve {model}")
        result = use(f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        printed, _ = proc.communicate(timeout=60)
    return result, printed


def _get(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_serve_answers_from_model_onnx_and_serves_a_model_no_converter_handles_with_scikit_learn(trained):
    import mlflow

    folder, paths, _ = trained
    raw = real_tables.read(paths["titanicsurvival"])
    records = json.loads(raw.drop(columns=["rownames", "survived"]).iloc[:200].to_json(orient="records"))
    # no --runtime: auto, i.e. model_onnx where the run logged one
    (health, body), printed = _serve(folder, "titanic/1", lambda base: (_get(f"{base}/health"),
                                                                  _get(f"{base}/predict", {"records": records})))  # fmt: skip
    assert health["runtime"] == "onnx" and "answers from ONNX Runtime (the run's model_onnx)" in printed
    proba = mlflow.sklearn.load_model("models:/titanic/1").predict_proba(raw.iloc[:200])
    assert np.max(np.abs(np.array([p["yes"] for p in body["probabilities"]]) - proba[:, 1])) < 1e-4
    assert body["predictions"] == list(np.where(proba[:, 1] > proba[:, 0], "yes", "no"))

    # The MLP: --runtime onnx refuses to start in one line; the default serves it with scikit-learn, saying why.
    done = run_tabtrack("serve", "titanic/2", "--runtime", "onnx", cwd=folder, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert (
        "cannot serve models:/titanic/2 with ONNX Runtime: cannot convert step 'model' (TorchMLPClassifier)"
        in done.stderr
    )
    health, printed = _serve(folder, "titanic/2", lambda base: _get(f"{base}/health"))
    assert health["runtime"] == "sklearn"
    assert "answers from scikit-learn (not ONNX Runtime: cannot convert step 'model' (TorchMLPClassifier)" in printed


def test_compare_and_tune_log_model_onnx_for_each_model_they_keep(workdir):
    path = real_tables.write(real_tables.TABLES["penguins"], workdir)
    done = run_tabtrack("compare", path, "-t", "species", "--models", "random_forest,logistic_regression", "--cv", "2",
                        "--set", "drop_columns=[rownames]", "--onnx", "-e", "cmp", cwd=workdir)  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = run_tabtrack("tune", path, "-t", "species", "--model", "logistic_regression", "--trials", "2", "--cv", "2",
                        "--set", "drop_columns=[rownames]", "--onnx", "-e", "tuned", cwd=workdir)  # fmt: skip
    assert done.returncode == 0, done.stderr
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    experiments = [mlflow.get_experiment_by_name(name).experiment_id for name in ("cmp", "tuned")]
    names: dict[str, set] = {}
    for logged in mlflow.search_logged_models(experiment_ids=experiments, output_format="list"):
        names.setdefault(logged.source_run_id, set()).add(logged.name)
    with_model = {run_id: found for run_id, found in names.items() if "model" in found}
    assert len(with_model) == 3  # two compared models and the tuned refit
    for run_id, found in with_model.items():
        assert "model_onnx" in found and mlflow.get_run(run_id).data.metrics["onnx_same_labels"] == 1.0


def test_own_code_pipeline_converts_or_names_the_step_that_cannot(workdir):
    path = real_tables.write(real_tables.TABLES["titanicsurvival"], workdir)
    (workdir / "steps.py").write_text(
        textwrap.dedent("""
        from sklearn.base import BaseEstimator, TransformerMixin

        class Doubled(BaseEstimator, TransformerMixin):
            def fit(self, X, y=None):
                self.n_features_in_ = X.shape[1]
                return self

            def transform(self, X):
                return X * 2
    """)
    )
    script = textwrap.dedent(f"""
        import pandas as pd
        from sklearn.compose import ColumnTransformer
        from sklearn.ensemble import GradientBoostingClassifier
        from sklearn.impute import SimpleImputer
        from sklearn.model_selection import train_test_split
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder
        import tabtrack
        from steps import Doubled

        raw = pd.read_csv({str(path)!r})
        X, y = raw[["age", "sex", "passengerClass"]], raw["survived"]
        X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
        for name, numbers in (("plain", SimpleImputer()), ("custom", Pipeline([("impute", SimpleImputer()), ("twice", Doubled())]))):
            prep = ColumnTransformer([("num", numbers, ["age"]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["sex", "passengerClass"])])
            model = Pipeline([("prep", prep), ("gbm", GradientBoostingClassifier(random_state=0))]).fit(X_train, y_train)
            with tabtrack.start_run(experiment="own", run_name=name, code_paths=["steps.py"]) as run:
                run.evaluate(model, X_test, y_test, X_train=X_train, y_train=y_train, onnx=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "cannot convert step 'prep > num > twice' (Doubled) to ONNX" in done.stderr
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = {r.info.run_name: r for r in mlflow.search_runs(experiment_names=["own"], output_format="list")}
    assert (
        runs["plain"].data.metrics["onnx_same_labels"] == 1.0
        and runs["plain"].data.metrics["onnx_max_difference"] < 1e-4
    )
    assert "onnx_same_labels" not in runs["custom"].data.metrics and "onnx.error" in runs["custom"].data.tags
    # export of a run whose rows were handed over in memory: checked on the model's input example
    done = run_tabtrack("export", runs["plain"].info.run_id, "-o", "plain.onnx", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert "checked on the model's input example (the run's data file is not where it was, unchanged)" in done.stdout
    done = run_tabtrack("export", runs["custom"].info.run_id, "-o", "custom.onnx", cwd=workdir)
    assert done.returncode == 2 and done.stderr.strip().endswith("(Doubled) to ONNX: neither skl2onnx nor onnxmltools "
                                                                 "has a converter for it.")  # fmt: skip


def test_onnx_without_the_extra_is_refused_before_anything_trains(workdir):
    """Where skl2onnx is not installed (here: hidden from the import system, as find_spec then reports it), train
    --onnx stops in one line naming the install command, exit 2, before any run exists."""
    import mlflow

    path = real_tables.write(real_tables.TABLES["penguins"], workdir)
    without = (
        "import sys; sys.modules['skl2onnx'] = None; from tabtrack.cli import main; sys.argv[0] = 'tabtrack'; main()"
    )
    done = subprocess.run([sys.executable, "-c", without, "train", str(path), "-t", "species", "--onnx", "--set", "drop_columns=[rownames]"],
                          cwd=workdir, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert (
        "--onnx (model_onnx) needs skl2onnx: pip install 'tabtrack[onnx]' (or drop --onnx / onnx: true)." in done.stderr
    )
    if (workdir / "mlflow.db").exists():
        mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
        assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


@pytest.mark.parametrize("handle_unknown", ["infrequent_if_exist", "ignore", "warn"])
def test_unseen_and_infrequent_categories_encode_as_in_scikit_learn(handle_unknown):
    """tabtrack's one-hot encoder groups a column's categories beyond max_categories (skl2onnx converts neither the
    group nor an unseen category): the graph answers like the pipeline on rows with unseen categories, which under
    handle_unknown="ignore" are all zeros and otherwise join the group. A linear model, so a one-hot column moves
    every probability."""
    import warnings

    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from tabtrack.models import portable

    rng = np.random.default_rng(0)
    shops = [f"shop{i}" for i in range(40)]
    X = pd.DataFrame({"shop": rng.choice(shops, 600, p=np.r_[np.full(5, 0.15), np.full(35, 0.25 / 35)]),
                      "city": rng.choice(["paris", "lyon", "nice"], 600), "x": rng.normal(size=600)})  # fmt: skip
    y = (X["shop"].isin(["shop0", "shop1"]) ^ (X["x"] > 0)).astype(int)
    encoder = OneHotEncoder(handle_unknown=handle_unknown, max_categories=6, sparse_output=False)
    text = Pipeline([("impute", SimpleImputer(strategy="most_frequent")), ("onehot", encoder)])
    prep = ColumnTransformer([("cat", text, ["shop", "city"]), ("num", SimpleImputer(), ["x"])])
    model = Pipeline([("prep", prep), ("model", LogisticRegression())]).fit(X, y)
    fitted = model["prep"].named_transformers_["cat"]["onehot"]  # (the column transformer fits a clone)
    assert fitted.infrequent_categories_[0] is not None and fitted.infrequent_categories_[1] is None
    rows = X.copy()
    rows.loc[:20, "shop"], rows.loc[15:30, "city"] = "never seen", "lille"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "warn": scikit-learn's own warning about unseen categories
        converted = portable.convert(model, X)
        checked, probes = portable.with_probe_rows(model, rows, converted.inputs)
        check = portable.verify(converted, model, checked)
    assert probes == 8 and check.passed and check.max_difference < 1e-6, check.summary()


def test_a_missing_value_learnt_as_a_category_is_that_category_in_the_graph(tmp_path):
    """A user's OneHotEncoder fitted on text with gaps learns NaN as a category; the graph receives a gap as "" and
    must land in that same column (found by a linear model on penguins' sex: 0.006 apart before)."""
    from sklearn.compose import make_column_selector, make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from tabtrack.models import portable

    frame = real_tables.read(real_tables.write(real_tables.TABLES["penguins"], tmp_path)).drop(columns=["rownames"])
    X, y = frame.drop(columns=["species"]), frame["species"]
    encode = make_column_transformer((OneHotEncoder(handle_unknown="ignore"), make_column_selector(dtype_include=object)),
                                     (SimpleImputer(), make_column_selector(dtype_include="number")))  # fmt: skip
    model = make_pipeline(encode, LogisticRegression(max_iter=2000)).fit(X, y)
    assert any(pd.isna(c) for c in model[0].transformers_[0][1].categories_[1])  # sex: female, male, NaN
    converted = portable.convert(model, X)
    check = portable.verify(converted, model, X[X["sex"].isna()])
    assert check.rows > 0 and check.passed and check.max_difference < 1e-9, check.summary()
