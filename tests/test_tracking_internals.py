"""The tracking layer's structure and its one remaining private MLflow call, each checked so a change fails here.

- `tracking/` has no import circles: what the MLflow adapter, offline bundles and `sync` share lives in
  `mlflow_io`, which imports none of them.
- `MlflowTracker` drops a run from MLflow's fluent stack when the server is gone (`mlflow.end_run` pops
  it only after the server took the end status): the stack must still be where it looks.
- A tracked `tabtrack train` leaves no process behind.
- A scikit-learn model is saved in a forked child while it is evaluated, then logged through MLflow's public
  `Model.log` with a flavor that moves the saved folder in: the MLflow model is the one `mlflow.sklearn.log_model`
  writes, and the calling process never loads it (MLflow honours `validate_serving_input=False`).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import mlflow

import real_tables
import tabtrack.tracking
from conftest import run_tabtrack

TRACKING = Path(tabtrack.tracking.__file__).parent


def _imports(path: Path) -> set[str]:
    """The tabtrack.tracking modules a module imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tabtrack.tracking."):
            found.add(node.module.removeprefix("tabtrack.tracking."))
        elif isinstance(node, ast.Import):
            found |= {
                a.name.removeprefix("tabtrack.tracking.") for a in node.names if a.name.startswith("tabtrack.tracking.")
            }
    return found


def test_tracking_has_no_import_circles():
    graph = {path.stem: _imports(path) for path in TRACKING.glob("*.py") if path.stem != "__init__"}
    assert "mlflow_tracker" not in graph["offline"] | graph["sync"] | graph["mlflow_io"]

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    assert [module for module in graph if reaches(module, module, set())] == []
    assert not {"agent", "worker", "skops_save"} & set(graph)  # the tracking agent is gone


def test_mlflows_fluent_run_stack_is_where_the_offline_failover_drops_a_run(tmp_path):
    from mlflow.tracking import fluent

    from tabtrack.tracking.mlflow_tracker import _forget_fluent_run

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # An explicit experiment: an earlier test in this worker may have left MLflow's active one set.
    experiment_id = mlflow.MlflowClient().create_experiment("fluent-stack")
    run = mlflow.start_run(experiment_id=experiment_id)
    try:
        stack = fluent._active_run_stack.get()
        assert [r.info.run_id for r in stack] == [run.info.run_id]
        _forget_fluent_run(run.info.run_id)
        assert mlflow.active_run() is None
    finally:
        mlflow.MlflowClient().set_terminated(run.info.run_id)


