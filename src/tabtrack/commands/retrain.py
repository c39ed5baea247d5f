"""`tabtrack retrain NAME --data FILE [--promote]`: the champion's recipe on new data, through the gate.

A champion `tabtrack train` made is trained again from its recorded config (what `reproduce` replays) with
`--data` in place of its data file; one made by your own script is re-run with the new file in place of the
argument that named its data file (the script must take its data path as an argument). The new run is
registered as a new version of NAME and gated against the champion on held-out rows of the new data: the new
run's test split, or `--test-data`. `--promote` moves `champion` when the new version wins; without it the
new version is the `challenger` and the decision is recorded on it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tabtrack import settings
from tabtrack.errors import TabtrackError

log = logging.getLogger(__name__)


@dataclass
class Retrained:
    run_id: str
    version: str
    decision: object  # commands.registry.GateDecision


def retrain(
    name: str,
    *,
    data: str | Path,
    test_data: str | Path | None = None,
    promote: bool = False,
    tracking_uri: str | None = None,
    progress=None,
    min_improvement: float = 0.0,
) -> Retrained:
    from mlflow.exceptions import MlflowException

    from tabtrack.commands import registry
    from tabtrack.tracking.store import mlflow_client

    client = mlflow_client(tracking_uri)
    try:
        champion = client.get_model_version_by_alias(name, registry.CHAMPION)
    except MlflowException as exc:
        raise TabtrackError(
            f"{name!r} has no champion to retrain (tabtrack promote {name} --version N --alias champion first)."
        ) from exc
    run = client.get_run(champion.run_id)
    if run.data.tags.get("tabtrack.kind") == "own_code":
        run_id, rows = _rerun_script(client, run, data, test_data, tracking_uri)
    else:
        run_id, rows = _retrain_config(run, data, test_data, tracking_uri, progress)
    version = registry.register(run_id, name=name, tracking_uri=tracking_uri)
    metric = champion.tags.get("gate.metric")  # the metric the champion won on, where a gate chose it
    seed = int(client.get_run(run_id).data.params.get("random_state", 0))
    decision = registry.gate(name, version.version, **rows, metric=metric, tracking_uri=tracking_uri, promote=promote,
                             min_improvement=min_improvement, random_state=seed)  # fmt: skip
    return Retrained(run_id, str(version.version), decision)


def _retrain_config(run, data, test_data, tracking_uri, progress) -> tuple[str, dict]:
    """A `tabtrack train` champion: its recorded config, the new file in place of its data."""
    from tabtrack.commands.reproduce import _recorded_config
    from tabtrack.config import RunConfig
    from tabtrack.core.checks import check_training
    from tabtrack.core.training import run_training
    from tabtrack.tracking.store import mlflow_client

    config = _recorded_config(run.info.run_id)
    experiment = mlflow_client(tracking_uri).get_experiment(run.info.experiment_id).name
    config = RunConfig.model_validate({
        **config.model_dump(), "data": str(data), "test_data": str(test_data) if test_data else None,
        "experiment": experiment, "run_name": None, "tags": {**config.tags, "tabtrack.retrains": run.info.run_id},
    })  # fmt: skip
    result = run_training(check_training(config), tracking_uri=tracking_uri, progress=progress)
    rows = {"X_test": result.X_test, "y_test": result.y_test, "task": result.task, "classes": result.classes}
    return result.run_id, rows


def _rerun_script(client, run, data, test_data, tracking_uri) -> tuple[str, dict]:
    """A champion your script made: the script again, the new file in place of the argument naming its data."""
    from tabtrack.commands.reproduce import _reproduced_run
    from tabtrack.lineage import git_root

    tags = run.data.tags
    script, recorded = tags.get("tabtrack.entrypoint"), tags.get("data.path")
    if not script or not recorded:
        raise TabtrackError(
            f"run {run.info.run_id} was made in a notebook or without data=, so there is no script to re-run on "
            "new data; retrain it by hand."
        )
    root = git_root(Path.cwd()) or Path.cwd()
    workdir = root / tags.get("tabtrack.workdir", ".")
    arguments = json.loads(tags.get("tabtrack.argv", "[]"))
    named = [i for i, a in enumerate(arguments) if _resolves_to(a, workdir, recorded)]
    if not named:
        raise TabtrackError(
            f"{script} (run {run.info.run_id}) does not take its data file as an argument (it read {recorded}), so "
            "retrain cannot point it at new data: give the script a --data argument and record a new champion."
        )
    if test_data is None:
        raise TabtrackError(
            "retraining a run your own script made needs --test-data FILE: the held-out rows both versions are scored "
            "on (the script's own split is not recorded)."
        )
    for index in named:
        arguments[index] = str(Path(data).resolve())
    environment = {**os.environ, settings.RETRAINS: run.info.run_id}
    if tracking_uri:
        environment[settings.TRACKING_URI] = tracking_uri
    log.info("retrain: running %s %s in %s", script, " ".join(arguments), workdir)
    done = subprocess.run([sys.executable, str(root / script), *arguments], cwd=workdir, env=environment)
    if done.returncode != 0:
        raise TabtrackError(f"{script} exited with code {done.returncode} on the new data.")
    new = _reproduced_run(client, run, tag="tabtrack.retrains")
    return new.info.run_id, _held_out(new, test_data)


def _resolves_to(argument: str, workdir: Path, recorded: str) -> bool:
    value = argument.partition("=")[2] if argument.startswith("-") and "=" in argument else argument
    try:
        return (workdir / value).resolve() == Path(recorded).resolve()
    except (OSError, ValueError):
        return False


def _held_out(run, test_data) -> dict:
    from tabtrack.data.load import load_table

    frame = load_table(test_data)
    target = run.data.params.get("target")
    if not target or target not in frame.columns:
        raise TabtrackError(f"--test-data has no column {target!r}, the target the run recorded.")
    task = run.data.params.get("task", "classification")
    y = frame[target]
    classes = sorted(y.dropna().unique().tolist()) if task == "classification" else None
    return {"X_test": frame.drop(columns=[target]), "y_test": y, "task": task, "classes": classes}
