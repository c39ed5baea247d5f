"""MLflow's Model Registry: register a run's model with its lineage, move aliases, gate champions.

MLflow 3 deprecates stages; `--stage staging|production` maps to aliases of those names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tabtrack import settings
from tabtrack.commands.card import write_card
from tabtrack.errors import TabtrackError
from tabtrack.evaluate.metrics import GREATER_IS_BETTER, chosen_metric, compute_metrics
from tabtrack.models.loading import load_logged_model
from tabtrack.tracking.store import mlflow_client

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
STAGE_ALIASES = {"staging": "staging", "production": "production"}
LINEAGE_TAGS = ("data.sha256", "data.dvc_md5", "git.commit", "git.dirty", "data.path")


@dataclass
class GateDecision:
    alias: str  # champion or challenger
    metric: str
    new_score: float
    champion_version: str | None
    champion_score: float | None
    reason: str
    promoted: bool = True  # False: the decision is recorded, the champion left where it was


def model_uri_of_run(client, run_id: str) -> str:
    """The run's logged `model` (MLflow 3 LoggedModel), else the classic runs:/ path."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise TabtrackError(f"run {run_id!r} not found; check the id (tabtrack ui lists runs).") from exc
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'", output_format="list"
    )
    for model in models:
        if model.name == "model":
            return model.model_uri
    raise TabtrackError(f"run {run_id!r} has no logged model named 'model'; was it trained by tabtrack train?")


def register(run_id: str, *, name: str, description: str | None = None, tracking_uri: str | None = None):
    """A new version of `name` from the run's model, tagged with the run id, data hash, git commit and test metrics.
    Under `tabtrack reproduce` (a script re-run to check its numbers) nothing is registered: returns None."""
    import mlflow

    if _reproducing("register", name):
        return None
    client = mlflow_client(tracking_uri)
    source = model_uri_of_run(client, run_id)
    run = client.get_run(run_id)
    tags = {"source_run_id": run_id}
    tags.update({key: run.data.tags[key] for key in LINEAGE_TAGS if key in run.data.tags})
    tags.update({f"metric.{k}": f"{v:.6g}" for k, v in sorted(run.data.metrics.items()) if k.startswith("test_")})
    for key in ("model_type", "task", "target"):
        if key in run.data.params:
            tags[key] = run.data.params[key]
    version = mlflow.register_model(source, name, tags=tags)
    write_card(client, name, version.version, description=description)
    return client.get_model_version(name, version.version)


def promote(
    name: str, *, version: str, alias: str | None = None, stage: str | None = None, tracking_uri: str | None = None
) -> str:
    """Point `alias` (or the alias a deprecated stage maps to) at `version`; returns the alias (None under
    `tabtrack reproduce`, which changes nothing in the registry)."""
    from mlflow.exceptions import MlflowException

    if _reproducing("promote", name):
        return None
    if (alias is None) == (stage is None):
        raise TabtrackError("give exactly one of --alias NAME or --stage staging|production.")
    if stage is not None:
        if stage.lower() not in STAGE_ALIASES:
            raise TabtrackError(f"unknown stage {stage!r}; use staging or production (or --alias NAME).")
        alias = STAGE_ALIASES[stage.lower()]
        log.warning("MLflow 3 deprecates stages: --stage %s sets the alias %r instead.", stage, alias)
    client = mlflow_client(tracking_uri)
    try:
        client.get_model_version(name, str(version))
        client.set_registered_model_alias(name, alias, str(version))
    except MlflowException as exc:
        raise TabtrackError(f"cannot set alias {alias!r} on {name} version {version}: {exc.message}") from exc
    return alias


def _reproducing(action: str, name: str) -> bool:
    """A script re-run by `reproduce` or `retrain` leaves the registry to them."""
    run_id = os.environ.get(settings.REPRODUCES) or os.environ.get(settings.RETRAINS)
    if run_id:
        log.warning(
            "re-running run %s: %s of %r skipped (reproduce and retrain do their own registry writes)",
            run_id, action, name,
        )  # fmt: skip
    return bool(run_id)