def test_a_tracked_train_leaves_no_process_behind(tmp_path, data_dir):
    marker = uuid.uuid4().hex  # inherited by every process the command starts
    done = run_tabtrack(
        "train", data_dir / "wine.csv", "--target", "target", cwd=tmp_path, env={"TABTRACK_TEST_MARKER": marker}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    survivors = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if f"TABTRACK_TEST_MARKER={marker}".encode() in (proc / "environ").read_bytes():
                survivors.append((proc.name, (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except OSError:
            continue
    assert survivors == [], survivors
    assert os.environ.get("TABTRACK_TEST_MARKER") != marker


IDENTITY = ("artifact_path", "run_id", "model_uuid", "model_id", "utc_time_created")


def _mlmodel(model_uri: str) -> dict:
    from mlflow.models import Model

    return {k: v for k, v in Model.load(model_uri).to_dict().items() if k not in IDENTITY}


def test_a_model_saved_ahead_is_logged_as_mlflow_would_log_it(tmp_path):
    """The two ways mlflow_io logs a model give the same MLflow model: if MLflow's save adds a field that
    `_SavedFlavor` does not carry over, or `Model.log` calls its flavor differently, this fails."""
    from sklearn.ensemble import RandomForestClassifier

    from tabtrack.models.pipeline import build_pipeline
    from tabtrack.tracking.base import ModelArtifact
    from tabtrack.tracking.mlflow_io import log_model, save_and_check

    frame = real_tables.read(real_tables.write(real_tables.TABLES["penguins"], tmp_path))
    X, y = frame.drop(columns=["species"]), frame["species"]
    numeric = [c for c in X.columns if X[c].dtype.kind in "if"]
    categorical = [c for c in X.columns if c not in numeric]
    model = build_pipeline(RandomForestClassifier(n_estimators=5, random_state=0), numeric=numeric,
                           categorical=categorical, columns=X.columns).fit(X, y)  # fmt: skip
    head = X.head(5)
    artifact = ModelArtifact(
        model=model, flavor="sklearn", input_example=head, output_example=model.predict(head),
        input_columns=list(X.columns), pip_requirements=["scikit-learn", "skops"],
        trusted_types=["numpy.dtype", "numpy.median", "tabtrack_runtime.raw_input.RawInput", "sklearn.tree._tree.Tree"],
        code_paths=[str(Path(tabtrack.__file__).parent)],
    )  # fmt: skip
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = mlflow.MlflowClient().create_experiment("saved-ahead")
    with mlflow.start_run(experiment_id=experiment_id):
        direct = log_model(artifact)
        save_and_check(artifact, tmp_path / "saved")
        ahead = log_model(artifact, tmp_path / "saved")
    assert _mlmodel(ahead.model_uri) == _mlmodel(direct.model_uri)
    assert ahead.flavors == direct.flavors and ahead.signature == direct.signature
    client = mlflow.MlflowClient()
    first, second = client.get_logged_model(direct.model_id), client.get_logged_model(ahead.model_id)
    assert (second.source_run_id, second.tags, second.params) == (first.source_run_id, first.tags, first.params)
    assert not (tmp_path / "saved").exists()  # moved into the logged model, not copied
    loaded = mlflow.pyfunc.load_model(ahead.model_uri)
    assert list(loaded.predict(X)) == list(model.predict(X))


AHEAD_SCRIPT = """
import glob, json, multiprocessing, os, sys, tempfile
import pandas as pd
import tabtrack
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import train_test_split
from tabtrack.models.pipeline import PREPROCESSING_TRUSTED_TYPES, build_pipeline
from tabtrack.models.families import get_spec
from tabtrack.tracking import ModelArtifact, make_tracker

frame = pd.read_csv(sys.argv[1])
X, y = frame.drop(columns=["species"]), frame["species"]
numeric = [c for c in X.columns if X[c].dtype.kind in "if"]
model = build_pipeline(HistGradientBoostingClassifier(max_iter=20), numeric=numeric,
                       categorical=[c for c in X.columns if c not in numeric], columns=X.columns)
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0, stratify=y)
model.fit(X_train, y_train)  # OpenMP ran here: the child that saves the model must not start OpenMP threads
head = X_train.head(5)
artifact = ModelArtifact(
    model=model, flavor="sklearn", input_example=head, output_example=model.predict(head),
    input_columns=list(X.columns), pip_requirements=["scikit-learn", "skops"],
    trusted_types=[*PREPROCESSING_TRUSTED_TYPES, *get_spec("hist_gradient_boosting").all_trusted_types],
    code_paths=[os.path.dirname(tabtrack.__file__)],
)
out = {}
with make_tracker(track=True).run(experiment="ahead", run_name="saved-ahead") as run:
    run.save_model_ahead(artifact)
    out["savers"] = len(multiprocessing.active_children())
    out["model_uri"], out["run_id"] = run.log_model(artifact), run.run_id
out["skops_in_caller"] = "skops.io" in sys.modules

# A saver that dies (killed, out of memory): the model is saved in this process instead.
with make_tracker(track=True).run(experiment="ahead", run_name="saver-killed") as run:
    run.save_model_ahead(artifact)
    for saver in multiprocessing.active_children():
        saver.kill()
    out["killed_uri"], out["killed_run_id"] = run.log_model(artifact), run.run_id

# A run that fails before its model is logged leaves no saver and no saved folder behind.
try:
    with make_tracker(track=True).run(experiment="ahead", run_name="failed") as run:
        run.save_model_ahead(artifact)
        out["failed_run_id"] = run.run_id
        raise RuntimeError("evaluation broke")
except RuntimeError:
    pass
out["children_left"] = len(multiprocessing.active_children())
out["folders_left"] = glob.glob(os.path.join(tempfile.gettempdir(), "tabtrack-model-*"))

# The public API: an evaluated model is saved ahead the same way.
with tabtrack.start_run(experiment="ahead", run_name="evaluated") as run:
    result = run.evaluate(model, X_test, y_test, X_train=X_train, y_train=y_train)
out["evaluated_uri"], out["evaluated_run_id"] = result.model_uri, result.run_id
print(json.dumps(out))
"""


def test_a_model_is_saved_in_a_child_beside_its_evaluation_and_logged_whole(tmp_path):
    """In a fresh process on a real table: the model (HistGradientBoosting: OpenMP ran before the fork) is
    saved and its input example served in a child, so the caller never imports skops; a killed saver costs
    only the head start; a failed run cleans up; `run.evaluate` takes the same path. Each model is then
    loaded by MLflow's own pyfunc loader and predicts the raw rows."""
    data = real_tables.write(real_tables.TABLES["penguins"], tmp_path)
    (tmp_path / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(AHEAD_SCRIPT), str(data)], cwd=tmp_path, capture_output=True,
        text=True, timeout=600, env={**env, "TMPDIR": str(tmp_path / "tmp")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["savers"] == 1
    assert out["skops_in_caller"] is False, "the caller loaded the model: MLflow validated it in this process"
    assert (out["children_left"], out["folders_left"]) == (0, [])
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    for run_id in (out["run_id"], out["killed_run_id"], out["evaluated_run_id"]):
        assert client.get_run(run_id).info.status == "FINISHED"
    assert client.get_run(out["failed_run_id"]).info.status == "FAILED"
    rows = real_tables.read(data).drop(columns=["species"])
    for uri in (out["model_uri"], out["killed_uri"], out["evaluated_uri"]):
        predictions = mlflow.pyfunc.load_model(uri).predict(rows)
        assert set(predictions) <= {"Adelie", "Chinstrap", "Gentoo"} and len(predictions) == len(rows)
