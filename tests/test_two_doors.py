"""One recorder for both doors: the same data, split, model and seed trained through `tabtrack train` (the console
script) and through `tabtrack.start_run` + `Run.evaluate` (a script in a fresh process) give runs with the same
tag keys (but `tabtrack.kind` and the script's entry point), param names, metric names and values, artifact
paths, dataset inputs, fold runs and model code."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow import MlflowClient

import real_tables
from conftest import run_tabtrack, runs_of

RUNTIME = ("__init__", "raw_input", "label_encoded", "torch_mlp", "adapters", "intervals", "interval_pyfunc")

FACTORY = """
import numpy as np
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def make():
    numbers = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    words = make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore"))
    prepare = ColumnTransformer([("numbers", numbers, make_column_selector(dtype_include=np.number)),
                                 ("words", words, make_column_selector(dtype_include=object))])
    return Pipeline([("prepare", prepare), ("forest", RandomForestClassifier(n_estimators=40, random_state=7))])
"""

# The script builds the model the train door builds: the user's factory, or the random_forest family's pipeline
# (tabtrack's input step and preprocessing around the same forest).
SCRIPT = """
import sys
import pandas as pd
import tabtrack
from sklearn.model_selection import train_test_split

case = sys.argv[1]
frame = pd.read_csv("penguins.csv")
X, y = frame.drop(columns=["species"]), frame["species"]
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=7, stratify=y)
if case == "factory":
    from model import make
else:
    from sklearn.ensemble import RandomForestClassifier
    from tabtrack.data.prepare import feature_kinds
    from tabtrack.models.pipeline import build_pipeline

    def make():
        numeric, categorical = feature_kinds(X)
        forest = RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=7)
        return build_pipeline(forest, numeric=numeric, categorical=categorical, columns=X.columns)

code = ["model.py"] if case == "factory" else []
with tabtrack.start_run(experiment="doors", data="penguins.csv", seed=7, code_paths=code) as run:
    run.cross_validate(make(), X_train, y_train, cv=3)
    run.evaluate(make().fit(X_train, y_train), X_test, y_test, X_train=X_train, y_train=y_train)
print(run.run_id)
"""


def _artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def _record(client, run):
    folds = sorted(
        (r for r in runs_of(client, "doors") if r.data.tags.get("mlflow.parentRunId") == run.info.run_id),
        key=lambda r: r.info.run_name,
    )
    contexts = sorted(
        next(t.value for t in d.tags if t.key == "mlflow.data.context") for d in run.inputs.dataset_inputs
    )
    return {
        "tags": set(run.data.tags) - {"tabtrack.entrypoint", "tabtrack.argv", "tabtrack.workdir"},
        "params": set(run.data.params),
        "metrics": run.data.metrics,
        "artifacts": _artifacts(client, run.info.run_id),
        "datasets": contexts,
        "folds": [(f.info.run_name, set(f.data.params), f.data.metrics) for f in folds],
    }


@pytest.mark.parametrize("case", ["factory", "family"])
def test_both_doors_record_the_same_run(case, workdir, store_uri):
    real_tables.load(real_tables.TABLES["penguins"]).drop(columns=["rownames"]).to_csv(
        workdir / "penguins.csv", index=False
    )
    (workdir / "model.py").write_text(FACTORY)
    (workdir / "own.py").write_text(textwrap.dedent(SCRIPT))
    model = ["--model", "model.py:make", "--code", "model.py"] if case == "factory" else ["--model", "random_forest"]
    done = run_tabtrack(
        "train", "penguins.csv", "--target", "species", *model, "--seed", "7",
        "--cv", "3", "--experiment", "doors", cwd=workdir,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    own = subprocess.run([sys.executable, "own.py", case], cwd=workdir, capture_output=True, text=True, timeout=600)
    assert own.returncode == 0, own.stderr[-2000:]

    client = MlflowClient(store_uri)
    runs = {
        r.data.tags["tabtrack.kind"]: r for r in runs_of(client, "doors") if "mlflow.parentRunId" not in r.data.tags
    }
    assert set(runs) == {"train", "own_code"} and runs["own_code"].info.run_id == own.stdout.split()[-1]
    by_train, by_own = _record(client, runs["train"]), _record(client, runs["own_code"])
    assert by_train["tags"] == by_own["tags"]
    assert by_train["params"] == by_own["params"]
    assert by_train["metrics"] == by_own["metrics"]  # names and values: train, cv and test
    assert by_train["artifacts"] == by_own["artifacts"]
    assert by_train["datasets"] == by_own["datasets"] == ["source", "test", "training"]
    assert by_train["folds"] == by_own["folds"] and len(by_train["folds"]) == 3
    assert {"config/resolved.yaml", "env/requirements.txt", "data_validation.json", "report.html",
            "monitoring/reference.json"} <= by_train["artifacts"]  # fmt: skip
    # the same reference for monitor from both doors, and no raw rows in it unless a config asks for them
    references = []
    for kind, run in runs.items():
        (workdir / kind).mkdir()
        saved = client.download_artifacts(run.info.run_id, "monitoring/reference.json", str(workdir / kind))
        references.append(json.loads(Path(saved).read_text()))
    assert references[0] == references[1] and "sample" not in references[0]
    assert set(references[0]["columns"]) == {"island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm",
                                             "body_mass_g", "sex", "year"}  # fmt: skip
    assert set(references[0]["predictions"]["proba"]) == {"Adelie", "Chinstrap", "Gentoo"}
    assert {"tabtrack.trusted_types", "data.sha256", "data.validation_warnings"} <= by_train["tags"]
    assert {"target", "test_size", "random_state", "cv_folds", "n_numeric_features", "n_classes"} <= by_train["params"]

    # the models carry the same code: the factory's file, and tabtrack_runtime where a type comes from it
    import mlflow

    mlflow.set_tracking_uri(store_uri)
    shipped = []
    for run in runs.values():
        folder = Path(
            mlflow.artifacts.download_artifacts(
                f"runs:/{run.info.run_id}/model", dst_path=str(workdir / run.info.run_id)
            )
        )
        shipped.append(sorted(p.relative_to(folder / "code").as_posix() for p in (folder / "code").rglob("*.py")))
    assert shipped[0] == shipped[1]
    assert shipped[0] == (["model.py"] if case == "factory" else sorted(f"tabtrack_runtime/{m}.py" for m in RUNTIME))
