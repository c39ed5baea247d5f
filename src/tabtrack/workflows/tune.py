"""`tabtrack tune`: Optuna (TPE) over a model family's declared search space; every trial a nested
child run `trial_{n}` scored by K-fold CV on the training split; the parent refits the best params
and logs a complete standard run. Studies live in an Optuna storage (a local journal file by default,
PostgreSQL to share one study between machines), so re-running with the same study name resumes it.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tabtrack.config import ModelConfig, RunConfig
from tabtrack.errors import ConfigError, TabtrackError
from tabtrack.evaluate.metrics import GREATER_IS_BETTER, primary_metric
from tabtrack.models import get_spec
from tabtrack.models.spec import hyperparameters
from tabtrack.redact import redact_uri
from tabtrack.tracking import Tracker, make_tracker
from tabtrack.workflows.checks import CheckedData, check_data, check_training
from tabtrack.workflows.evaluation import score_split
from tabtrack.workflows.recording import run_params, run_tags
from tabtrack.workflows.train import Progress, TrainResult, named_metrics, new_pipeline, record_training

if TYPE_CHECKING:
    from tabtrack.workflows.cluster import RaySettings

log = logging.getLogger(__name__)

DEFAULT_STORAGE_FILE = Path(".tabtrack") / "optuna.journal"
STUDY_ATTR = "tabtrack"  # the study's user attribute holding what a worker needs to join
WORKER_ATTR = "tabtrack.worker"  # a trial's user attribute: the Ray task that ran it
DEFAULT_TUNE_FOLDS = 3


@dataclass
class TuneResult:
    run_id: str | None
    study_name: str
    storage: str
    metric: str
    best_value: float
    best_params: dict[str, Any]
    n_trials: int  # trials in the study after this session (all sessions and workers)
    refit: TrainResult


def tune(
    config: RunConfig,
    *,
    trials: int,
    timeout: float | None = None,
    jobs: int = 1,
    storage: str | None = None,
    study_name: str | None = None,
    metric: str | None = None,
    tracking_uri: str | None = None,
    tracker: Tracker | None = None,
    progress: Progress | None = None,
    ray: RaySettings | None = None,
) -> TuneResult:
    """`ray`: each trial a task on a Ray cluster instead of `jobs` worker processes here."""
    optuna = _optuna()
    if trials < 1 or jobs < 1:
        raise ConfigError("--trials and --jobs must be at least 1.")
    jobs = min(jobs, trials)  # each worker starts a trial before any stop check
    if ray is not None:
        from tabtrack.workflows.cluster import shareable

        config = shareable(config)
    data = check_data(config)
    checked = check_training(config, data)
    spec = checked.spec
    if spec.search_space is None:
        raise ConfigError(f"model {spec.name!r} declares no search space to tune.")
    task = data.dataset.task
    metric = metric or primary_metric(task, len(data.dataset.classes) if data.dataset.classes is not None else None)
    if metric not in GREATER_IS_BETTER:
        raise ConfigError(f"unknown --metric {metric!r}; use one of {', '.join(sorted(GREATER_IS_BETTER))}.")
    direction = "maximize" if GREATER_IS_BETTER[metric] else "minimize"
    folds = config.cv_folds if config.cv_folds >= 2 else DEFAULT_TUNE_FOLDS
    study_name = study_name or f"{checked.experiment}-{spec.name}"
    storage_url = storage or f"journal:{DEFAULT_STORAGE_FILE}"
    study = _open_study(
        optuna, storage_url, study_name, direction=direction, iterative=spec.iterative, seed=config.random_state
    )
    before = len(study.trials)

    tracker = tracker or make_tracker(tracking_uri=tracking_uri, allow_offline=False)  # workers attach
    run_name = f"tune_{spec.name}_{datetime.now():%Y%m%d_%H%M%S}"
    tags = {
        **run_tags(checked),
        "tabtrack.kind": "tune",
        "optuna.study_name": study_name,
        "optuna.storage": redact_uri(storage_url),
    }
    with tracker.run(experiment=checked.experiment, run_name=run_name, tags=tags) as parent:
        parent.log_params(
            {"n_trials": trials, "metric": metric, "direction": direction, "tune_cv_folds": folds, "jobs": jobs}
        )
        study.set_user_attr(
            STUDY_ATTR,
            {
                "config": config.model_dump(mode="json"),
                "parent_run_id": parent.run_id,
                "metric": metric,
                "folds": folds,
            },
        )
        total = before + trials
        if ray is not None:
            from tabtrack.workflows.cluster import tune_on_ray

            tune_on_ray(
                ray, storage=storage_url, study_name=study_name, trials=trials, tracking_uri=parent.tracking_uri
            )
        elif jobs == 1:
            objective = make_objective(parent, config, data, metric=metric, folds=folds, progress=progress, total=total)
            study.optimize(objective, n_trials=trials, timeout=timeout, callbacks=[_stop_at(optuna, total)])
        else:
            _run_workers(jobs, storage_url, study_name, total=total, timeout=timeout, tracking_uri=tracking_uri)
        study = optuna.load_study(study_name=study_name, storage=_storage(optuna, storage_url))
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not done:
            raise TabtrackError(f"no trial of study {study_name!r} completed; see the FAILED trial runs for why.")
        best = study.best_trial
        best_params = best.user_attrs["estimator_params"]
        states = [t.state.name for t in study.trials]
        parent.log_params(
            {f"best.{k}": v for k, v in best_params.items()} | {"best_trial": best.number, "study_name": study_name}
        )
        parent.log_metrics(
            {
                f"best_cv_{metric}": best.value,
                "n_trials_complete": states.count("COMPLETE"),
                "n_trials_pruned": states.count("PRUNED"),
            }
        )
        for path, png in _study_plots(optuna, study, metric).items():
            parent.log_bytes(png, path)
        best_config = config.model_copy(
            update={"model": ModelConfig(type=spec.name, params={**config.model.params, **best_params})}
        )
        best_checked = check_training(best_config, data)
        refit = record_training(
            parent, best_checked, run_name=run_name, params=run_params(best_checked), tags=tags, progress=progress
        )
    return TuneResult(
        parent.run_id, study_name, redact_uri(storage_url), metric, best.value, best_params, len(study.trials), refit
    )


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
    optuna = _optuna()
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
    optuna = _optuna()
    from tabtrack.tracking.mlflow_tracker import MlflowTracker
    from tabtrack.workflows.cluster import with_threads

    study = optuna.load_study(study_name=study_name, storage=_storage(optuna, storage))
    attrs = study.user_attrs.get(STUDY_ATTR)
    if not attrs:
        raise TabtrackError(f"study {study_name!r} was not started by tabtrack tune; start it there first.")
    config = RunConfig.model_validate(attrs["config"])
    if threads:
        config = with_threads(config, threads)
    data = check_data(config)
    parent = MlflowTracker.attach(attrs["parent_run_id"], tracking_uri=tracking_uri)
    objective = make_objective(parent, config, data, metric=attrs["metric"], folds=attrs["folds"], worker=worker)
    callbacks = [_stop_at(optuna, total)] if total is not None else []
    study.optimize(objective, n_trials=trials, timeout=timeout, callbacks=callbacks)
    parent.flush()
    return 0


def _run_workers(
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


def _open_study(optuna, storage: str, name: str, *, direction: str, iterative: bool, seed: int):
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0) if iterative else optuna.pruners.NopPruner()
    )
    try:
        study = optuna.create_study(
            storage=_storage(optuna, storage), study_name=name, direction=direction,
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


def _storage(optuna, url: str):
    """`journal:PATH` is a local journal file (safe for several processes on one machine); anything
    else is an RDB URL (postgresql://..., sqlite:///...) that workers on other machines can share."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    return optuna.storages.RDBStorage(url)


def _stop_at(optuna, total: int):
    """Stop once the study holds `total` trials, those other workers are still running included (as `total`
    counts them): counting finished ones only let every other worker's trial in flight add one too many.
    Two workers that finish within the same few milliseconds can still both start one more."""
    return optuna.study.MaxTrialsCallback(total, states=tuple(optuna.trial.TrialState))


def _study_plots(optuna, study, metric: str) -> dict[str, bytes]:
    """Optimisation history, parameter importances and parallel coordinates as PNGs (pyplot figures, closed after use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tabtrack.evaluate.plots import render_png

    images: dict[str, bytes] = {}
    for name, title, draw in (
        ("optimization_history", "Optimization history", optuna.visualization.matplotlib.plot_optimization_history),
        ("param_importances", "Hyperparameter importances", optuna.visualization.matplotlib.plot_param_importances),
        # each trial a line through its hyperparameters, coloured by the CV metric
        ("parallel_coordinates", "Parallel coordinates", optuna.visualization.matplotlib.plot_parallel_coordinate),
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                axes = draw(study)
        except (ValueError, RuntimeError) as exc:  # importances need >= 2 completed trials with varying params
            log.info("skipped %s plot: %s", name, exc)
            continue
        figure = axes.figure
        for loc in ("left", "right"):  # Optuna titles some plots on the left; one centred title instead
            axes.set_title("", loc=loc)
        axes.set_title(f"{title}\n{study.study_name} · cv {metric}", fontsize=10)
        figure.set_size_inches(7, 4.8)
        figure.tight_layout()
        images[f"plots/{name}.png"] = render_png(figure)
        plt.close(figure)
    return images


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(params, default=str))


def _optuna():
    try:
        import optuna
    except ImportError as exc:
        raise ConfigError("tabtrack tune needs optuna: pip install 'tabtrack[tune]'") from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna
