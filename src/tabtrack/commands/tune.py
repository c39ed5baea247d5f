"""`tabtrack tune`: Optuna (TPE) over a model family's declared search space; every trial a nested child run
`trial_{n}` scored by K-fold CV on the training split (commands/study.py); the parent refits the best params and
logs a complete standard run. Studies live in an Optuna storage (a local journal file by default, PostgreSQL to
share one study between machines), so re-running with the same study name resumes it.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tabtrack.commands.study import (
    STUDY_ATTR,
    load_optuna,
    make_objective,
    open_study,
    optuna_storage,
    run_workers,
    stop_at,
)
from tabtrack.config import ModelConfig, RunConfig
from tabtrack.core.checks import check_training
from tabtrack.core.recorder import Progress, Recorder
from tabtrack.core.training import TrainResult, record_training, training_tags
from tabtrack.data.checked import check_data
from tabtrack.errors import ConfigError, TabtrackError
from tabtrack.evaluate.metrics import GREATER_IS_BETTER, chosen_metric
from tabtrack.redact import redact_uri
from tabtrack.tracking import Tracker, make_tracker

if TYPE_CHECKING:
    from tabtrack.commands.cluster import RaySettings

log = logging.getLogger(__name__)

DEFAULT_STORAGE_FILE = Path(".tabtrack") / "optuna.journal"
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
    optuna = load_optuna()
    if trials < 1 or jobs < 1:
        raise ConfigError("--trials and --jobs must be at least 1.")
    jobs = min(jobs, trials)  # each worker starts a trial before any stop check
    if ray is not None:
        from tabtrack.commands.cluster import shareable

        config = shareable(config)
    data = check_data(config)
    checked = check_training(config, data)
    spec = checked.spec
    if spec.search_space is None:
        raise ConfigError(f"model {spec.name!r} declares no search space to tune.")
    task = data.dataset.task
    metric = chosen_metric(metric, task, len(data.dataset.classes) if data.dataset.classes is not None else None)
    direction = "maximize" if GREATER_IS_BETTER[metric] else "minimize"
    folds = config.cv_folds if config.cv_folds >= 2 else DEFAULT_TUNE_FOLDS
    study_name = study_name or f"{checked.experiment}-{spec.name}"
    storage_url = storage or f"journal:{DEFAULT_STORAGE_FILE}"
    study = open_study(
        optuna, storage_url, study_name, direction=direction, iterative=spec.iterative, seed=config.random_state
    )
    before = len(study.trials)

    tracker = tracker or make_tracker(tracking_uri=tracking_uri, allow_offline=False)  # workers attach
    run_name = f"tune_{spec.name}_{datetime.now():%Y%m%d_%H%M%S}"
    tags = {
        **training_tags(checked, kind="tune"),
        "optuna.study_name": study_name,
        "optuna.storage": redact_uri(storage_url),
    }
    with tracker.run(experiment=checked.experiment, run_name=run_name, tags=tags) as parent:
        recorder = Recorder(parent, run_name=run_name, experiment=checked.experiment, tags=tags)
        recorder.add_params(
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
            from tabtrack.commands.study import tune_on_ray

            tune_on_ray(
                ray, storage=storage_url, study_name=study_name, trials=trials, tracking_uri=parent.tracking_uri
            )
        elif jobs == 1:
            objective = make_objective(parent, config, data, metric=metric, folds=folds, progress=progress, total=total)
            study.optimize(objective, n_trials=trials, timeout=timeout, callbacks=[stop_at(optuna, total)])
        else:
            run_workers(jobs, storage_url, study_name, total=total, timeout=timeout, tracking_uri=tracking_uri)
        study = optuna.load_study(study_name=study_name, storage=optuna_storage(optuna, storage_url))
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not done:
            raise TabtrackError(f"no trial of study {study_name!r} completed; see the FAILED trial runs for why.")
        best = study.best_trial
        best_params = best.user_attrs["estimator_params"]
        states = [t.state.name for t in study.trials]
        recorder.add_params(
            {f"best.{k}": v for k, v in best_params.items()} | {"best_trial": best.number, "study_name": study_name}
        )
        recorder.log_metrics(
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
        refit = record_training(recorder, best_checked, progress=progress)
    return TuneResult(
        parent.run_id, study_name, redact_uri(storage_url), metric, best.value, best_params, len(study.trials), refit
    )


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
