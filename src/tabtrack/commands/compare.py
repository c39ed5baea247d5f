"""`tabtrack compare`: several model families on the same split, one parent run, one child run per
model (each a full standard run), and a leaderboard that answers "which was better?".

The winner is chosen by K-fold cross-validation on the training split, never by the test split: a
model picked for its test score has a test score that overstates it, and the test split is then no
longer an estimate of anything. The test metrics are shown beside, for the record."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from tabtrack.config import ModelConfig, RunConfig
from tabtrack.core.checks import CheckedInputs, check_training
from tabtrack.core.recorder import Progress, Recorder
from tabtrack.core.training import TrainResult, run_training, training_tags
from tabtrack.data.checked import check_data
from tabtrack.errors import ConfigError, TabtrackError
from tabtrack.evaluate.metrics import GREATER_IS_BETTER, chosen_metric
from tabtrack.models.families import available_models, get_spec
from tabtrack.pages.markdown import markdown_table
from tabtrack.tracking import Tracker, make_tracker

if TYPE_CHECKING:
    from tabtrack.commands.cluster import RaySettings

log = logging.getLogger(__name__)

DEFAULT_COMPARE_FOLDS = 5


@dataclass
class CompareResult:
    run_id: str | None
    experiment: str
    metric: str
    leaderboard: pd.DataFrame  # one row per model, best first; failed models last
    results: dict[str, TrainResult] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # model -> error

    @property
    def best_model(self) -> str | None:
        ok = self.leaderboard[self.leaderboard["status"] == "FINISHED"]
        return None if ok.empty else str(ok.iloc[0]["model"])


def compare(
    config: RunConfig,
    *,
    models: Sequence[str] | None = None,
    metric: str | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    tracker: Tracker | None = None,
    tracking_uri: str | None = None,
    track: bool = True,
    progress: Progress | None = None,
    ray: RaySettings | None = None,
) -> CompareResult:
    """Train each model on the same data and split (one seed) and rank them by the cross-validated mean
    of `metric` on the training split (default: the task's primary metric; direction read from the
    metric's definition). K folds from the config (`--cv K`), 5 when it sets none; fewer than 2 is an error.
    `ray`: each model a task on a Ray cluster, logging its child run to the same tracking server."""
    config = _with_folds(config)
    if ray is not None:
        if not track:
            raise ConfigError("--ray records each model from its own task, so it needs tracking; drop --no-track.")
        from tabtrack.commands.cluster import shareable

        config = shareable(config)
    data = check_data(config)
    task = data.dataset.task
    n_classes = len(data.dataset.classes) if data.dataset.classes is not None else None
    chosen = _check_models(models, task)
    metric = chosen_metric(metric, task, n_classes)
    params = dict(params or {})
    unknown = sorted(set(params) - set(chosen))
    if unknown:
        raise ConfigError(f"--params names model(s) not being compared: {', '.join(unknown)}.")
    checked: dict[str, CheckedInputs] = {
        name: check_training(
            # each child is named after its model; --run-name names the parent
            config.model_copy(
                update={"model": ModelConfig(type=name, params=dict(params.get(name, {}))), "run_name": None}
            ),
            data,
        )
        for name in chosen
    }
    # Ray tasks attach to the parent run on the server, so --ray does not fall back to an offline bundle.
    tracker = tracker or make_tracker(track=track, tracking_uri=tracking_uri, allow_offline=ray is None)
    first = next(iter(checked.values()))
    run_name = config.run_name or f"compare_{datetime.now():%Y%m%d_%H%M%S}"
    tags = training_tags(first, kind="compare")

    results: dict[str, TrainResult] = {}
    failures: dict[str, str] = {}
    seconds: dict[str, float] = {}
    with tracker.run(experiment=first.experiment, run_name=run_name, tags=tags) as parent:
        Recorder(parent, run_name=run_name, experiment=first.experiment, tags=tags).record_settings(
            config.model_dump(mode="json")
        )
        parent.log_params(
            {
                "models": ",".join(chosen), "metric": metric, "task": task, "target": config.target,
                "test_size": config.test_size, "random_state": config.random_state, "cv_folds": config.cv_folds,
                "n_train_samples": len(data.split.X_train), "n_test_samples": len(data.split.X_test),
                **config.extra_params,
            }
        )  # fmt: skip
        if ray is not None:
            parent.flush()
            results, failures, seconds = compare_on_ray(
                ray, {name: c.config for name, c in checked.items()}, parent_run_id=parent.run_id,
                tracking_uri=parent.tracking_uri,
            )  # fmt: skip
        else:
            for index, name in enumerate(chosen, start=1):
                start = time.perf_counter()
                try:
                    results[name] = run_training(checked[name], tracker=parent.nested(), progress=progress)
                except Exception as exc:
                    failures[name] = f"{type(exc).__name__}: {exc}"
                    log.warning("model %s failed: %s", name, failures[name])
                seconds[name] = time.perf_counter() - start
                if progress:
                    progress("model", index, len(chosen))
        board = leaderboard(results, failures, seconds, metric=metric)
        parent.log_text(board.to_csv(index=False), "leaderboard.csv")
        parent.log_text(markdown_table(board, digits=4), "leaderboard.md")  # a failure's error is its last column
        if parent.stores_artifacts and len(results) >= 2:
            parent.log_text(_comparison_page(board, results, title=f"{first.experiment}: {run_name}"), "compare.html")
        best = board[board["status"] == "FINISHED"]
        if not best.empty:
            top = best.iloc[0]
            parent.set_tags({"best.model": str(top["model"]), "best.run_id": str(top["run_id"])})
            parent.log_metrics(
                {
                    f"best_cv_{metric}_mean": float(top[f"cv_{metric}_mean"]),
                    f"best_test_{metric}": float(top[f"test_{metric}"]),
                }
            )
        if failures:
            parent.set_tags({"failed_models": ",".join(sorted(failures))})
        result = CompareResult(parent.run_id, first.experiment, metric, board, results, failures)
    if not results:
        raise TabtrackError(f"every model failed: {'; '.join(f'{m}: {e}' for m, e in failures.items())}")
    return result


# -- on Ray ---------------------------------------------------------------------------------------------------
def _train_model(config_json: dict, parent_run_id: str, tracking_uri: str, threads: int):
    """One model of a comparison, on a Ray worker: check its inputs there, then one standard child run."""
    from tabtrack.commands.cluster import with_threads
    from tabtrack.tracking.mlflow_tracker import MlflowTracker

    started = time.perf_counter()
    config = with_threads(RunConfig.model_validate(config_json), threads)
    checked = check_training(config)
    parent = MlflowTracker.attach(parent_run_id, tracking_uri=tracking_uri)
    result = run_training(checked, tracker=parent.nested())
    return result, time.perf_counter() - started


def compare_on_ray(
    settings: RaySettings, configs: dict[str, RunConfig], *, parent_run_id: str, tracking_uri: str
) -> tuple[dict[str, Any], dict[str, str], dict[str, float]]:
    """Each model a Ray task; results, failures and seconds by model name, as the in-process loop gives them."""
    from tabtrack.commands import cluster

    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    seconds: dict[str, float] = {}
    pending: dict[str, Any] = {}

    def close(status: str, error: str | None) -> None:
        if pending:  # else no task started (Ray could not be joined, say): no run to look for
            cluster.end_open_runs(tracking_uri, parent_run_id, status=status, error=error)

    with cluster.runs_ended_if_stopped(close), cluster.connected(settings) as ray:
        task = ray.remote(_train_model).options(**cluster.task_options(settings))
        for name, config in configs.items():
            config_json = cluster.shareable(config).model_dump(mode="json")
            pending[name] = task.remote(config_json, parent_run_id, tracking_uri, settings.threads)
        for name, ref in pending.items():
            try:
                results[name], seconds[name] = ray.get(ref)
            except Exception as exc:
                failures[name] = cluster.reason(ray, exc)
                log.warning("model %s failed: %s", name, failures[name])
                if cluster.worker_died(ray, exc):
                    cluster.end_open_runs(
                        tracking_uri, parent_run_id, model=name, status="FAILED", error=cluster.WORKER_DIED
                    )
    return results, failures, seconds


def leaderboard(
    results: Mapping[str, TrainResult], failures: Mapping[str, str], seconds: Mapping[str, float], *, metric: str
) -> pd.DataFrame:
    """Rows best first by the CV mean of `metric` (its direction from GREATER_IS_BETTER), then by the
    smaller spread; failed models last. Columns: the CV mean and std of every metric the direction of
    which is known, then the test metrics."""
    rows = []
    for name, result in results.items():
        row: dict[str, Any] = {"model": name, "status": "FINISHED", "run_id": result.run_id or ""}
        cv = result.metrics.get("cv", {})
        for other in _ranked_first(metric, cv, suffix="_mean"):
            row[f"cv_{other}_mean"], row[f"cv_{other}_std"] = cv.get(f"{other}_mean"), cv.get(f"{other}_std")
        for other in _ranked_first(metric, result.metrics["test"]):
            row[f"test_{other}"] = result.metrics["test"][other]
        row["seconds"] = round(seconds.get(name, 0.0), 2)
        rows.append(row)
    board = pd.DataFrame(rows)
    if not board.empty:
        board = board.sort_values(
            [f"cv_{metric}_mean", f"cv_{metric}_std"],
            ascending=[not GREATER_IS_BETTER[metric], True],
            kind="stable",
            na_position="last",
        )
    failed = pd.DataFrame(
        [
            {
                "model": name,
                "status": "FAILED",
                "run_id": "",
                "error": error,
                "seconds": round(seconds.get(name, 0.0), 2),
            }
            for name, error in failures.items()
        ]
    )
    if not board.empty:
        board = _against_the_best(board.reset_index(drop=True), results, metric)
    board = pd.concat([board, failed], ignore_index=True) if not failed.empty else board.reset_index(drop=True)
    board.insert(0, "rank", range(1, len(board) + 1))
    return board


def _against_the_best(board: pd.DataFrame, results: Mapping[str, TrainResult], metric: str) -> pd.DataFrame:
    """Whether the CV winner beats each other model beyond noise on `metric`: the models share their folds, so their
    fold scores are paired (evaluate/paired.py: corrected_fold_test). Columns `vs_best` (best, beyond noise,
    within noise), `vs_best_difference` (the winner's advantage, positive), its 95% interval and p-value."""
    from tabtrack.evaluate.paired import corrected_fold_test

    def folds(name: str) -> list[float] | None:
        scores = [fold.get(metric) for fold in results[name].fold_metrics]
        return scores if len(scores) >= 2 and None not in scores else None

    best = board.loc[0, "model"]
    rows = []
    for name in board["model"]:
        winner, other = folds(best), folds(name)
        if name == best or winner is None or other is None or len(winner) != len(other):
            rows.append({"vs_best": "best" if name == best else "no fold scores"})
            continue
        test = corrected_fold_test(winner, other, greater_is_better=GREATER_IS_BETTER[metric])
        rows.append({"vs_best": "beyond noise" if test.beyond_noise else "within noise",
                     "vs_best_difference": test.difference, "vs_best_low": test.low, "vs_best_high": test.high,
                     "vs_best_p_value": test.p_value})  # fmt: skip
    columns = ["vs_best", "vs_best_difference", "vs_best_low", "vs_best_high", "vs_best_p_value"]
    return pd.concat([board, pd.DataFrame(rows, columns=columns)], axis=1)


def _ranked_first(metric: str, values: Mapping[str, float], suffix: str = "") -> list[str]:
    """The metric names in `values` whose direction is known, the ranking metric first."""
    names = [key.removesuffix(suffix) for key in values if key.endswith(suffix)]
    known = [name for name in names if name in GREATER_IS_BETTER and name != metric]
    return [metric, *known]


def _with_folds(config: RunConfig) -> RunConfig:
    if "cv_folds" not in config.model_fields_set:  # neither the config file, --cv nor --set chose
        return config.model_copy(update={"cv_folds": DEFAULT_COMPARE_FOLDS})
    if config.cv_folds < 2:
        raise ConfigError(
            f"compare ranks models by cross-validation on the training split, so it needs --cv 2 or more "
            f"(got {config.cv_folds}); leave --cv out for {DEFAULT_COMPARE_FOLDS} folds."
        )
    return config


def _say_left_out(task: str) -> None:
    """One line naming the families compare leaves out because their packages are not installed, and how to add them."""
    from tabtrack.extras import install_hint
    from tabtrack.models.families import all_specs

    missing = {
        spec.name: packages for spec in all_specs() if task in spec.tasks and (packages := spec.missing_packages())
    }
    if missing:
        hints = sorted({install_hint(packages[0]) for packages in missing.values()})
        log.warning("compare leaves out %s (not installed): %s", ", ".join(sorted(missing)), "; ".join(hints))


def _check_models(models: Iterable[str] | None, task: str) -> list[str]:
    if not models:
        chosen = available_models(task)
        if not chosen:
            raise ConfigError(f"no installed model family supports {task}.")
        _say_left_out(task)
        return chosen
    chosen = list(dict.fromkeys(m.strip() for m in models if m.strip()))
    for name in chosen:
        spec = get_spec(name)  # unknown names: an error listing the valid ones
        if task not in spec.tasks:
            raise ConfigError(f"model {name!r} does not support {task}; drop it from --models.")
    return chosen


def _comparison_page(board: pd.DataFrame, results: Mapping[str, TrainResult], *, title: str) -> str:
    """compare.html: the models' runs in leaderboard order, from what they recorded (no second read)."""
    from tabtrack.pages.comparison_page import RunView, overlaid_curves, render_comparison, render_figures

    views = [
        RunView(
            run_id=result.run_id or name,
            run_name=result.run_name,
            params={k: str(v) for k, v in result.params.items()},
            metrics=result.flat_metrics(),
            tags=result.tags,
            predictions=result.predictions,
            ui_url=result.ui_url,
        )
        for name in board["model"]
        if (result := results.get(name)) is not None
    ]
    return render_comparison(views, render_figures(overlaid_curves(views)), title=title)
