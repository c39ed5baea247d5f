"""Forked children (tabtrack/forked.py) only where fork is safe, and never hanging a run:

- a saver child that hangs is killed at its timeout, the model is saved in-process, and the run records the
  same things as a run whose child did not hang;
- `run.evaluate` beside a live thread, and in a real Jupyter kernel, does not fork, and records a complete run;
- a model whose parameters hold someone else's code (a FunctionTransformer with a user's function) is not saved
  in a child; the guard that keeps torch out of skops' import never fails another thread's `import torch`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest import TABTRACK, runs_of
from tabtrack import forked
from tabtrack.extras import installed


def _children_like(pid: int) -> list[int]:
    """Processes forked (not exec'd) from `pid`: its children running its own command line."""
    try:
        parent_cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        ids = " ".join(p.read_text() for p in Path(f"/proc/{pid}/task").glob("*/children")).split()
    except OSError:
        return []
    same = []
    for child in map(int, ids):
        try:
            if Path(f"/proc/{child}/cmdline").read_bytes() == parent_cmd:
                same.append(child)
        except OSError:
            continue
    return same


def _record(client, run_id: str) -> dict:
    run = client.get_run(run_id)

    def artifacts(path=None):
        return {p for a in client.list_artifacts(run_id, path) for p in (artifacts(a.path) if a.is_dir else {a.path})}

    return {"params": run.data.params, "metrics": run.data.metrics, "artifacts": artifacts(), "status": run.info.status}


@pytest.mark.skipif(sys.platform != "linux", reason="tabtrack forks on Linux only")
def test_a_saver_child_that_hangs_is_killed_at_its_timeout_and_the_run_records_the_same(workdir, data_dir, store_uri):
    args = ["train", str(data_dir / "breast_cancer.csv"), "--target", "target", "--model", "hist_gradient_boosting"]
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    reference = subprocess.run([TABTRACK, *args, "--experiment", "reference"], cwd=workdir, env=environment,
                               capture_output=True, text=True, timeout=600)  # fmt: skip
    assert reference.returncode == 0, reference.stderr[-2000:]

    started = time.monotonic()
    proc = subprocess.Popen(
        [TABTRACK, *args, "--experiment", "hung"], cwd=workdir, env={**environment, "TABTRACK_FORK_TIMEOUT": "4"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    stopped: set[int] = set()
    seen: dict[int, float] = {}
    while proc.poll() is None and time.monotonic() - started < 300:
        now = time.monotonic()
        for child in _children_like(proc.pid):
            # A forked child still running the command after 0.1 s: not one about to exec (git, say), which
            # must not be stopped: its parent waits for that exec.
            if child not in stopped and now - seen.setdefault(child, now) > 0.1:
                os.kill(child, signal.SIGSTOP)  # the child hangs, as one stuck on a lock would
                stopped.add(child)
        time.sleep(0.005)
    if proc.poll() is None:
        proc.kill()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert stopped, "the run forked no child to hang"
    assert "still running after 4 s (TABTRACK_FORK_TIMEOUT); killed" in err
    for child in stopped:  # killed, not left behind
        assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]

    client = MlflowClient(store_uri)
    (hung,) = runs_of(client, "hung")
    (ref,) = runs_of(client, "reference")
    by_hung, by_ref = _record(client, hung.info.run_id), _record(client, ref.info.run_id)
    assert by_hung["status"] == "FINISHED"
    assert by_hung["metrics"] == by_ref["metrics"] and by_hung["artifacts"] == by_ref["artifacts"]
    assert set(by_hung["params"]) == set(by_ref["params"])
    import mlflow

    mlflow.set_tracking_uri(store_uri)
    rows = pd.read_csv(data_dir / "breast_cancer.csv").drop(columns=["target"]).head(20)
    loaded = mlflow.pyfunc.load_model(f"runs:/{hung.info.run_id}/model")
    assert list(loaded.predict(rows)) == list(mlflow.pyfunc.load_model(f"runs:/{ref.info.run_id}/model").predict(rows))


BESIDE_A_THREAD = """
import os, threading
import pandas as pd, tabtrack
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split

forks = []
os.register_at_fork(before=lambda: forks.append(1))
frame = pd.read_csv({data!r})
X, y = frame.drop(columns=["target"]), frame["target"]
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)

def evaluate(name):
    with tabtrack.start_run(experiment="threads", run_name=name, seed=0) as run:
        run.evaluate(RandomForestClassifier(20, random_state=0).fit(X_train, y_train), X_test, y_test)

evaluate("alone")
alone = len(forks)
stop = threading.Event()
worker = threading.Thread(target=stop.wait, name="the program's own thread")
worker.start()
evaluate("beside a thread")
stop.set()
worker.join()
print(alone, len(forks) - alone)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="tabtrack forks on Linux only")
def test_evaluate_beside_a_live_thread_does_not_fork(workdir, data_dir, store_uri):
    (workdir / "threads.py").write_text(BESIDE_A_THREAD.format(data=str(data_dir / "breast_cancer.csv")))
    environment = {**os.environ, "MLFLOW_TRACKING_URI": store_uri, "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run([sys.executable, "threads.py"], cwd=workdir, env=environment, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    alone, beside = map(int, done.stdout.split()[-2:])
    assert alone >= 1 and beside == 0  # the same model saved ahead in a child alone, in-process beside a thread
    client = MlflowClient(store_uri)
    records = {r.info.run_name: _record(client, r.info.run_id) for r in runs_of(client, "threads")}
    assert records["alone"]["artifacts"] == records["beside a thread"]["artifacts"]
    assert records["alone"]["metrics"] == records["beside a thread"]["metrics"]
    assert records["beside a thread"]["status"] == "FINISHED"


NOTEBOOK_CELL = """
import os
forks = []
os.register_at_fork(before=lambda: forks.append(1))
import mlflow, pandas as pd, tabtrack
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder
frame = pd.read_csv({data!r}).drop(columns=["rownames"])
X, y = frame.drop(columns=["species"]), frame["species"]
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0, stratify=y)
encode = make_column_transformer((OneHotEncoder(handle_unknown="ignore"), make_column_selector(dtype_include=object)),
                                 remainder="passthrough")
model = make_pipeline(encode, HistGradientBoostingClassifier(random_state=0)).fit(X_train, y_train)
with tabtrack.start_run(experiment="notebook", data={data!r}, seed=0, tracking_uri={store!r}) as run:
    run.cross_validate(make_pipeline(encode, HistGradientBoostingClassifier(random_state=0)), X_train, y_train, cv=3)
    result = run.evaluate(model, X_test, y_test, X_train=X_train, y_train=y_train, onnx={onnx})
print("RUN", run.run_id, len(forks), result.metrics["test"]["accuracy"])
"""


def test_start_run_and_evaluate_in_a_real_jupyter_kernel(workdir, store_uri):
    import real_tables

    jupyter_client = pytest.importorskip("jupyter_client") if not os.environ.get("CI") else __import__("jupyter_client")
    data = real_tables.write(real_tables.TABLES["penguins"], workdir)
    onnx = installed("skl2onnx")  # model_onnx too, converted in the kernel's process (CI installs the extra)
    manager, kernel = jupyter_client.manager.start_new_kernel(kernel_name="python3", cwd=str(workdir))
    try:
        outputs, errors = [], []

        def on_output(message):
            content = message["content"]
            if message["msg_type"] == "stream":
                outputs.append(content["text"])
            elif message["msg_type"] == "error":
                errors.append("\n".join(content["traceback"]))

        reply = kernel.execute_interactive(
            NOTEBOOK_CELL.format(data=str(data), store=store_uri, onnx=onnx), timeout=600, output_hook=on_output
        )
    finally:
        kernel.stop_channels()
        manager.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok", errors
    _, run_id, forks, accuracy = next(line for line in "".join(outputs).splitlines() if line.startswith("RUN")).split()
    assert int(forks) == 0 and float(accuracy) > 0.9  # a kernel has threads of its own: nothing was forked
    client = MlflowClient(store_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["tabtrack.kind"] == "own_code"
    assert "tabtrack.entrypoint" not in run.data.tags  # a notebook has no script to re-run
    assert {"test_accuracy", "train_accuracy", "cv_accuracy_mean"} <= set(run.data.metrics)
    assert not onnx or run.data.metrics["onnx_same_labels"] == 1.0
    recorded = _record(client, run_id)["artifacts"]
    assert {"report.html", "config/resolved.yaml", "env/requirements.txt", "plots/confusion_matrix.png"} <= recorded
    import mlflow

    mlflow.set_tracking_uri(store_uri)
    assert len(mlflow.pyfunc.load_model(f"runs:/{run_id}/model").predict(pd.read_csv(data))) == 344


# -- the pieces -----------------------------------------------------------------------------------------------------
def _slow_in_child(parent: int) -> int:
    """Sleeps in a forked child, answers at once in the process that asked."""
    if os.getpid() != parent:
        time.sleep(60)
    return 42


@pytest.mark.skipif(not forked.fork_safe(), reason="fork is not safe in this process")
def test_a_child_past_its_timeout_is_killed_and_its_job_done_in_process(monkeypatch):
    monkeypatch.setenv("TABTRACK_FORK_TIMEOUT", "0.5")
    started = time.monotonic()
    child = forked.Forked(time.sleep, 60)
    with pytest.raises(forked.ChildTimedOut, match=r"after 0\.5 s"):
        child.result()
    assert time.monotonic() - started < 10 and not child._child.is_alive()
    assert forked.Beside("a slow job", _slow_in_child, os.getpid()).result() == 42  # done here after the timeout


def users_function(X):
    return X * 2


def test_only_models_of_scikit_learns_own_code_are_saved_in_a_child():
    from sklearn.compose import make_column_selector, make_column_transformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    from tabtrack.tracking.mlflow_io import runs_known_code_only as known

    assert known(make_pipeline(StandardScaler(), RandomForestClassifier()))
    assert known(make_pipeline(FunctionTransformer(np.log1p), RandomForestClassifier()))
    assert known(make_column_transformer((StandardScaler(), make_column_selector(dtype_include=np.number))))
    assert not known(make_pipeline(FunctionTransformer(users_function), RandomForestClassifier()))
    assert not known(make_column_transformer((StandardScaler(), lambda X: list(X.columns))))
    xgboost = pytest.importorskip("xgboost")
    assert not known(make_pipeline(StandardScaler(), xgboost.XGBClassifier()))


TORCH_BESIDE_THE_GUARD = """
import threading
from tabtrack.models.loading import torch_unimportable
inside, outside, done = threading.Event(), [], threading.Event()
def guarded():
    with torch_unimportable():
        inside.set()
        done.wait(120)
        try:
            import torch.nn  # noqa: F401
            outside.append("guarded thread imported torch")
        except ImportError:
            pass
thread = threading.Thread(target=guarded)
thread.start()
inside.wait(60)
import torch  # another thread, while the guard is installed
print(torch.__version__)
done.set()
thread.join()
print(outside)
"""


def test_the_torch_guard_does_not_fail_another_threads_import():
    pytest.importorskip("torch") if not os.environ.get("CI") else None
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(TORCH_BESIDE_THE_GUARD)], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    version, guarded = done.stdout.strip().splitlines()[-2:]
    assert version.startswith("2.") and guarded == "['guarded thread imported torch']"
