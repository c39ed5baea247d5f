"""runs list/export, diff and clean on known runs in a real store; a SIGKILLed training left RUNNING
is closed by `runs clean --stale`."""

from __future__ import annotations

import io
import json
import signal

import pandas as pd
import pytest

import tabtrack
from conftest import start_long_training


@pytest.fixture
def two_runs(workdir, data_dir, store_uri):
    first = tabtrack.train(
        data_dir / "diabetes.csv", target="target", model="ridge", experiment="known", tracking_uri=store_uri
    )
    second = tabtrack.train(
        data_dir / "diabetes.csv", target="target", model="ridge", experiment="known", tracking_uri=store_uri,
        params={"alpha": 10.0}, tags={"stage": "candidate"},
    )  # fmt: skip
    return first, second


def test_export_gives_exact_rows_and_columns(two_runs, cli, workdir, store_uri):
    first, second = two_runs
    code, out, err = cli(
        "runs", "export", "-e", "known", "--order-by", "metrics.test_rmse ASC", "--tracking-uri", store_uri
    )
    assert code == 0, err
    frame = pd.read_csv(io.StringIO(out))
    by_rmse = sorted([first, second], key=lambda r: r.metrics["test"]["rmse"])
    assert list(frame["run_id"]) == [r.run_id for r in by_rmse]
    assert list(frame["params.alpha"]) == [float(r.pipeline.named_steps["model"].alpha) for r in by_rmse]
    for (_, row), result in zip(frame.iterrows(), by_rmse, strict=True):
        assert row["metrics.test_rmse"] == pytest.approx(result.metrics["test"]["rmse"])
    assert {"run_name", "status", "start_time", "tags.data.sha256", "metrics.test_r2", "params.model_type"} <= set(
        frame.columns
    )

    code, out, _ = cli(
        "runs", "export", "-e", "known", "--filter", "params.alpha = '10.0'", "-f", "json", "--tracking-uri", store_uri
    )
    records = json.loads(out)
    assert [r["run_id"] for r in records] == [second.run_id]

    code, _, _ = cli("runs", "list", "-e", "known", "-f", "md", "-o", workdir / "runs.md", "--tracking-uri", store_uri)
    text = (workdir / "runs.md").read_text()
    assert (
        code == 0
        and text.startswith("| run_id | run_name | status | start_time |")
        and len(text.strip().splitlines()) == 4
    )

    code, _, err = cli("runs", "list", "-e", "nope", "--tracking-uri", store_uri)
    assert code == 2 and "no experiment 'nope'" in err
    code, _, err = cli(
        "runs", "list", "-e", "known", "--filter", "metrics.test_rmse >>> 1", "--tracking-uri", store_uri
    )
    assert code == 2 and "MLflow rejected the search" in err


def test_diff_shows_exact_differences(two_runs, store_uri, cli):
    first, second = two_runs
    code, out, err = cli("diff", first.run_id, second.run_id, "-f", "json", "--tracking-uri", store_uri)
    assert code == 0, err
    result = json.loads(out)
    params = {row["name"]: row for row in result["params"]}
    assert params["alpha"] == {"name": "alpha", "a": "1.0", "b": "10.0", "changed": True}
    assert params["model_type"]["changed"] is False
    metrics = {row["name"]: row for row in result["metrics"]}
    rmse = metrics["test_rmse"]
    assert rmse["a"] == pytest.approx(first.metrics["test"]["rmse"]) and rmse["delta"] == pytest.approx(
        rmse["b"] - rmse["a"]
    )
    lineage = {row["name"]: row for row in result["lineage"]}
    assert lineage["data.sha256"]["changed"] is False and lineage["data.sha256"]["a"]
    packages = {row["name"]: row for row in result["packages"]}
    assert packages["scikit-learn"]["changed"] is False and packages["scikit-learn"]["a"]
    code, out, _ = cli("diff", first.run_id, second.run_id, "--changes", "--tracking-uri", store_uri)
    assert code == 0 and "alpha" in out and "model_type" not in out


def test_clean_failed_respects_age_and_dry_run(workdir, data_dir, store_uri, client, cli):
    def boom(*_):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        tabtrack.train(
            data_dir / "wine.csv",
            target="target",
            model="logistic_regression",
            cv=2,
            experiment="c",
            tracking_uri=store_uri,
            progress=boom,
        )
    failed = [
        r.info.run_id
        for r in client.search_runs([client.get_experiment_by_name("c").experiment_id])
        if r.info.status == "FAILED"
    ]
    assert len(failed) == 1
    code, out, _ = cli("runs", "clean", "--failed", "--older-than", "1d", "-e", "c", "--tracking-uri", store_uri)
    assert code == 0 and "delete 0 failed run(s)" in out
    code, out, _ = cli("runs", "clean", "--failed", "--dry-run", "-e", "c", "--tracking-uri", store_uri)
    assert failed[0] in out and client.get_run(failed[0]).info.lifecycle_stage == "active"
    code, out, _ = cli("runs", "clean", "--failed", "-e", "c", "--tracking-uri", store_uri)
    assert code == 0 and client.get_run(failed[0]).info.lifecycle_stage == "deleted"
    code, _, err = cli("runs", "clean", "--failed", "--older-than", "soon", "--tracking-uri", store_uri)
    assert code == 2 and "--older-than expects" in err


def test_sigkill_leaves_running_and_clean_stale_marks_failed(workdir, data_dir, client, cli):
    # A killed process cannot end its run: `runs clean --stale` is the documented way to close it.
    proc = start_long_training(workdir, data_dir, client, "killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    exp_id = client.get_experiment_by_name("killed").experiment_id
    assert "RUNNING" in {r.info.status for r in client.search_runs([exp_id])}
    code, _out, err = cli("runs", "clean", "--stale", "-e", "killed")
    assert code == 0, err
    statuses = {r.info.run_name: r.info.status for r in client.search_runs([exp_id])}
    assert "RUNNING" not in statuses.values() and "FAILED" in statuses.values()
    parent = next(r for r in client.search_runs([exp_id]) if r.info.run_name.startswith("random_forest"))
    assert f"process {proc.pid}" in parent.data.tags["error"]
