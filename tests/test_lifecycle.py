"""Run lifecycle: a failure mid-run ends it FAILED with an `error` tag and a traceback artifact;
an interrupt ends it KILLED; nothing is ever left RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess

import mlflow
import pytest

import tabtrack
from conftest import TABTRACK, runs_of, start_long_training


def _statuses(client, experiment):
    exp = client.get_experiment_by_name(experiment)
    return sorted((r.info.run_name, r.info.status) for r in client.search_runs([exp.experiment_id]))


def test_exception_mid_run_marks_run_and_fold_failed(workdir, data_dir, client, store_uri):
    def explode(stage, done, total):
        if done == 2:
            raise RuntimeError("disk full while reporting progress")

    with pytest.raises(RuntimeError, match="disk full"):
        tabtrack.train(
            data_dir / "wine.csv", target="target", model="logistic_regression", cv=3,
            experiment="fails", tracking_uri=store_uri, progress=explode,
        )  # fmt: skip
    statuses = _statuses(client, "fails")
    assert ("fold_1", "FINISHED") in statuses and ("fold_2", "FINISHED") in statuses
    parent = next(
        r
        for r in client.search_runs([client.get_experiment_by_name("fails").experiment_id])
        if r.info.run_name.startswith("logistic")
    )
    assert parent.info.status == "FAILED"
    assert parent.data.tags["error"] == "RuntimeError: disk full while reporting progress"
    traceback_text = mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/error/traceback.txt")
    assert "Traceback" in traceback_text and "disk full" in traceback_text
    # what was logged before the failure is kept
    assert parent.data.params["model_type"] == "logistic_regression"


def test_keyboard_interrupt_marks_run_killed(workdir, data_dir, client, store_uri):
    def interrupt(stage, done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tabtrack.train(
            data_dir / "wine.csv", target="target", model="logistic_regression", cv=2,
            experiment="ctrl_c", tracking_uri=store_uri, progress=interrupt,
        )  # fmt: skip
    statuses = dict(_statuses(client, "ctrl_c"))
    assert statuses.pop("fold_1") == "FINISHED"  # finished before the interrupt
    assert set(statuses.values()) == {"KILLED"}


def test_a_child_run_an_interrupt_cut_short_ends_with_its_parent(client, store_uri):
    """An interrupt inside a child run's start (after MLflow created the run and put it on its stack, before
    tabtrack's tracker took its id) left the child RUNNING under a KILLED parent (seen once in CI, in the SIGINT
    test below): the parent's end now ends it too."""
    from tabtrack.tracking import make_tracker
    from tabtrack.tracking.mlflow_io import PARENT_TAG

    tracker = make_tracker(tracking_uri=store_uri)
    with pytest.raises(KeyboardInterrupt), tracker.run(experiment="cut", run_name="parent"):
        # what the cut left: the child's run, created and on MLflow's stack
        mlflow.start_run(experiment_id=tracker.experiment_id, nested=True, run_name="fold_0",
                         tags={PARENT_TAG: tracker.run_id})  # fmt: skip
        raise KeyboardInterrupt
    assert mlflow.active_run() is None
    assert _statuses(client, "cut") == [("fold_0", "KILLED"), ("parent", "KILLED")]


def _spawn_train(args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [TABTRACK, "train", *map(str, args)],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_cli_failure_inside_fit_is_one_line_and_the_run_keeps_its_traceback(workdir, data_dir, client, store_uri):
    # A value scikit-learn only rejects inside fit() (a column index the data does not have): not a checked
    # user error, so it is reported as an internal error in one line, and the run is FAILED with its traceback.
    args = [data_dir / "wine.csv", "--target", "target", "--model", "hist_gradient_boosting",
            "--set", "model.params.categorical_features=[100]", "--experiment", "boom"]  # fmt: skip
    proc = _spawn_train(args, workdir)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    assert err.startswith("error: internal error: ValueError:") and "categorical_features" in err
    (run,) = runs_of(client, "boom")
    assert run.info.status == "FAILED" and run.data.tags["error"].startswith("ValueError:")
    assert f"run {run.info.run_id}'s error/traceback.txt" in err
    mlflow.set_tracking_uri(store_uri)
    saved = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/error/traceback.txt")
    assert "Traceback" in saved and "categorical_features" in saved

    proc = subprocess.run(
        [TABTRACK, "--verbose", "train", *map(str, args)], cwd=workdir, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr
    assert [r.info.status for r in runs_of(client, "boom")] == ["FAILED", "FAILED"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_marks_run_killed_and_keeps_what_was_logged(workdir, data_dir, client, sig):
    import time

    proc = start_long_training(workdir, data_dir, client, "term")
    deadline = time.time() + 120
    while not any(r.info.status == "FINISHED" for r in runs_of(client, "term")):  # a fold is done
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.3)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr[-3000:]
    runs = runs_of(client, "term")
    assert "RUNNING" not in {r.info.status for r in runs}
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "KILLED"
    # what was logged before the signal is kept: params, config, environment, the finished folds
    assert parent.data.params["model_type"] == "random_forest"
    kept = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"config", "env"} <= kept
    assert any(r.info.status == "FINISHED" for r in runs if r.info.run_id != parent.info.run_id)


def test_a_signal_while_the_fit_runs_beside_mlflow_start_kills_the_run(workdir, data_dir, client):
    """Without CV, `tabtrack train` fits a gradient-boosting model in a worker thread while MLflow and the run
    start (FitAhead): Ctrl-C while the main thread waits for that fit still ends the run KILLED, with what was
    logged before it, and the command exits at once instead of waiting for the fit."""
    import time

    endless = ("--model", "hist_gradient_boosting", "--cv", "0",
               "--set", "model.params.max_iter=200000", "--set", "model.params.early_stopping=false")  # fmt: skip
    proc = start_long_training(workdir, data_dir, client, "ahead", model=endless)
    deadline = time.time() + 120
    run_id = runs_of(client, "ahead")[0].info.run_id
    while not {"config", "env"} <= {a.path for a in client.list_artifacts(run_id)}:  # logged before the fit's wait
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    started = time.time()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-3000:]
    assert time.time() - started < 20  # the fit alone takes minutes
    (run,) = runs_of(client, "ahead")
    assert run.info.status == "KILLED"
    assert run.data.params["model_type"] == "hist_gradient_boosting" and run.data.params["max_iter"] == "200000"
    assert {"config", "env"} <= {a.path for a in client.list_artifacts(run_id)}
