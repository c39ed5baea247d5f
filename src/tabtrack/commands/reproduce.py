"""`tabtrack reproduce`: re-run a past run from its recorded config and lineage, and prove the numbers match.

Refuses when the data differs (its sha256 is the contract); warns, or with `strict` refuses, when the
code (git commit, dirty flag) or the key package versions differ from the run's.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tabtrack import settings
from tabtrack.commands.runs import recorded_packages
from tabtrack.config import RunConfig
from tabtrack.core.checks import check_training
from tabtrack.core.recorder import Progress
from tabtrack.core.training import TrainResult, run_training
from tabtrack.data.fingerprint import sha256_of
from tabtrack.data.remote import is_remote, local_file
from tabtrack.errors import ConfigError, DataError, TabtrackError
from tabtrack.lineage import git_info, package_versions
from tabtrack.models.families import get_spec
from tabtrack.tracking.store import mlflow_client

log = logging.getLogger(__name__)

OWN_CODE = "own_code"  # the `tabtrack.kind` of runs `tabtrack.start_run` makes
# Packages whose version change can move the numbers (tabtrack's own code is covered by the git check).
COMPARED_PACKAGES = ("scikit-learn", "numpy", "pandas", "scipy", "xgboost", "lightgbm", "torch")


@dataclass
class MetricDelta:
    name: str
    original: float | None
    reproduced: float | None
    tolerance: float

    @property
    def delta(self) -> float | None:
        if self.original is None or self.reproduced is None:
            return None
        return self.reproduced - self.original

    @property
    def matches(self) -> bool:
        if self.original is None or self.reproduced is None:
            return False
        if math.isnan(self.original) and math.isnan(self.reproduced):
            return True
        return abs(self.reproduced - self.original) <= self.tolerance


@dataclass
class Reproduction:
    original_run_id: str
    new_run_id: str | None
    deltas: list[MetricDelta]
    warnings: list[str] = field(default_factory=list)
    result: TrainResult | None = None  # for runs `tabtrack train` made

    @property
    def matched(self) -> bool:
        return all(d.matches for d in self.deltas)


def reproduce(
    run_id: str,
    *,
    data: str | Path | None = None,
    test_data: str | Path | None = None,
    strict: bool = False,
    allow_data_change: bool = False,
    tolerance: float | None = None,
    tracking_uri: str | None = None,
    progress: Progress | None = None,
) -> Reproduction:
    client = mlflow_client(tracking_uri)
    original = _get_run(client, run_id)
    tags = original.data.tags
    if tags.get("tabtrack.kind") == OWN_CODE:
        return reproduce_script(
            client, original, data=data, strict=strict, allow_data_change=allow_data_change, tolerance=tolerance,
            tracking_uri=tracking_uri,
        )  # fmt: skip
    config = _recorded_config(run_id)
    warnings: list[str] = []

    data_path = _data_path(data, tags.get("data.path"), config.data, "data")
    _check_hash(data_path, tags.get("data.sha256"), run_id, allow_data_change, warnings)
    updates: dict = {"data": data_path}
    if config.test_data or tags.get("data.test_path"):
        test_path = _data_path(test_data, tags.get("data.test_path"), config.test_data, "test data")
        _check_hash(test_path, tags.get("data.test_sha256"), run_id, allow_data_change, warnings)
        updates["test_data"] = test_path

    warnings += _checked_code_and_packages(run_id, tags, strict)

    experiment = client.get_experiment(original.info.experiment_id).name
    config = RunConfig.model_validate(
        {
            **config.model_dump(),
            **updates,
            "experiment": experiment,
            "tags": {**config.tags, "tabtrack.reproduces": run_id},
        }
    )
    result = run_training(check_training(config), tracking_uri=tracking_uri, progress=progress)

    allowed = tolerance if tolerance is not None else get_spec(config.model.type).reproduce_tolerance
    deltas = _test_deltas(original.data.metrics, result.metrics["test"], allowed)
    reproduction = Reproduction(run_id, result.run_id, deltas, warnings, result=result)
    if result.run_id:
        client.set_tag(result.run_id, "tabtrack.reproduced", str(reproduction.matched).lower())
    return reproduction


def reproduce_script(
    client,
    original,
    *,
    data: str | Path | None,
    strict: bool,
    allow_data_change: bool,
    tolerance: float | None,
    tracking_uri: str | None,
) -> Reproduction:
    """A run made by user code (`tabtrack.start_run`): re-run its script with the recorded arguments, in this
    interpreter, after the same data, commit and package checks; the re-run is found by the run id it is
    given (TABTRACK_REPRODUCES, which `start_run` records as `tabtrack.reproduces`) and its run name."""
    run_id, tags = original.info.run_id, original.data.tags
    if "tabtrack.entrypoint" not in tags:
        raise TabtrackError(
            f"run {run_id} was made from user code without a script (a notebook or an interactive session), "
            "so there is nothing to re-run; re-run that code by hand."
        )
    if tags.get("tabtrack.argv_redacted") == "true":
        raise TabtrackError(
            f"run {run_id}'s script arguments had secrets masked when recorded, so it cannot be re-run as recorded; "
            f"run it by hand with {settings.REPRODUCES}={run_id} set."
        )
    warnings: list[str] = []
    index = 0
    while f"{_data_prefix(index)}.path" in tags:
        prefix = _data_prefix(index)
        path = _data_path(data if index == 0 else None, tags[f"{prefix}.path"], None, "data")
        _check_hash(path, tags.get(f"{prefix}.sha256"), run_id, allow_data_change, warnings)
        index += 1
    warnings += _checked_code_and_packages(run_id, tags, strict)

    from tabtrack.lineage import git_root

    root = git_root(Path.cwd())
    script = (root / tags["tabtrack.entrypoint"]) if root else Path(tags["tabtrack.entrypoint"])
    workdir = (root / tags.get("tabtrack.workdir", ".")) if root else Path.cwd()
    if not script.is_file():
        raise TabtrackError(f"the run's script '{script}' is not here; check out the run's commit (git.commit).")
    arguments = json.loads(tags.get("tabtrack.argv", "[]"))
    environment = {**os.environ, settings.REPRODUCES: run_id}
    if tracking_uri:
        environment[settings.TRACKING_URI] = tracking_uri
    log.info("reproduce: running %s %s in %s", script, " ".join(arguments), workdir)
    done = subprocess.run([sys.executable, str(script), *arguments], cwd=workdir, env=environment)
    if done.returncode != 0:
        raise TabtrackError(f"the run's script {tags['tabtrack.entrypoint']} exited with code {done.returncode}.")
    new = _reproduced_run(client, original)
    deltas = _test_deltas(original.data.metrics, {k.removeprefix("test_"): v for k, v in new.data.metrics.items()
                                                   if k.startswith("test_")}, tolerance or 0.0)  # fmt: skip
    reproduction = Reproduction(run_id, new.info.run_id, deltas, warnings)
    client.set_tag(new.info.run_id, "tabtrack.reproduced", str(reproduction.matched).lower())
    return reproduction


def _reproduced_run(client, original, tag: str = "tabtrack.reproduces"):
    """The newest finished run tagged as reproducing (or retraining) `original`, with its run name."""
    runs = client.search_runs(
        [original.info.experiment_id],
        filter_string=f"tags.`{tag}` = '{original.info.run_id}' and attributes.run_name = '{original.info.run_name}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise TabtrackError(
            f"the script ran but logged no run named {original.info.run_name!r} reproducing {original.info.run_id}; "
            "does it pass run_name to tabtrack.start_run, and log to the same tracking server?"
        )
    return runs[0]


def _data_prefix(index: int) -> str:
    return "data" if index == 0 else f"data.{index}"


def _test_deltas(recorded_metrics, reproduced: dict, allowed: float) -> list[MetricDelta]:
    recorded = {k.removeprefix("test_"): v for k, v in recorded_metrics.items() if k.startswith("test_")}
    return [
        MetricDelta(name, recorded.get(name), reproduced.get(name), allowed)
        for name in sorted(set(recorded) | set(reproduced))
    ]


def _checked_code_and_packages(run_id: str, tags: dict[str, str], strict: bool) -> list[str]:
    mismatches = _code_mismatches(tags) + _package_mismatches(run_id)
    if mismatches and strict:
        raise TabtrackError(f"--strict: {'; '.join(mismatches)}; check out the run's commit and packages.")
    for warning in mismatches:
        log.warning("reproduce: %s", warning)
    return mismatches


def _get_run(client, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        raise TabtrackError(f"run {run_id!r} not found; check the id (tabtrack runs list shows them).") from exc


def _recorded_config(run_id: str) -> RunConfig:
    import mlflow
    import yaml
    from pydantic import ValidationError

    try:
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/config/resolved.yaml")
    except Exception as exc:  # MLflow raises several types for a missing artifact
        raise TabtrackError(
            f"run {run_id} has no config/resolved.yaml, so it was not made by tabtrack train and cannot be replayed."
        ) from exc
    try:
        return RunConfig.model_validate(yaml.safe_load(text))
    except ValidationError as exc:
        raise ConfigError(f"run {run_id}'s recorded config no longer validates: {exc.errors()[0]['msg']}.") from exc


def _data_path(given: str | Path | None, recorded: str | None, configured: str | None, what: str) -> str:
    """--data wins; then the absolute path (or object-store URL) the run recorded; then the config's path."""
    for candidate in (given, recorded, configured):
        if candidate and (is_remote(candidate) or Path(candidate).is_file()):
            return str(candidate)
    if given:
        raise DataError(f"{what} file '{given}' not found.")
    raise DataError(
        f"the run's {what} ('{recorded or configured}') is not here; restore it (git checkout + dvc pull) "
        f"or pass --{'test-data' if what == 'test data' else 'data'} PATH."
    )


