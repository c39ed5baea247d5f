"""A pipeline that gates every change: `tabtrack init --ci github|gitlab` writes a workflow whose steps are one
command, `tabtrack ci [--promote]`; the test runs exactly those steps, read from the written file, in a real git
repository (a weak model, then a better and a worse commit), a real DVC pipeline and a real `mlflow server`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import real_tables
from conftest import TABTRACK, free_port, start_mlflow_server, stop_server

pytestmark = pytest.mark.multiprocess


def _sh(command: str, cwd: Path, env: dict, *, expect: int | None = 0) -> subprocess.CompletedProcess:
    done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if expect is not None:
        assert done.returncode == expect, f"{command}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def _commit(project: Path, env: dict, message: str) -> None:
    _sh(f"git add -A && git commit -qm '{message}'", project, env)


def _set_dropped(project: Path, columns: list[str]) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["drop_columns"] = columns
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_ci_gates_each_commit_as_the_written_workflow_runs_it(tmp_path):
    project = tmp_path / "titanic"
    project.mkdir()
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}  # fmt: skip
    summary = tmp_path / "step-summary.md"
    env["GITHUB_STEP_SUMMARY"] = str(summary)
    raw = real_tables.write(real_tables.TABLES["titanicsurvival"], tmp_path)
    _sh("git init -q -b main && dvc init -q", project, env)
    _sh(f"{TABTRACK} init . --target survived --data {raw} --model logistic_regression --ci github", project, env)
    _sh(f"{TABTRACK} init . --target survived --data {raw} --model logistic_regression --ci gitlab --force",
        project, env)  # fmt: skip
    steps = {step.get("name"): step for step in
             yaml.safe_load((project / ".github/workflows/tabtrack.yml").read_text())["jobs"]["gate"]["steps"]}  # fmt: skip
    gate, promote = steps["gate"]["run"], steps["promote"]["run"]
    assert (gate, promote) == ("tabtrack ci", "tabtrack ci --promote")
    gitlab = yaml.safe_load((project / ".gitlab-ci.yml").read_text())
    assert (gitlab["gate"]["script"], gitlab["promote"]["script"]) == ([gate], [promote])

    port = free_port()
    server = start_mlflow_server(tmp_path, port, backend=f"sqlite:///{tmp_path / 'server.db'}",
                                 artifacts=tmp_path / "artifacts")  # fmt: skip
    env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{port}"
    try:
        # main: a weak model (no sex, no class) becomes the first champion
        _set_dropped(project, ["rownames", "sex", "passengerClass"])
        _sh("dvc add -q data/titanicsurvival.csv", project, env)
        _commit(project, env, "weak model")
        done = _sh(promote, project, env)
        assert "titanic v1 (run" in done.stdout and "takes champion (nothing to beat)" in done.stdout

        # a pull request with a better model: exit 0, not promoted, the comparison in the job summary
        _set_dropped(project, ["rownames"])
        _commit(project, env, "better model")
        done = _sh(gate, project, env)
        assert "titanic v2 (run" in done.stdout and " wins: " in done.stdout
        written = summary.read_text()
        assert "## tabtrack ci: titanic v2 wins" in written and "| roc_auc |" in written and "| better |" in written
        page = (project / "ci-report/compare.html").read_text()
        assert "ci-report/compare.html" in written and page.count("data:image/png;base64,") >= 2  # the curves
        # another drop_columns changes the test dataset's digest, not its rows: the page pairs them all
        assert "different test data" not in page and "tested on different data" not in page
        from mlflow import MlflowClient

        client = MlflowClient(env["MLFLOW_TRACKING_URI"])
        assert client.get_model_version_by_alias("titanic", "champion").version == "1"
        # merged to main: the same gate promotes it
        done = _sh(promote, project, env)
        assert "titanic v3" in done.stdout and " wins: " in done.stdout
        assert client.get_model_version_by_alias("titanic", "champion").version == "3"

        # a pull request with a worse model: exit 1, the champion stays
        _set_dropped(project, ["rownames", "sex"])
        _commit(project, env, "worse model")
        done = _sh(gate, project, env, expect=1)
        assert "titanic v4 (run" in done.stdout and " loses: " in done.stdout
        assert "## tabtrack ci: titanic v4 loses" in summary.read_text()
        assert client.get_model_version_by_alias("titanic", "champion").version == "3"
    finally:
        stop_server(server)


def test_ci_refuses_outside_a_git_repository_or_without_a_pipeline(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_CEILING_DIRECTORIES": str(tmp_path)}  # fmt: skip
    outside = tmp_path / "plain"
    outside.mkdir()
    done = _sh(f"{TABTRACK} ci", outside, env, expect=2)
    assert done.stderr.count("\n") == 1 and "is not in a git repository with a commit" in done.stderr
    repo = tmp_path / "repo"
    repo.mkdir()
    _sh("git init -q -b main && git -c user.email=t@e -c user.name=t commit -q --allow-empty -m first", repo, env)
    done = _sh(f"{TABTRACK} ci --promote", repo, env, expect=2)
    assert (
        done.stderr.count("\n") == 1
        and f"no DVC pipeline (dvc.yaml) in {repo}: scaffold one with `tabtrack init" in done.stderr
    )
    done = _sh(f"{TABTRACK} init . --target y --ci jenkins", repo, env, expect=2)
    assert "unknown --ci 'jenkins'; use github or gitlab." in done.stderr
