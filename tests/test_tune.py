"""`tabtrack tune`: trials as nested child runs, the best value equal to the best child's, resume by
study name, and two worker processes sharing one study through a real PostgreSQL."""

from __future__ import annotations

import os
import uuid

import optuna
import pytest

from conftest import run_tabtrack
from tabtrack.commands.tune import tune
from tabtrack.core.training import build_config
from tabtrack.errors import ConfigError, TabtrackError

POSTGRES_URL = os.environ.get(
    "TABTRACK_TEST_POSTGRES_URL", "postgresql://tabtrack:tabtrack@127.0.0.1:5432/tabtrack_test"
)


@pytest.fixture(scope="module")
def postgres_url() -> str:
    import sqlalchemy

    try:
        with sqlalchemy.create_engine(POSTGRES_URL).connect():
            pass
    except Exception as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_URL} ({exc}); .ci/run starts it")
        pytest.skip(f"PostgreSQL not reachable ({type(exc).__name__}); run scripts/postgres.sh")
    return POSTGRES_URL


def _children(client, run_id):
    run = client.get_run(run_id)
    return client.search_runs([run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")


def test_trials_are_child_runs_and_best_value_matches_the_best_child(workdir, data_dir, store_uri, client):
    config = build_config(data_dir / "breast_cancer.csv", target="target", model="hist_gradient_boosting")
    result = tune(config, trials=5, tracking_uri=store_uri, study_name="hgb")
    children = _children(client, result.run_id)
    assert sorted(c.info.run_name for c in children) == [f"trial_{n}" for n in range(5)]
    assert all(c.info.status == "FINISHED" for c in children)
    complete = [c for c in children if c.data.tags["optuna.state"] == "COMPLETE"]
    assert complete and all("max_iter" in c.data.params and "learning_rate" in c.data.params for c in children)
    best_child = max(complete, key=lambda c: c.data.metrics["cv_roc_auc_mean"])
    parent = client.get_run(result.run_id)
    assert parent.data.metrics["best_cv_roc_auc"] == pytest.approx(best_child.data.metrics["cv_roc_auc_mean"])
    assert result.best_value == pytest.approx(best_child.data.metrics["cv_roc_auc_mean"])
    # the parent is a complete standard run of the refitted best params
    for key, value in result.best_params.items():
        assert parent.data.params[f"best.{key}"] == str(value)
        assert parent.data.params[key] == str(value)
    assert {"test_roc_auc", "train_accuracy"} <= set(parent.data.metrics)
    plots = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert {"plots/optimization_history.png", "plots/param_importances.png", "plots/roc_curve.png"} <= plots
    assert "plots/parallel_coordinates.png" in plots  # each hyperparameter against the CV metric
    assert result.refit.model_uri


def test_same_study_name_resumes(workdir, data_dir, store_uri, client):
    config = build_config(data_dir / "wine.csv", target="target", model="logistic_regression")
    first = tune(config, trials=3, tracking_uri=store_uri, study_name="resume-me")
    second = tune(config, trials=2, tracking_uri=store_uri, study_name="resume-me")
    assert (first.n_trials, second.n_trials) == (3, 5)
    numbers = [int(c.data.params["trial"]) for c in _children(client, second.run_id)]
    assert sorted(numbers) == [3, 4]
    study = optuna.load_study(
        study_name="resume-me",
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(".tabtrack/optuna.journal")),
    )
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]


@pytest.mark.multiprocess
def test_two_workers_share_one_postgres_study(workdir, data_dir, store_uri, client, postgres_url):
    name = f"pg-{uuid.uuid4().hex[:8]}"
    config = build_config(data_dir / "wine.csv", target="target", model="logistic_regression")
    result = tune(config, trials=8, jobs=2, storage=postgres_url, study_name=name, tracking_uri=store_uri)
    study = optuna.load_study(study_name=name, storage=postgres_url)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)) >= 8  # no trial number used twice
    children = _children(client, result.run_id)
    assert sorted(int(c.data.params["trial"]) for c in children) == sorted(
        numbers
    )  # every trial visible as a child run
    hosts_pids = {c.data.tags.get("mlflow.source.name", "") for c in children}
    assert hosts_pids  # trials were logged by the worker processes
    assert "***" in client.get_run(result.run_id).data.tags["optuna.storage"]  # the password never reaches MLflow


def test_workers_stop_at_the_trial_count_with_trials_still_running(workdir, data_dir):
    """--until and --trials count the trials other workers are still running, so no worker adds one more."""
    data = data_dir / "wine.csv"
    first = run_tabtrack("tune", data, "--target", "target", "--model", "logistic_regression", "--trials", "2",
                         "--study-name", "s", "--experiment", "until", cwd=workdir)  # fmt: skip
    assert first.returncode == 0, first.stderr
    journal = optuna.storages.journal.JournalFileBackend(str(workdir / ".tabtrack/optuna.journal"))
    study = optuna.load_study(study_name="s", storage=optuna.storages.JournalStorage(journal))
    in_flight = study.ask()  # another worker's trial, still running
    worker = run_tabtrack("tune-worker", "--study-name", "s", "--storage", "journal:.tabtrack/optuna.journal",
                          "--until", "4", cwd=workdir)  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "RUNNING", "COMPLETE"] and study.trials[2].number == in_flight.number
    # more workers than trials: every worker would start one before its first stop check
    capped = run_tabtrack("tune", data, "--target", "target", "--model", "logistic_regression", "--trials", "1",
                          "--jobs", "2", "--study-name", "one", "--experiment", "until", cwd=workdir)  # fmt: skip
    assert capped.returncode == 0, capped.stderr
    assert len(optuna.load_study(study_name="one", storage=optuna.storages.JournalStorage(journal)).trials) == 1


def test_bad_tune_requests_are_user_errors(workdir, data_dir, store_uri):
    config = build_config(data_dir / "wine.csv", target="target", model="logistic_regression")
    with pytest.raises(ConfigError, match="unknown --metric 'auc'"):
        tune(config, trials=1, metric="auc", tracking_uri=store_uri)
    with pytest.raises(TabtrackError, match="cannot open Optuna storage"):
        tune(config, trials=1, storage="postgresql://nobody:secret@127.0.0.1:1/none", tracking_uri=store_uri)
