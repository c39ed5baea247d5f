"""`tabtrack compare`: one parent, one full child run per model, a leaderboard in the right order,
and a failing model that leaves the others complete."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time

import mlflow
import numpy as np
import pandas as pd
import pytest

from conftest import TABTRACK, _as_in_a_terminal, free_port, parent_run, require, run_tabtrack, runs_of
from real_tables import TABLES
from real_tables import write as write_table
from tabtrack.commands.compare import compare
from tabtrack.core.training import build_config
from tabtrack.errors import ConfigError

MODELS = ["logistic_regression", "random_forest", "hist_gradient_boosting"]


def test_leaderboard_order_matches_the_children(workdir, data_dir, store_uri, client):
    config = build_config(data_dir / "breast_cancer.csv", target="target", cv_folds=3)
    result = compare(config, models=MODELS, tracking_uri=store_uri)
    assert result.metric == "roc_auc" and not result.failures

    parent = client.get_run(result.run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    by_model = {c.data.params["model_type"]: c for c in children}
    assert set(by_model) == set(MODELS)
    for child in children:  # each child is a full standard run, with its own CV folds
        assert child.info.status == "FINISHED"
        assert {"test_roc_auc", "cv_roc_auc_mean", "train_accuracy"} <= set(child.data.metrics)
        folds = client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{child.info.run_id}'"
        )
        assert len(folds) == 3
        assert "plots/roc_curve.png" in {a.path for a in client.list_artifacts(child.info.run_id, "plots")}

    # ranked by the cross-validated mean on the training split, never by the test split
    expected = sorted(MODELS, key=lambda m: -by_model[m].data.metrics["cv_roc_auc_mean"])
    assert list(result.leaderboard["model"]) == expected
    board = pd.read_csv(io.StringIO(mlflow.artifacts.load_text(f"runs:/{result.run_id}/leaderboard.csv")))
    assert list(board["model"]) == expected and list(board["rank"]) == [1, 2, 3]
    assert list(board.columns[:6]) == ["rank", "model", "status", "run_id", "cv_roc_auc_mean", "cv_roc_auc_std"]
    assert board.columns.get_loc("test_roc_auc") > board.columns.get_loc("cv_roc_auc_std")
    for _, row in board.iterrows():
        assert row["cv_roc_auc_mean"] == pytest.approx(by_model[row["model"]].data.metrics["cv_roc_auc_mean"])
        assert row["test_roc_auc"] == pytest.approx(by_model[row["model"]].data.metrics["test_roc_auc"])
        assert row["run_id"] == by_model[row["model"]].info.run_id
    # the winner against each model across the folds they share: Nadeau & Bengio's corrected t-test, recomputed
    # here from the fold runs' own metrics
    from scipy import stats

    def fold_scores(model: str) -> np.ndarray:
        folds = client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{by_model[model].info.run_id}'"
        )
        return np.array([f.data.metrics["cv_roc_auc"] for f in sorted(folds, key=lambda f: int(f.data.params["fold"]))])

    assert board.loc[0, "vs_best"] == "best"
    for _, row in board.iloc[1:].iterrows():
        advantage = fold_scores(expected[0]) - fold_scores(row["model"])
        error = np.sqrt((1 / 3 + 1 / 2) * advantage.var(ddof=1))
        assert row["vs_best_difference"] == pytest.approx(advantage.mean())
        assert row["vs_best_p_value"] == pytest.approx(2 * stats.t.sf(abs(advantage.mean()) / error, 2))
        assert row["vs_best_p_value"] > stats.ttest_rel(fold_scores(expected[0]), fold_scores(row["model"])).pvalue
        assert row["vs_best"] == ("beyond noise" if row["vs_best_low"] > 0 else "within noise")
    markdown = mlflow.artifacts.load_text(f"runs:/{result.run_id}/leaderboard.md")
    assert markdown.startswith("| rank | model |") and expected[0] in markdown.splitlines()[2]
    assert parent.data.tags["best.model"] == expected[0]
    assert parent.data.tags["best.run_id"] == by_model[expected[0]].info.run_id
    assert parent.data.metrics["best_test_roc_auc"] == pytest.approx(by_model[expected[0]].data.metrics["test_roc_auc"])
    assert parent.data.metrics["best_cv_roc_auc_mean"] == pytest.approx(
        by_model[expected[0]].data.metrics["cv_roc_auc_mean"]
    )


def _result(cv_mean: float, cv_std: float, test: float, metric: str = "roc_auc"):
    from tabtrack.core.training import TrainResult

    return TrainResult(
        run_id=f"run-{cv_mean}", experiment="e", run_name="r", task="classification", model="m",
        metrics={"cv": {f"{metric}_mean": cv_mean, f"{metric}_std": cv_std}, "test": {metric: test}},
        pipeline=None, config=None,
    )  # fmt: skip


def test_the_cv_ranking_wins_where_the_test_split_disagrees():
    """The model that looks best on the test split is not the winner when cross-validation says otherwise."""
    from tabtrack.commands.compare import leaderboard

    results = {
        "steady": _result(0.95, 0.01, 0.93),
        "lucky": _result(0.90, 0.02, 0.97),
        "tied": _result(0.95, 0.03, 0.99),
    }
    board = leaderboard(results, {}, {}, metric="roc_auc")
    assert list(board["model"]) == ["steady", "tied", "lucky"]  # equal CV means: the smaller spread first
    errors = {"small": _result(40.0, 1.0, 45.0, "rmse"), "big": _result(42.0, 1.0, 39.0, "rmse")}
    assert list(leaderboard(errors, {}, {}, metric="rmse")["model"]) == ["small", "big"]


def test_compare_defaults_to_five_folds_and_refuses_fewer_than_two(workdir, data_dir):
    config = build_config(data_dir / "wine.csv", target="target")
    result = compare(config, models=["logistic_regression"], track=False)
    assert result.results["logistic_regression"].config.cv_folds == 5
    with pytest.raises(ConfigError, match="needs --cv 2 or more"):
        compare(build_config(data_dir / "wine.csv", target="target", overrides=["cv_folds=0"]), track=False)


def test_lower_is_better_metrics_rank_ascending(workdir, data_dir, store_uri):
    config = build_config(data_dir / "diabetes.csv", target="target", cv_folds=3)
    result = compare(config, models=["ridge", "random_forest"], tracking_uri=store_uri)
    assert result.metric == "rmse"
    values = list(result.leaderboard["cv_rmse_mean"])
    assert values == sorted(values)


def test_a_failing_model_leaves_the_others_complete(workdir, data_dir, store_uri, client, cli):
    code, out, err = cli(
        "compare", data_dir / "breast_cancer.csv", "--target", "target", "--models", ",".join(MODELS),
        "--params", "logistic_regression.solver=liblinear", "--params", "logistic_regression.l1_ratio=0.5",
        "--experiment", "cmp",
    )  # fmt: skip
    assert code == 0, err
    assert "failed: logistic_regression" in err and "FAILED" in out
    runs = client.search_runs([client.get_experiment_by_name("cmp").experiment_id])
    parent = next(r for r in runs if r.info.run_name.startswith("compare_"))
    children = {
        r.data.params.get("model_type"): r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert children["logistic_regression"].info.status == "FAILED"
    assert "elasticnet" in children["logistic_regression"].data.tags["error"]
    assert (
        children["random_forest"].info.status == "FINISHED"
        and children["hist_gradient_boosting"].info.status == "FINISHED"
    )
    assert parent.info.status == "FINISHED" and parent.data.tags["failed_models"] == "logistic_regression"
    board = pd.read_csv(io.StringIO(mlflow.artifacts.load_text(f"runs:/{parent.info.run_id}/leaderboard.csv")))
    assert list(board["status"]) == ["FINISHED", "FINISHED", "FAILED"]


def test_default_models_are_every_installed_family_for_the_task(workdir, data_dir):
    from tabtrack.models.families import available_models

    config = build_config(data_dir / "diabetes.csv", target="target", cv_folds=2, overrides=["model.params={}"])
    result = compare(config, track=False, params={"mlp": {"epochs": 20}, "xgboost": {"n_estimators": 30}})
    assert set(result.leaderboard["model"]) == set(available_models("regression"))
    assert "logistic_regression" not in set(result.leaderboard["model"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"models": ["ridge"]}, "does not support classification"),
        ({"models": ["random_forrest"]}, "Did you mean 'random_forest'"),
        ({"metric": "rsme"}, "unknown --metric 'rsme'"),
        ({"models": ["random_forest"], "params": {"ridge": {"alpha": 1}}}, "not being compared: ridge"),
        ({"models": ["random_forest"], "params": {"random_forest": {"max_dept": 1}}}, "Did you mean 'max_depth'"),
    ],
)
@pytest.mark.fresh_store
def test_bad_compare_requests_fail_before_any_run(kwargs, message, workdir, data_dir):
    config = build_config(data_dir / "breast_cancer.csv", target="target")
    with pytest.raises(ConfigError, match=message):
        compare(config, **kwargs)
    assert not (workdir / "mlflow.db").exists()


def test_compare_registers_its_best_model(workdir, data_dir, cli, client):
    code, out, err = cli(
        "compare", data_dir / "wine.csv", "--target", "target", "--models", "logistic_regression,random_forest",
        "--register", "wine_best", "--gate",
    )  # fmt: skip
    assert code == 0, err
    assert "registered: wine_best version 1" in out and "gate: champion" in out
    version = client.get_model_version("wine_best", "1")
    parent = next(
        r
        for r in client.search_runs([client.get_experiment_by_name("wine").experiment_id])
        if r.info.run_name.startswith("compare_")
    )
    assert version.tags["source_run_id"] == parent.data.tags["best.run_id"]


@pytest.mark.multiprocess
def test_a_ray_address_where_nothing_listens_is_one_line_at_once(workdir, data_dir, client):
    """Ray itself retries such an address for minutes; tabtrack says so within TABTRACK_CONNECT_TIMEOUT."""
    require("ray")
    address = f"127.0.0.1:{free_port()}"
    flags = ("--target", "target", "--experiment", "nowhere")
    by_flag = run_tabtrack("compare", data_dir / "wine.csv", *flags, "--models", "logistic_regression",
                           "--ray", address, cwd=workdir, timeout=60)  # fmt: skip
    by_env = run_tabtrack("tune", data_dir / "wine.csv", *flags, "--model", "logistic_regression", "--trials", "2",
                          "--ray", cwd=workdir, env={"RAY_ADDRESS": address}, timeout=60)  # fmt: skip
    for done in (by_flag, by_env):
        assert done.returncode == 2, done.stderr[-3000:]
        assert done.stderr.strip().splitlines() == [
            f"error: cannot join the Ray cluster at '{address}': cannot connect to it (Connection refused); "
            "start it with `ray start --head` (or pass --ray without an address for a local one)."
        ]
    assert [r.info.status for r in runs_of(client, "nowhere")] == ["FAILED", "FAILED"]


def _assert_no_ray_left() -> None:
    """No raylet or GCS on this machine (ray_to_itself: no other test runs Ray meanwhile)."""
    left = subprocess.run(["pgrep", "-f", "ray/core/src/ray/(raylet/raylet|gcs/gcs_server)"], capture_output=True)
    assert left.returncode == 1, left.stdout


@pytest.mark.multiprocess
@pytest.mark.slow
def test_a_bare_ray_starts_a_local_ray_for_the_command(workdir, client, ray_to_itself):
    """`compare … --ray` without an address: the command starts a local Ray, each model is a task on this
    machine logging its complete child run into the default embedded store, with one model thread per task."""
    raw = write_table(TABLES["penguins"], workdir)
    models = ["logistic_regression", "random_forest"]
    done = run_tabtrack(
        "compare", raw.name, "--target", "species", "--models", ",".join(models), "--cv", "2",
        "--set", "drop_columns=[rownames]", "--ray",
        cwd=workdir, env={"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    runs = client.search_runs([client.get_experiment_by_name("penguins").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {
        r.data.params["model_type"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert sorted(children) == models and parent.data.tags["best.model"] in models
    assert all(r.info.status == "FINISHED" for r in runs)
    assert children["random_forest"].data.params["n_jobs"] == "1"  # the task's one CPU
    assert "test_accuracy" in children["logistic_regression"].data.metrics
    _assert_no_ray_left()  # the Ray it started is gone with it


@pytest.mark.multiprocess
@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "sig"), [("compare", signal.SIGTERM), ("tune", signal.SIGINT)], ids=["compare-SIGTERM", "tune-SIGINT"]
)
def test_a_signal_stops_the_ray_tasks_and_leaves_no_run_running(workdir, data_dir, client, ray_to_itself, command, sig):
    """SIGTERM or Ctrl-C while `--ray` tasks run: the command exits as any other does (128 + the signal; Ray
    would make SIGTERM exit 1), the runs the tasks had open end KILLED like the parent (for tune their trials
    FAIL), and the Ray the command started is gone."""
    frame = pd.read_csv(data_dir / "diabetes.csv")
    pd.concat([frame] * 40, ignore_index=True).to_csv(workdir / "big.csv", index=False)
    slow = {
        "compare": ("--models", "random_forest,hist_gradient_boosting", "--params", "random_forest.n_estimators=400"),
        "tune": ("--model", "random_forest", "--trials", "4", "--study-name", "stopped"),
    }[command]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.Popen(
        [TABTRACK, command, "big.csv", "--target", "target", *slow, "--cv", "10", "--experiment", "stopped", "--ray"],
        cwd=workdir, env={**env, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_as_in_a_terminal,
    )  # fmt: skip

    deadline = time.time() + 180
    while not any(
        "mlflow.parentRunId" in r.data.tags and r.info.status == "RUNNING" for r in runs_of(client, "stopped")
    ):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:] if proc.poll() else "slow"
        time.sleep(0.3)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr[-3000:]
    statuses = {r.info.run_name: r.info.status for r in runs_of(client, "stopped")}
    assert "RUNNING" not in statuses.values() and "KILLED" in {
        status for name, status in statuses.items() if not name.startswith(("compare_", "tune_"))
    }, statuses
    assert parent_run(client, "stopped").info.status == "KILLED"
    if command == "tune":
        import optuna
        from optuna.storages.journal import JournalFileBackend

        storage = optuna.storages.JournalStorage(JournalFileBackend(str(workdir / ".tabtrack" / "optuna.journal")))
        states = [t.state.name for t in optuna.load_study(study_name="stopped", storage=storage).trials]
        assert "RUNNING" not in states and "FAIL" in states, states
    _assert_no_ray_left()
