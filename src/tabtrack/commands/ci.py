"""`tabtrack ci [--promote]`: what a CI workflow runs on every change (`tabtrack init --ci github|gitlab` writes it).

In the project `tabtrack init` scaffolds: `dvc repro` (validate, prepare, train: one MLflow run), then the
candidate (this commit's run) is registered and gated against the registered champion on the prepared test split
(commands/registry.gate: the paired bootstrap interval of the improvement). Without `--promote` (a pull request)
the champion stays where it is; with it (a merge to main) the candidate takes `champion` when it wins beyond noise.
The comparison goes to a markdown summary (GitHub's job summary where the job has one) and a comparison page with
the overlaid curves. Exit codes: 0 the candidate wins or ties within noise, 1 it loses, 2 something is broken.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tabtrack import settings
from tabtrack.commands.dataprep import TEST_FILE
from tabtrack.commands.scaffold import PREPARED_DIR
from tabtrack.errors import TabtrackError

TEST_SPLIT = f"{PREPARED_DIR}/{TEST_FILE}"  # what the scaffolded prepare stage writes

WINS_OR_TIES, LOSES = 0, 1


@dataclass
class CiOutcome:
    exit_code: int
    verdict: str  # "wins", "ties within noise", "loses", "takes champion (no champion yet)"
    name: str
    version: str
    run_id: str
    decision: Any  # registry.GateDecision
    summary_path: Path
    page_path: Path | None


def run_ci(root: Path, *, promote: bool = False, name: str | None = None, tracking_uri: str | None = None) -> CiOutcome:
    from tabtrack.commands import registry
    from tabtrack.core.training import build_config
    from tabtrack.models.loading import load_logged_model
    from tabtrack.tracking.store import mlflow_client

    commit = _head_commit(root)
    if not (root / "dvc.yaml").is_file():
        raise TabtrackError(f"no DVC pipeline (dvc.yaml) in {root.resolve()}: scaffold one with `tabtrack init --target "
                            "COLUMN` (and --ci github or gitlab for the workflow).")  # fmt: skip
    config = build_config(None, config=root / "params.yaml")
    experiment = config.experiment or root.resolve().name
    client = mlflow_client(tracking_uri)
    _dvc(root, "repro")
    run = _run_of(client, experiment, commit)
    if run is None:  # every stage was up to date: train again, so this commit has its candidate
        _dvc(root, "repro", "--force", "--single-item", "train")
        run = _run_of(client, experiment, commit)
    if run is None:
        raise TabtrackError(f"dvc repro recorded no finished run of commit {commit[:12]} in experiment {experiment!r}.")
    test_path = root / TEST_SPLIT
    if not test_path.is_file():
        raise TabtrackError(f"the pipeline wrote no {TEST_SPLIT}: tabtrack ci gates on the split `tabtrack init`'s "
                            "prepare stage writes.")  # fmt: skip
    test = pd.read_parquet(test_path)
    X_test, y_test = test.drop(columns=[config.target]), test[config.target]
    name = name or experiment
    version = registry.register(run.info.run_id, name=name, tracking_uri=tracking_uri)
    candidate = load_logged_model(f"models:/{name}/{version.version}")
    task = run.data.params.get("task", "classification")
    classes = list(candidate.classes_) if task == "classification" else None
    decision = registry.gate(
        name, version.version, X_test=X_test, y_test=y_test, task=task, classes=classes, tracking_uri=tracking_uri,
        promote=promote, random_state=config.random_state,
    )  # fmt: skip
    verdict, code = _verdict(decision)
    from tabtrack.commands.ci_summary import write_summary

    summary, page = write_summary(
        root, decision=decision, verdict=verdict, name=name, version=str(version.version), commit=commit,
        candidate=candidate, X_test=X_test, y_test=y_test, task=task, classes=classes, client=client,
        seed=config.random_state, promoted=promote, summary_file=os.environ.get(settings.GITHUB_STEP_SUMMARY),
    )  # fmt: skip
    return CiOutcome(code, verdict, name, str(version.version), run.info.run_id, decision, summary, page)


def _verdict(decision) -> tuple[str, int]:
    difference = decision.difference
    if difference is None:  # no champion, or one that cannot score this data
        return "takes champion (nothing to beat)", WINS_OR_TIES
    if difference.beyond():
        return "wins", WINS_OR_TIES
    if difference.high < 0:
        return "loses", LOSES
    return "ties within noise", WINS_OR_TIES


def _head_commit(root: Path) -> str:
    if shutil.which("git") is None:
        raise TabtrackError("tabtrack ci needs git on PATH: it gates the commit checked out.")
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise TabtrackError(f"{root.resolve()} is not in a git repository with a commit: tabtrack ci gates the commit "
                            "checked out (run it in the project's clone).")  # fmt: skip
    return done.stdout.strip()


def _dvc(root: Path, *args: str) -> None:
    """`dvc ARGS` in the project, its output on this terminal (the CI log)."""
    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    if not Path(dvc).exists():
        raise TabtrackError("tabtrack ci runs `dvc repro`: install DVC (pip install dvc).")
    done = subprocess.run([dvc, *args], cwd=root)
    if done.returncode != 0:
        raise TabtrackError(f"`dvc {' '.join(args)}` failed (exit {done.returncode}); its output is above.")


def _run_of(client, experiment: str, commit: str):
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id], filter_string=f"tags.`git.commit` = '{commit}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )  # fmt: skip
    return runs[0] if runs else None
