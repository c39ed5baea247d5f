"""`tabtrack train`, `compare`, `tune` and `tune-worker`: the commands that train models into runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import tabtrack.cli.options as o
from tabtrack.cli.app import app
from tabtrack.errors import ConfigError, TrackingError


@app.command()
def train(
    data: o.Data = None,
    target: o.Target = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="model family (tabtrack families lists them), or your own: path/to/file.py:function"
        ),
    ] = None,
    config: o.ConfigFile = None,
    test_data: Annotated[
        Path | None, typer.Option("--test-data", help="pre-split test file; DATA is then the training split")
    ] = None,
    set_: o.Set = None,
    task: o.Task = None,
    cv: o.Cv = None,
    test_size: o.TestSize = None,
    seed: o.Seed = None,
    experiment: o.Experiment = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda (mlp and xgboost)")] = None,
    tag: o.Tag = None,
    run_name: o.RunName = None,
    log_param: o.LogParam = None,
    code: o.Code = None,
    tracking_uri: o.TrackingUri = None,
    explain: o.Explain = False,
    onnx: o.Onnx = False,
    intervals: o.Intervals = None,
    no_track: o.NoTrack = False,
    offline: Annotated[
        bool, typer.Option("--offline", help="record into .tabtrack/offline/ for a later `tabtrack sync`")
    ] = False,
    register: o.Register = None,
    gate: o.Gate = False,
    min_improvement: o.MinImprovement = 0.0,
    gate_metric: Annotated[
        str | None, typer.Option("--gate-metric", help="metric the gate compares (default: primary)")
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option("--model-dir", help="also copy the logged MLflow model here (a DVC output)")
    ] = None,
    metrics_file: Annotated[
        Path | None, typer.Option("--metrics-file", help="write metrics by split as JSON (DVC metrics)")
    ] = None,
) -> None:
    """Train one model and record it as one standard MLflow run."""
    if (gate or gate_metric or min_improvement) and not register:
        raise ConfigError("--gate needs --register NAME.")
    if register and no_track:
        raise ConfigError("--register needs a tracked run; drop --no-track.")
    if model_dir and no_track:
        raise ConfigError("--model-dir copies the run's logged model; drop --no-track.")
    if offline and (no_track or register):
        raise ConfigError(
            "--offline records a run for later upload; it does not combine with --no-track or --register."
        )
    from tabtrack.cli.output import console, fold_progress, print_train_result
    from tabtrack.core.checks import check_training
    from tabtrack.core.training import run_training, write_metrics_file

    resolved = o.run_config(
        data, config=config, overrides=set_, explain=explain, onnx=onnx, tag=tag, log_param=log_param, code=code, model=model,
        target=target, test_data=test_data, task=task, cv_folds=cv, test_size=test_size, random_state=seed,
        experiment=experiment, device=device, run_name=run_name, intervals=intervals,
    )  # fmt: skip
    checked = check_training(resolved)
    with fold_progress() as progress:
        result = run_training(
            checked, tracking_uri=tracking_uri, track=not no_track, progress=progress, offline=offline,
            fit_ahead=True,  # a fresh process: the fit overlaps MLflow's start-up
        )  # fmt: skip
    print_train_result(result, console)
    if metrics_file:
        write_metrics_file(result, metrics_file)
    if model_dir:
        from tabtrack.tracking.store import copy_model

        copy_model(result.model_uri, model_dir, tracking_uri=tracking_uri)
        typer.echo(f"model copied to {model_dir}")
    if register:
        if result.offline_bundle:
            raise TrackingError(
                "the run was recorded offline, so it cannot be registered now; "
                "run `tabtrack sync`, then `tabtrack register RUN_ID --name NAME`."
            )
        register_result(result, register, gate=gate or bool(min_improvement), metric=gate_metric,
                        min_improvement=min_improvement, tracking_uri=tracking_uri)  # fmt: skip


def register_result(
    result, name: str, *, gate: bool, metric: str | None, tracking_uri: str | None, min_improvement: float = 0.0
) -> None:
    """`--register NAME [--gate]` after a run: a new version of NAME, gated against the champion."""
    from tabtrack.commands import registry

    version = registry.register(result.run_id, name=name, tracking_uri=tracking_uri)
    if version is None:  # under `tabtrack reproduce`
        return
    typer.echo(f"registered: {name} version {version.version}  (models:/{name}/{version.version})")
    if gate:
        decision = registry.gate(
            name, version.version, X_test=result.X_test, y_test=result.y_test, task=result.task,
            classes=result.classes, metric=metric, tracking_uri=tracking_uri, min_improvement=min_improvement,
            random_state=result.config.random_state,
        )  # fmt: skip
        typer.echo(f"gate: {decision.alias}: {decision.reason}")


@app.command()
def compare(
    data: o.Data = None,
    target: o.Target = None,
    models: Annotated[
        str | None, typer.Option("--models", help="comma-separated families; default: all installed for the task")
    ] = None,
    metric: o.Metric = None,
    cv: Annotated[
        int | None, typer.Option("--cv", help="K-fold CV in each model's run, which ranks them (default 5)")
    ] = None,
    config: o.ConfigFile = None,
    set_: o.Set = None,
    params: Annotated[
        list[str] | None, typer.Option("--params", help="one model's parameter: MODEL.NAME=VALUE (repeatable)")
    ] = None,
    task: o.Task = None,
    test_size: o.TestSize = None,
    seed: o.Seed = None,
    experiment: o.Experiment = None,
    tag: o.Tag = None,
    run_name: o.RunName = None,
    log_param: o.LogParam = None,
    code: o.Code = None,
    tracking_uri: o.TrackingUri = None,
    explain: o.Explain = False,
    onnx: o.Onnx = False,
    no_track: o.NoTrack = False,
    register: o.Register = None,
    gate: o.Gate = False,
    ray: o.Ray = None,
    cpus_per_task: o.CpusPerTask = 1.0,
    gpus_per_task: o.GpusPerTask = 0.0,
) -> None:
    """Train several model families on the same split and rank them by cross-validation: one parent run,
    one child per model."""
    if gate and not register:
        raise ConfigError("--gate needs --register NAME.")
    from tabtrack.cli.output import LEADERBOARD_NOTE, console, fold_progress, leaderboard_table
    from tabtrack.commands.compare import compare as compare_models

    resolved = o.run_config(
        data, config=config, overrides=set_, explain=explain, onnx=onnx, tag=tag, log_param=log_param, code=code, target=target,
        task=task, cv_folds=cv, test_size=test_size, random_state=seed, experiment=experiment, run_name=run_name,
    )  # fmt: skip
    with fold_progress() as progress:
        result = compare_models(
            resolved, models=models.split(",") if models else None, metric=metric, params=o.model_params(params),
            tracking_uri=tracking_uri, track=not no_track, progress=progress,
            ray=o.ray_settings(ray, cpus_per_task, gpus_per_task),
        )  # fmt: skip
    console.print(leaderboard_table(result.leaderboard, metric=result.metric, title=f"compare · {result.experiment}"))
    if len(result.leaderboard) > 1:
        typer.echo(LEADERBOARD_NOTE)
    if result.run_id:
        console.print(f"parent run: {result.run_id}   best: {result.best_model}")
    for model_name, error in result.failures.items():
        typer.echo(f"failed: {model_name}: {error}", err=True)
    if register and result.best_model:
        register_result(
            result.results[result.best_model], register, gate=gate, metric=result.metric, tracking_uri=tracking_uri
        )


@app.command()
def tune(
    data: o.Data = None,
    target: o.Target = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="model family to tune")] = None,
    trials: Annotated[int, typer.Option("--trials", "-n", help="trials to add to the study")] = 20,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="stop adding trials after this many seconds")
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="worker processes sharing the study")] = 1,
    storage: Annotated[
        str | None,
        typer.Option("--storage", help="Optuna storage URL, e.g. postgresql://...; default: .tabtrack/optuna.journal"),
    ] = None,
    study_name: Annotated[str | None, typer.Option("--study-name", help="same name resumes the study")] = None,
    metric: o.Metric = None,
    cv: Annotated[int | None, typer.Option("--cv", help="folds per trial (default 3)")] = None,
    config: o.ConfigFile = None,
    set_: o.Set = None,
    seed: o.Seed = None,
    experiment: o.Experiment = None,
    tag: o.Tag = None,
    tracking_uri: o.TrackingUri = None,
    register: o.Register = None,
    gate: o.Gate = False,
    onnx: o.Onnx = False,
    ray: o.Ray = None,
    cpus_per_task: o.CpusPerTask = 1.0,
    gpus_per_task: o.GpusPerTask = 0.0,
) -> None:
    """Tune a model family's hyperparameters with Optuna: one child run per trial, best refit on the parent."""
    from tabtrack.cli.output import console, fold_progress, print_train_result
    from tabtrack.commands.tune import tune as tune_model

    if gate and not register:
        raise ConfigError("--gate needs --register NAME.")
    resolved = o.run_config(
        data, config=config, overrides=set_, onnx=onnx, tag=tag, model=model, target=target, cv_folds=cv, random_state=seed,
        experiment=experiment,
    )  # fmt: skip
    with fold_progress() as progress:
        result = tune_model(
            resolved, trials=trials, timeout=timeout, jobs=jobs, storage=storage, study_name=study_name,
            metric=metric, tracking_uri=tracking_uri, progress=progress,
            ray=o.ray_settings(ray, cpus_per_task, gpus_per_task),
        )  # fmt: skip
    console.print(
        f"study {result.study_name} ({result.storage}): {result.n_trials} trials; best cv {result.metric} {result.best_value:.4f}"
    )
    console.print(f"best params: {result.best_params}")
    print_train_result(result.refit, console)
    if register:
        register_result(result.refit, register, gate=gate, metric=None, tracking_uri=tracking_uri)


@app.command("tune-worker")
def tune_worker(
    study_name: Annotated[str, typer.Option("--study-name")],
    storage: Annotated[
        str, typer.Option("--storage", help="the study's storage URL (shared PostgreSQL for other machines)")
    ],
    until: Annotated[
        int, typer.Option("--until", help="stop once the study holds this many trials, running ones included")
    ],
    timeout: Annotated[float | None, typer.Option("--timeout")] = None,
    tracking_uri: o.TrackingUri = None,
) -> None:
    """Add trials to a study that `tabtrack tune` started (on this machine or another)."""
    from tabtrack.commands.study import run_worker

    raise typer.Exit(
        run_worker(study_name=study_name, storage=storage, total=until, timeout=timeout, tracking_uri=tracking_uri)
    )