def list_models(tracking_uri: str | None = None) -> list[dict[str, Any]]:
    client = mlflow_client(tracking_uri)
    rows = []
    for model in client.search_registered_models():
        versions = client.search_model_versions(f"name = '{model.name}'")
        rows.append(
            {
                "name": model.name,
                "latest_version": max((int(v.version) for v in versions), default=0),
                "aliases": {alias: str(version) for alias, version in (model.aliases or {}).items()},
            }
        )
    return rows


def show_model(name: str, tracking_uri: str | None = None) -> list[dict[str, Any]]:
    from mlflow.exceptions import MlflowException

    client = mlflow_client(tracking_uri)
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        raise TabtrackError(f"no registered model {name!r}; tabtrack models list shows them.") from exc
    aliases_by_version: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases_by_version.setdefault(str(version), []).append(alias)
    rows = []
    for version in sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version)):
        rows.append(
            {
                "version": str(version.version),
                "aliases": sorted(aliases_by_version.get(str(version.version), [])),
                "run_id": version.run_id or version.tags.get("source_run_id"),
                "metrics": {k.removeprefix("metric."): v for k, v in version.tags.items() if k.startswith("metric.")},
                "tags": {k: v for k, v in version.tags.items() if not k.startswith("metric.")},
            }
        )
    return rows


def gate(
    name: str,
    version: str,
    *,
    X_test,
    y_test,
    task: str,
    classes: Sequence | None,
    metric: str | None = None,
    tracking_uri: str | None = None,
    promote: bool = True,
) -> GateDecision:
    """Score the new version and the current champion on the same held-out rows (the new run's test
    split); the better one by the metric's direction holds `champion`, the new one otherwise gets
    `challenger`. Records the decision and both scores as tags on the new version. Without `promote` the new
    version is the `challenger` whatever the decision (which its tags still record)."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(tracking_uri)
    metric = chosen_metric(metric, task, len(classes) if classes is not None else None, option="--gate-metric")
    new_score = _score(load_logged_model(f"models:/{name}/{version}"), X_test, y_test, task, classes, metric)
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None

    champion_score = None
    if champion is None:
        alias, reason = CHAMPION, f"no champion yet; v{version} scores {metric} {new_score:.4f}"
    else:
        try:
            champion_model = load_logged_model(f"models:/{name}/{champion.version}")
            champion_score = _score(champion_model, X_test, y_test, task, classes, metric)
        except Exception as exc:
            alias, reason = (
                CHAMPION,
                f"champion v{champion.version} cannot score this data ({type(exc).__name__}: {exc})",
            )
        else:
            better = new_score > champion_score if GREATER_IS_BETTER[metric] else new_score < champion_score
            alias = CHAMPION if better else CHALLENGER
            verb = "beats" if better else "does not beat"
            reason = (
                f"v{version} {verb} champion v{champion.version} on {metric} "
                f"({new_score:.4f} vs {champion_score:.4f}, same {len(y_test)} held-out rows)"
            )
    if not promote and alias == CHAMPION:
        reason += "; not promoted (--promote moves champion)"
    client.set_registered_model_alias(name, alias if promote else CHALLENGER, str(version))
    tags = {"gate.decision": alias, "gate.metric": metric, "gate.new_score": f"{new_score:.6g}", "gate.reason": reason,
            "gate.promoted": str(promote and alias == CHAMPION).lower()}  # fmt: skip
    if champion is not None:
        tags["gate.champion_version"] = str(champion.version)
    if champion_score is not None:
        tags["gate.champion_score"] = f"{champion_score:.6g}"
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)
    write_card(client, name, str(version))  # again: the card reports the gate's decision
    return GateDecision(
        alias, metric, new_score, champion.version if champion else None, champion_score, reason, promote
    )


def _score(model, X, y, task: str, classes, metric: str) -> float:
    proba = model.predict_proba(X) if task == "classification" and hasattr(model, "predict_proba") else None
    scores = compute_metrics(task, np.asarray(y), model.predict(X), proba, classes=classes)
    if metric not in scores:
        raise TabtrackError(
            f"gate metric {metric!r} is not defined for this {task} data; choose another --gate-metric."
        )
    return scores[metric]
