"""The tracking layer's structure and its one remaining private MLflow call, each checked so a change fails here.

- `tracking/` has no import circles: what the MLflow adapter, offline bundles and `sync` share lives in
  `mlflow_io`, which imports none of them.
- `MlflowTracker` drops a run from MLflow's fluent stack when the server is gone (`mlflow.end_run` pops
  it only after the server took the end status): the stack must still be where it looks.
- A tracked `tabtrack train` leaves no process behind.
"""

from __future__ import annotations

import ast
import os
import uuid
from pathlib import Path

import mlflow

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
