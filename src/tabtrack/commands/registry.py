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
from tabtrack.commands.alias_history import move_alias
from tabtrack.commands.card import write_card
from tabtrack.errors import TabtrackError
from tabtrack.evaluate.metrics import chosen_metric, compute_metrics
from tabtrack.evaluate.paired import RESAMPLES, PairedDifference, Scored, paired_bootstrap
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
    difference: PairedDifference | None = None  # the improvement's interval, where there was a champion


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
        move_alias(client, name, alias, str(version), reason="by hand: tabtrack promote")
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
    min_improvement: float = 0.0,
    random_state: int = 0,
    resamples: int = RESAMPLES,
) -> GateDecision:
    """Score the new version and the current champion on the same held-out rows (the new run's test split). The
    new one takes `champion` only when its improvement is beyond noise: the lower bound of the paired bootstrap's
    95% interval (evaluate/paired.py, seeded by `random_state`) above `min_improvement`; otherwise it gets
    `challenger`. The decision, both scores, the interval, the rows and the resamples become tags on the new
    version and reach its card. Without `promote` the new version is the `challenger` whatever the decision."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(tracking_uri)
    metric = chosen_metric(metric, task, len(classes) if classes is not None else None, option="--gate-metric")
    new = _answers(load_logged_model(f"models:/{name}/{version}"), X_test, task)
    new_score = _score(new, y_test, task, classes, metric)
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champion = None

    champion_score, difference = None, None
    if champion is None:
        alias, reason = CHAMPION, f"no champion yet; v{version} scores {metric} {new_score:.4f}"
    else:
        try:
            old = _answers(load_logged_model(f"models:/{name}/{champion.version}"), X_test, task)
            champion_score = _score(old, y_test, task, classes, metric)
        except Exception as exc:
            alias, reason = (
                CHAMPION,
                f"champion v{champion.version} cannot score this data ({type(exc).__name__}: {exc})",
            )
        else:
            difference = paired_bootstrap(
                metric, task, y_test, new, old, classes=classes, resamples=resamples, seed=random_state
            )
            alias = CHAMPION if difference.beyond(min_improvement) else CHALLENGER
            reason = _gate_reason(version, champion.version, difference, new_score, champion_score, min_improvement)
    if not promote and alias == CHAMPION:
        reason += "; not promoted (--promote moves champion)"
    move_alias(client, name, alias if promote else CHALLENGER, str(version), reason=f"gate: {reason}")
    tags = {"gate.decision": alias, "gate.metric": metric, "gate.new_score": f"{new_score:.6g}", "gate.reason": reason,
            "gate.promoted": str(promote and alias == CHAMPION).lower(), "gate.rows": str(len(y_test))}  # fmt: skip
    if champion is not None:
        tags["gate.champion_version"] = str(champion.version)
    if champion_score is not None:
        tags["gate.champion_score"] = f"{champion_score:.6g}"
    if difference is not None:
        tags.update({
            "gate.improvement": f"{difference.improvement:.6g}", "gate.interval_low": f"{difference.low:.6g}",
            "gate.interval_high": f"{difference.high:.6g}", "gate.level": f"{difference.level:g}",
            "gate.resamples": str(difference.resamples), "gate.seed": str(difference.seed),
            "gate.min_improvement": f"{min_improvement:g}",
        })  # fmt: skip
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)
    write_card(client, name, str(version))  # again: the card reports the gate's decision
    return GateDecision(
        alias, metric, new_score, champion.version if champion else None, champion_score, reason, promote, difference
    )


def _gate_reason(version, champion_version, difference, new_score: float, champion_score: float, margin: float) -> str:
    """The decision in words, with what it rests on."""
    scores = f"{new_score:.4f} vs {champion_score:.4f}"
    rests_on = (f"improvement {difference.improvement:+.4f}, {difference.interval} from {difference.resamples:,} "
                f"paired resamples of the same {difference.rows:,} held-out rows")  # fmt: skip
    against = f"the margin {margin:g}" if margin else "0"
    if difference.beyond(margin):
        return f"v{version} beats champion v{champion_version} on {difference.metric} ({scores}; {rests_on})"
    return (f"v{version} does not beat champion v{champion_version} on {difference.metric} beyond noise ({scores}; "
            f"{rests_on}: its lower bound is not above {against})")  # fmt: skip


def _answers(model, X, task: str) -> Scored:
    proba = model.predict_proba(X) if task == "classification" and hasattr(model, "predict_proba") else None
    return Scored(np.asarray(model.predict(X)), proba)


def _score(answers: Scored, y, task: str, classes, metric: str) -> float:
    scores = compute_metrics(task, np.asarray(y), answers.predictions, answers.proba, classes=classes)
    if metric not in scores:
        raise TabtrackError(
            f"gate metric {metric!r} is not defined for this {task} data; choose another --gate-metric."
        )
    return scores[metric]