def _check_hash(location: str, recorded: str | None, run_id: str, allow_change: bool, warnings: list[str]) -> None:
    if not recorded:
        return
    current = sha256_of(local_file(location))  # a remote file is downloaded once, for this check and the run
    if current == recorded:
        return
    message = f"'{location}' has sha256 {current[:12]}… but run {run_id} trained on {recorded[:12]}…"
    if not allow_change:
        raise DataError(f"{message}; restore the original data (dvc checkout) or pass --allow-data-change.")
    warnings.append(f"data changed: {message}")
    log.warning("reproduce: data changed: %s", message)


def _code_mismatches(tags: dict[str, str]) -> list[str]:
    if "git.commit" not in tags:
        return []
    now = git_info()
    problems = []
    if now.get("git.commit") != tags["git.commit"]:
        problems.append(f"git commit is {now.get('git.commit', 'none')[:12]}, the run used {tags['git.commit'][:12]}")
    if tags.get("git.dirty") == "true":
        problems.append("the run was made from uncommitted changes (git.dirty=true)")
    elif now.get("git.dirty") == "true":
        problems.append("the working tree has uncommitted changes")
    return problems


def _package_mismatches(run_id: str) -> list[str]:
    recorded, installed = recorded_packages(run_id), package_versions(COMPARED_PACKAGES)
    return [
        f"{name} is {installed.get(name, 'not installed')}, the run used {version}"
        for name, version in recorded.items()
        if name in COMPARED_PACKAGES and installed.get(name) != version
    ]
