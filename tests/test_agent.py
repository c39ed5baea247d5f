"""The tracking agent: a warm process whose forked workers record tracked runs (tabtrack.tracking.agent)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import mlflow
import pytest

from conftest import runs_of, start_long_training
from tabtrack.tracking import agent
from tabtrack.tracking.worker import WORKER_NICENESS

pytestmark = [
    pytest.mark.multiprocess,  # agents, CLI subprocesses
    pytest.mark.skipif(not agent.agent_enabled(), reason="the agent needs Linux and TABTRACK_AGENT unset"),
]

TABTRACK = [sys.executable, "-m", "tabtrack"]
# Run-specific values: identical records differ only in these.
VOLATILE_TAGS = {"tabtrack.pid", "mlflow.runName", "mlflow.log-model.history"}


@pytest.fixture
def own_agent(tmp_path_factory, monkeypatch) -> dict[str, str]:
    """An agent directory of this test's own (so it controls the agent's life), in os.environ and returned."""
    directory = tmp_path_factory.mktemp("agent")
    directory.chmod(0o700)
    monkeypatch.setenv(agent.DIR_ENV, str(directory))
    yield {**os.environ}
    agent.stop_agent()


def _tabtrack(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*TABTRACK, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _python(script: str, *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`script` in a fresh interpreter that tracks through the agent to the workdir's own store."""
    env = {k: v for k, v in env.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _agent_pid(cwd: Path, env: dict[str, str]) -> int | None:
    status = _tabtrack("agent", "status", cwd=cwd, env=env)
    if status.returncode != 0:
        return None
    return int(status.stdout.split("pid ")[1].split(",")[0])


def _record(client, run) -> dict:
    """Everything a run holds that does not depend on when or in which process it was made."""
    run_id = run.info.run_id

    def artifacts(path: str | None = None) -> set[str]:
        found: set[str] = set()
        for item in client.list_artifacts(run_id, path):
            found |= artifacts(item.path) if item.is_dir else {item.path}
        return found

    return {
        "status": run.info.status,
        "params": run.data.params,
        "metrics": run.data.metrics,
        "tags": {k: v for k, v in run.data.tags.items() if k not in VOLATILE_TAGS},
        "artifacts": artifacts(),
        "inputs": sorted((d.dataset.name, d.dataset.digest, d.dataset.profile) for d in run.inputs.dataset_inputs),
    }


def test_agent_records_the_same_run_as_in_process_tracking(workdir, data_dir, client, own_agent):
    data = data_dir / "breast_cancer.csv"
    train = ["train", str(data), "--target", "target", "--model", "random_forest", "--cv", "2", "--experiment", "a"]
    env = {k: v for k, v in own_agent.items() if k != "MLFLOW_TRACKING_URI"}
    assert _agent_pid(workdir, env) is None

    first = _tabtrack(*train, cwd=workdir, env=env)  # starts the agent
    assert first.returncode == 0, first.stderr
    pid = _agent_pid(workdir, env)
    assert pid is not None
    second = _tabtrack(*train, cwd=workdir, env=env)  # served by the same, warm agent
    assert second.returncode == 0, second.stderr
    assert _agent_pid(workdir, env) == pid
    in_process = _tabtrack(*train, cwd=workdir, env={**env, agent.AGENT_ENV: "0"})
    assert in_process.returncode == 0, in_process.stderr

    parents = sorted((r for r in runs_of(client, "a") if "mlflow.parentRunId" not in r.data.tags),
                     key=lambda r: r.info.start_time)  # fmt: skip
    assert len(parents) == 3
    records = [_record(client, run) for run in parents]
    assert records[0]["status"] == "FINISHED"
    assert {"test_roc_auc", "train_roc_auc", "cv_roc_auc_mean"} <= set(records[0]["metrics"])
    assert {"plots/confusion_matrix.png", "config/resolved.yaml", "report.html"} <= records[0]["artifacts"]
    assert records[0] == records[1] == records[2]
    for run in parents:  # two folds each, finished, under their parent
        children = [r for r in runs_of(client, "a") if r.data.tags.get("mlflow.parentRunId") == run.info.run_id]
        assert sorted(c.info.run_name for c in children) == ["fold_1", "fold_2"]
        assert {c.info.status for c in children} == {"FINISHED"}

    # The agent's compute helper drew the same plots this process draws.
    for path in ("plots/roc_curve.png", "plots/feature_importance.png"):
        drawn = [Path(client.download_artifacts(run.info.run_id, path, str(workdir / run.info.run_id))).read_bytes()
                 for run in parents]  # fmt: skip
        assert drawn[0] == drawn[1] == drawn[2], path

    # The model a worker logged loads and predicts like the one logged in-process.
    frame = __import__("pandas").read_csv(data).drop(columns="target").head(50)
    predictions = [mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model").predict(frame) for run in parents]
    assert (predictions[0] == predictions[2]).all() and (predictions[1] == predictions[2]).all()
    # Workers write it with the compact skops writer (tabtrack.tracking.skops_save), in-process MLflow's own.
    schemas = [
        zipfile.ZipFile(client.download_artifacts(run.info.run_id, "model/model.skops", str(workdir / f"m{i}"))).read(
            "schema.json"
        )
        for i, run in enumerate(parents)
    ]
    assert [b"\n" in schema for schema in schemas] == [False, False, True]

    stopped = _tabtrack("agent", "stop", cwd=workdir, env=env)
    assert stopped.returncode == 0 and f"tracking agent {pid} stopped" in stopped.stdout
    assert _agent_pid(workdir, env) is None


def test_a_killed_caller_does_not_leave_its_run_running(workdir, data_dir, client, own_agent):
    proc = start_long_training(workdir, data_dir, client, "killed")
    # Its tracking worker (and its compute helper, if forked yet) run at a lower priority than the agent
    # they were forked from: the run's own work comes first.
    agent_pid = agent._agent_record(agent.agent_paths())[0]
    children = Path(f"/proc/{agent_pid}/task/{agent_pid}/children").read_text().split()
    assert 1 <= len(children) <= 2
    for pid in children:
        assert os.getpriority(os.PRIO_PROCESS, int(pid)) - os.getpriority(os.PRIO_PROCESS, agent_pid) == WORKER_NICENESS
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.time() + 60
    while time.time() < deadline:  # the worker sees the socket close and ends what the caller left open
        statuses = {r.info.run_name: r.info.status for r in runs_of(client, "killed")}
        if "RUNNING" not in statuses.values():
            break
        time.sleep(0.5)
    parent = next(r for r in runs_of(client, "killed") if r.info.run_name.startswith("random_forest"))
    assert parent.info.status == "FAILED"
    assert "ended before the run did" in parent.data.tags["error"]
    assert "RUNNING" not in {r.info.status for r in runs_of(client, "killed")}


def test_an_agent_running_other_code_is_replaced(own_agent):
    paths = agent.agent_paths()
    agent._start_agent(paths, "stale-signature")
    deadline = time.time() + 30
    while agent._agent_record(paths) is None:
        assert time.time() < deadline, "the stale agent did not start"
        time.sleep(0.1)
    stale_pid, signature = agent._agent_record(paths)
    assert signature == "stale-signature"

    conn = agent.connect()  # what a tracked run does first
    assert conn is not None
    conn.close()
    new_pid, signature = agent._agent_record(paths)
    assert signature == agent.code_signature() and new_pid != stale_pid
    assert not agent._is_agent(stale_pid)  # gone (or a zombie its reaper has yet to collect)


def test_an_idle_agent_exits_and_removes_its_socket(own_agent, monkeypatch):
    monkeypatch.setenv(agent.IDLE_ENV, "1")
    conn = agent.connect()
    assert conn is not None
    conn.close()
    paths = agent.agent_paths()
    pid, _ = agent._agent_record(paths)
    deadline = time.time() + 90  # its warm-up imports, then one idle second
    while agent._is_agent(pid):
        assert time.time() < deadline, "the agent did not exit when idle"
        time.sleep(0.2)
    assert not paths.socket.exists() and not paths.pid.exists()


def test_an_unsafe_agent_directory_falls_back_to_tracking_in_process(workdir, data_dir, client, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)  # others could reach a socket here
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    result = _tabtrack("train", str(data_dir / "wine.csv"), "--target", "target", "--experiment", "unsafe",
                       cwd=workdir, env={**env, agent.DIR_ENV: str(shared)})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (
        "tracking agent is unavailable" in result.stderr and "must belong to this user and be private" in result.stderr
    )
    assert [r.info.status for r in runs_of(client, "unsafe")] == ["FINISHED"]
    assert not list(shared.iterdir())  # no socket was made there


def test_the_agent_freezes_what_it_loaded_before_forking_workers():
    # Frozen objects are out of every later collection: a worker's full collections walk only what the
    # run itself made, not (copying on write) the whole heap it inherited from the agent.
    probe = (
        "import gc; from tabtrack.tracking import agent; before = gc.get_freeze_count(); "
        "agent._warm_up(); print(before, gc.get_freeze_count(), len(gc.get_objects(generation=2)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    before, frozen, old_generation = map(int, done.stdout.split())
    assert before == 0
    assert frozen > 100_000  # MLflow, its store, scikit-learn and skops: on the order of a million objects
    assert old_generation < frozen / 100


def test_a_run_after_the_agents_warm_up_imports_nothing_more_for_tracking(workdir, data_dir):
    # Whatever a worker imports lazily, every worker imports again (each is forked from the agent): after
    # the warm-up, a whole tracked run (store, git tags, model, plots) imports none of what measured
    # ~0.4 CPU-s in a worker's and a helper's profiles.
    probe = f"""
import sys
from tabtrack.tracking import agent
agent._warm_up()
before = set(sys.modules)
import tabtrack
tabtrack.train({str(data_dir / "breast_cancer.csv")!r}, target="target", model="random_forest",
               params={{"n_estimators": 5}}, tracking_uri="sqlite:///" + {str(workdir / "warm.db")!r})
from alembic.script import ScriptDirectory
from mlflow.store.db import utils
print(" ".join(sorted(set(sys.modules) - before)))
print(utils._get_latest_schema_revision(), ScriptDirectory.from_config(utils._get_alembic_config("")).get_heads())
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=workdir)
    assert done.returncode == 0, done.stderr
    imported, revisions = done.stdout.splitlines()[-2:]
    measured = {"git", "sqlalchemy.dialects.sqlite", "opentelemetry.sdk.metrics", "mlflow.pyfunc",
                "mlflow.tracing.processor.base_mlflow", "matplotlib.pyplot", "skops.io", "narwhals"}  # fmt: skip
    assert measured & set(imported.split()) == set()
    kept, heads = revisions.split(" ", 1)
    assert heads == f"[{kept!r}]"  # the revision the agent keeps is the migrations' one head


def test_a_failure_in_the_compute_helper_fails_the_run(workdir, client, own_agent):
    # compute_later runs a function in a helper forked by the agent (drawing the plots); what it raises
    # is raised in the caller, with the helper's traceback, and the run ends FAILED like any failure.
    script = (
        "import operator, sys\n"
        "from tabtrack.tracking.worker import WorkerTracker\n"
        "tracker = WorkerTracker.start()\n"
        "assert tracker is not None, 'no agent'\n"
        "with tracker.run(experiment='helper', run_name='divides', tags={}) as run:\n"
        "    assert run.compute_later(operator.add, 2, 3)() == 5\n"
        "    later = run.compute_later(operator.truediv, 1, 0)\n"
        "    later()\n"
    )
    done = _python(script, cwd=workdir, env=own_agent)
    assert done.returncode == 1
    assert "ZeroDivisionError: division by zero" in done.stderr
    assert "raised in the tabtrack compute helper" in done.stderr
    [run] = runs_of(client, "helper")
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "ZeroDivisionError: division by zero"


def test_plots_are_drawn_in_the_caller_when_the_compute_helper_dies(workdir, client, own_agent):
    # The helper, which tells its pid, is killed mid-run.
    script = (
        "import logging, operator, os, signal\n"
        "from tabtrack.tracking.worker import WorkerTracker\n"
        "logging.basicConfig()\n"
        "tracker = WorkerTracker.start()\n"
        "with tracker.run(experiment='helper', run_name='survives', tags={}) as run:\n"
        "    assert run.compute_later(operator.add, 2, 3)() == 5\n"
        "    helper = run.compute_later(os.getpid)()\n"
        "    assert helper != os.getpid()\n"
        "    os.kill(helper, signal.SIGKILL)\n"
        "    assert run.compute_later(operator.mul, 6, 7)() == 42\n"
        "    run.log_metrics({'answer': 42})\n"
    )
    done = _python(script, cwd=workdir, env=own_agent)
    assert done.returncode == 0, done.stderr
    assert "compute helper exited" in done.stderr
    [run] = runs_of(client, "helper")
    assert run.info.status == "FINISHED"
    assert run.data.metrics["answer"] == 42
