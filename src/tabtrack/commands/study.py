"""An Optuna study as tabtrack tunes it: opened in a storage any worker can share (a local journal file, or any
SQLAlchemy URL such as PostgreSQL), and the workers that add its trials: the objective (one child run per trial,
K-fold CV, fold-wise pruning), worker processes on this machine or others (`tabtrack tune-worker`), and Ray tasks
of one trial each (`tune --ray`)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tabtrack.config import ModelConfig, RunConfig
from tabtrack.core.checks import check_training
from tabtrack.core.training import named_metrics, new_pipeline
from tabtrack.data.checked import CheckedData, check_data
from tabtrack.errors import ConfigError, TabtrackError
from tabtrack.evaluate.fitted_model import score_split
from tabtrack.models.families import get_spec
from tabtrack.models.spec import hyperparameters
from tabtrack.redact import redact_uri
from tabtrack.tracking import Tracker

if TYPE_CHECKING:
    from tabtrack.commands.cluster import RaySettings

log = logging.getLogger(__name__)

STUDY_ATTR = "tabtrack"  # the study's user attribute holding what a worker needs to join
WORKER_ATTR = "tabtrack.worker"  # a trial's user attribute: the Ray task that ran it


def open_study(optuna, storage: str, name: str, *, direction: str, iterative: bool, seed: int):
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0) if iterative else optuna.pruners.NopPruner()
    )
    try:
        study = optuna.create_study(
            storage=optuna_storage(optuna, storage), study_name=name, direction=direction,
            sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner, load_if_exists=True,
        )  # fmt: skip
    except Exception as exc:
        raise TabtrackError(
            f"cannot open Optuna storage {redact_uri(storage)}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from exc
    if study.direction.name.lower() != direction:
        raise ConfigError(
            f"study {name!r} already optimises in direction {study.direction.name.lower()}; use another --study-name."
        )
    # Each worker process opens its own study, so give it the same pruner.
    study.pruner = pruner
    return study


def optuna_storage(optuna, url: str):
    """`journal:PATH` is a local journal file (safe for several processes on one machine); anything
    else is an RDB URL (postgresql://..., sqlite:///...) that workers on other machines can share."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    return optuna.storages.RDBStorage(url)


def stop_at(optuna, total: int):
    """Stop once the study holds `total` trials, those other workers are still running included (as `total`
    counts them): counting finished ones only let every other worker's trial in flight add one too many.
    Two workers that finish within the same few milliseconds can still both start one more."""
    return optuna.study.MaxTrialsCallback(total, states=tuple(optuna.trial.TrialState))


def make_objective(
    parent: Tracker,
    config: RunConfig,
    data: CheckedData,
    *,
    metric: str,
    folds: int,
    progress=None,
    total: int = 0,
    worker: str | None = None,
):
    """An Optuna objective: one child run per trial, K-fold CV score, fold-wise pruning. `worker` names the
    Ray task running the trial (a user attribute), so a trial whose worker died can be found."""
    optuna = load_optuna()
    from sklearn.model_selection import KFold, StratifiedKFold

    spec_name = config.model.type
    search_space = get_spec(spec_name).search_space
    task = data.dataset.task
    splitter = (StratifiedKFold if task == "classification" else KFold)(
        n_splits=folds, shuffle=True, random_state=config.random_state
    )
    split = data.split
    fold_indices = list(splitter.split(split.X_train, split.y_train))

    def objective(trial) -> float:
        if worker:
            trial.set_user_attr(WORKER_ATTR, worker)
        suggested = search_space(trial, task)
        params = {**config.model.params, **suggested}
        checked = check_training(config.model_copy(update={"model": ModelConfig(type=spec_name, params=params)}), data)
        scores: list[float] = []
        pruned = False
        with parent.child_run(f"trial_{trial.number}", tags={"optuna.trial_number": str(trial.number)}) as child:
            trial.set_user_attr("run_id", child.run_id or "")
            child.log_params(
                {
                    **hyperparameters(checked.estimator),
                    "model_type": spec_name,
                    "trial": trial.number,
                    "cv_folds": folds,
                }
            )
            for step, (fit_idx, val_idx) in enumerate(fold_indices):
                pipeline = new_pipeline(checked).fit(split.X_train.iloc[fit_idx], split.y_train.iloc[fit_idx])
                values, _, _ = score_split(
                    pipeline, split.X_train.iloc[val_idx], split.y_train.iloc[val_idx], task=task,
                    classes=data.dataset.classes, custom_metrics=named_metrics(checked),
                )  # fmt: skip
                if metric not in values:
                    raise TabtrackError(f"metric {metric!r} is undefined on fold {step + 1}; choose another --metric.")
                scores.append(values[metric])
                trial.report(float(np.mean(scores)), step)
                if trial.should_prune():
                    pruned = True
                    break
            child.log_metrics(
                {
                    f"cv_{metric}_mean": float(np.mean(scores)),
                    f"cv_{metric}_std": float(np.std(scores)),
                    "n_folds_scored": len(scores),
                }
            )
            child.set_tags({"optuna.state": "PRUNED" if pruned else "COMPLETE"})
        trial.set_user_attr("estimator_params", _jsonable(suggested))
        if progress:
            progress("trial", trial.number + 1, total)
        if pruned:
            raise optuna.TrialPruned()
        return float(np.mean(scores))

    return objective


def run_worker(
    *,
    study_name: str,
    storage: str,
    total: int | None,
    timeout: float | None,
    tracking_uri: str | None,
    trials: int | None = None,
    threads: int | None = None,
    worker: str | None = None,
) -> int:
    """A worker process: joins the study, reads the run config from it, and adds trials until the study holds
    `total` finished trials (or `trials` more). Runs on any machine that reaches the storage and the MLflow
    server; `threads` caps the model's thread count (a Ray task's CPUs)."""
    optuna = load_optuna()
    from tabtrack.commands.cluster import with_threads
    from tabtrack.tracking.mlflow_tracker import MlflowTracker

    study = optuna.load_study(study_name=study_name, storage=optuna_storage(optuna, storage))
    attrs = study.user_attrs.get(STUDY_ATTR)
    if not attrs:
        raise TabtrackError(f"study {study_name!r} was not started by tabtrack tune; start it there first.")
    config = RunConfig.model_validate(attrs["config"])
    if threads:
        config = with_threads(config, threads)
    data = check_data(config)
    parent = MlflowTracker.attach(attrs["parent_run_id"], tracking_uri=tracking_uri)
    objective = make_objective(parent, config, data, metric=attrs["metric"], folds=attrs["folds"], worker=worker)
    callbacks = [stop_at(optuna, total)] if total is not None else []
    study.optimize(objective, n_trials=trials, timeout=timeout, callbacks=callbacks)
    parent.flush()
    return 0


def run_workers(
    jobs: int, storage: str, study_name: str, *, total: int, timeout: float | None, tracking_uri: str | None
) -> None:
    command = [
        sys.executable,
        "-m",
        "tabtrack",
        "tune-worker",
        "--study-name",
        study_name,
        "--storage",
        storage,
        "--until",
        str(total),
    ]
    if timeout:
        command += ["--timeout", str(timeout)]
    if tracking_uri:
        command += ["--tracking-uri", tracking_uri]
    workers = [subprocess.Popen(command) for _ in range(jobs)]
    codes = [worker.wait() for worker in workers]
    if any(codes):
        raise TabtrackError(f"{sum(1 for c in codes if c)} of {jobs} tune workers failed (exit codes {codes}).")


def _one_trial(study_name: str, storage: str, tracking_uri: str, threads: int, worker: str) -> int:
    return run_worker(
        study_name=study_name, storage=storage, total=None, trials=1, timeout=None, tracking_uri=tracking_uri,
        threads=threads, worker=worker,
    )  # fmt: skip


def tune_on_ray(settings: RaySettings, *, storage: str, study_name: str, trials: int, tracking_uri: str) -> int:
    """`trials` Ray tasks of one trial each on the study. A task whose worker died is replaced by one more
    task, and its trial given back (see _end_trials). Returns the number of tasks whose worker died."""
    from tabtrack.commands import cluster

    if storage.startswith("journal:"):  # a task's working directory is not the caller's
        storage = "journal:" + str(Path(storage.removeprefix("journal:")).resolve())
    pending: dict[str, Any] = {}

    def close(status: str, error: str | None) -> None:
        if pending:  # else no task is left to stop: no trial to look for
            _end_trials(storage, study_name, set(pending), tracking_uri, status=status, error=error)

    with cluster.runs_ended_if_stopped(close), cluster.connected(settings) as ray:
        task = ray.remote(_one_trial).options(**cluster.task_options(settings))

        def submit(worker: str):
            return task.remote(study_name, storage, tracking_uri, settings.threads, worker)

        pending.update({(worker := uuid.uuid4().hex[:12]): submit(worker) for _ in range(trials)})
        replacements: set[str] = set()
        lost = 0
        while pending:
            ready, _ = ray.wait(list(pending.values()), num_returns=1)
            worker = next(w for w, ref in pending.items() if ref == ready[0])
            try:
                ray.get(ready[0])
            except Exception as exc:
                if not cluster.worker_died(ray, exc):
                    raise TabtrackError(f"a tune task failed: {cluster.reason(ray, exc)}") from exc
                lost += 1
                _end_trials(
                    storage, study_name, {worker}, tracking_uri, status="FAILED", error=cluster.WORKER_DIED, retry=True
                )
                if worker not in replacements:  # one replacement task per task that died, not a chain of them
                    replacement = uuid.uuid4().hex[:12]
                    replacements.add(replacement)
                    pending[replacement] = submit(replacement)
            del pending[worker]
    return lost


def _end_trials(
    storage: str,
    study_name: str,
    workers: set[str],
    tracking_uri: str,
    *,
    status: str,
    error: str | None,
    retry: bool = False,
) -> None:
    """The trials the tasks `workers` left RUNNING: FAIL in the study, their runs ended as `status`. With
    `retry` (a task's worker died), a trial's parameters are enqueued so that a replacement task tries them."""
    from mlflow import MlflowClient

    from tabtrack.commands.cluster import WORKER_DIED, terminate

    optuna = load_optuna()
    client = MlflowClient(tracking_uri)
    study = optuna.load_study(study_name=study_name, storage=optuna_storage(optuna, storage))
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if trial.user_attrs.get(WORKER_ATTR) not in workers:
            continue
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        if retry:
            log.warning("trial %d: %s; given back to the study", trial.number, WORKER_DIED)
            study.enqueue_trial(trial.params, skip_if_exists=False)
        if (run_id := trial.user_attrs.get("run_id")) and client.get_run(run_id).info.status == "RUNNING":
            terminate(client, run_id, status, error)


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(params, default=str))


def load_optuna():
    """optuna, quiet (it is a dependency of tabtrack's)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna
