"""The command line: thin wrappers that parse options and call workflows.

Heavy imports (pandas, scikit-learn, mlflow) happen inside commands so `--help` is instant.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from tabtrack import __version__
from tabtrack.errors import ConfigError, TabtrackError, TrackingError
from tabtrack.tracking.base import FAILED_RUN_ATTR, TRACEBACK_FILE

app = typer.Typer(
    name="tabtrack",
    help="Train tabular models into complete, reproducible MLflow runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # internal bugs keep a plain traceback (and no locals: they may hold secrets)
    rich_markup_mode=None,  # plain click help: rich's help renderer costs ~70 ms of the 0.3 s start-up budget
)

_verbose = False  # --verbose: bugs keep their traceback on the terminal

RunName = Annotated[str | None, typer.Option("--run-name", help="MLflow run name (default: {model}_{timestamp})")]
LogParam = Annotated[
    list[str] | None, typer.Option("--log-param", help="an extra param recorded as given: KEY=VALUE (repeatable)")
]
Code = Annotated[
    list[str] | None, typer.Option("--code", help="your code the model needs; it ships with it (repeatable)")
]

TrackingUri = Annotated[
    str | None,
    typer.Option("--tracking-uri", help="MLflow tracking URI; default: $MLFLOW_TRACKING_URI, else ./mlflow.db"),
]
Ray = Annotated[
    str | None,
    typer.Option(
        "--ray", metavar="[ADDRESS]",
        help="run each model/trial as a Ray task: ADDRESS as ray.init takes it (auto: the running cluster); "
        "bare: a local Ray. Put it after DATA.",
    ),
]  # fmt: skip
CpusPerTask = Annotated[float, typer.Option("--cpus-per-task", help="with --ray: CPUs (and model threads) per task")]
GpusPerTask = Annotated[float, typer.Option("--gpus-per-task", help="with --ray: GPUs per task")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tabtrack {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show library logs, MLflow's included, and tracebacks of bugs.")
    ] = False,
) -> None:
    global _verbose
    _verbose = verbose
    _configure_logging(verbose)


@app.command()
def train(
    data: Annotated[
        str | None, typer.Argument(help="CSV or Parquet file or s3:// URL (or `data:` in --config)")
    ] = None,
    target: Annotated[str | None, typer.Option("--target", "-t", help="target column")] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="model family (tabtrack families lists them), or your own: path/to/file.py:function"
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file")] = None,
    test_data: Annotated[
        Path | None, typer.Option("--test-data", help="pre-split test file; DATA is then the training split")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override a config key: key=value (repeatable)")
    ] = None,
    task: Annotated[str | None, typer.Option("--task", help="auto, classification or regression")] = None,
    cv: Annotated[int | None, typer.Option("--cv", help="K-fold cross-validation on the training split")] = None,
    test_size: Annotated[float | None, typer.Option("--test-size", help="held-out share, in (0, 1)")] = None,
    seed: Annotated[int | None, typer.Option("--seed", "--random-state", help="seed for every random step")] = None,
    experiment: Annotated[str | None, typer.Option("--experiment", "-e", help="MLflow experiment name")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda (mlp and xgboost)")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="run tag key=value (repeatable)")] = None,
    run_name: RunName = None,
    log_param: LogParam = None,
    code: Code = None,
    tracking_uri: TrackingUri = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="SHAP values per input column on up to 1,000 test rows (extra: shap)")
    ] = False,
    no_track: Annotated[bool, typer.Option("--no-track", help="train and print metrics without MLflow")] = False,
    offline: Annotated[
        bool, typer.Option("--offline", help="record into .tabtrack/offline/ for a later `tabtrack sync`")
    ] = False,
    register: Annotated[str | None, typer.Option("--register", help="register the model under this name")] = None,
    gate: Annotated[
        bool, typer.Option("--gate", help="with --register: champion only if it beats the current one")
    ] = False,
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
    if (gate or gate_metric) and not register:
        raise ConfigError("--gate needs --register NAME.")
    if register and no_track:
        raise ConfigError("--register needs a tracked run; drop --no-track.")
    if model_dir and no_track:
        raise ConfigError("--model-dir copies the run's logged model; drop --no-track.")
    if offline and (no_track or register):
        raise ConfigError(
            "--offline records a run for later upload; it does not combine with --no-track or --register."
        )
    from tabtrack.cli_output import console, fold_progress, print_train_result
    from tabtrack.workflows.train import train as train_workflow

    with fold_progress() as progress:
        result = train_workflow(
            data,
            target=target,
            model=model,
            config=config,
            task=task,
            cv=cv,
            test_size=test_size,
            random_state=seed,
            experiment=experiment,
            device=device,
            tags=_pairs(tag, "--tag"),
            overrides=[*(set_ or ()), *(["explain=true"] if explain else [])],
            run_name=run_name,
            log_params=_pairs(log_param, "--log-param"),
            code_paths=code or (),
            tracking_uri=tracking_uri,
            track=not no_track,
            progress=progress,
            test_data=test_data,
            offline=offline,
            fit_ahead=True,  # a fresh process: the fit overlaps MLflow's start-up
        )
    print_train_result(result, console)
    if metrics_file:
        from tabtrack.workflows.train import write_metrics_file

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
        _register_result(result, register, gate=gate, metric=gate_metric, tracking_uri=tracking_uri)


@app.command()
def sync(
    tracking_uri: TrackingUri = None,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="offline bundles folder (default: ./.tabtrack/offline)")
    ] = None,
) -> None:
    """Upload runs recorded offline to the tracking server, then delete each bundle once it reads back complete."""
    from tabtrack.tracking.sync import sync_bundles

    report = sync_bundles(directory, tracking_uri=tracking_uri)
    for line in report.lines():
        typer.echo(line)
    if report.failed:
        raise typer.Exit(1)


def _register_result(result, name: str, *, gate: bool, metric: str | None, tracking_uri: str | None) -> None:
    from tabtrack.workflows import registry

    version = registry.register(result.run_id, name=name, tracking_uri=tracking_uri)
    if version is None:  # under `tabtrack reproduce`
        return
    typer.echo(f"registered: {name} version {version.version}  (models:/{name}/{version.version})")
    if gate:
        decision = registry.gate(
            name, version.version, X_test=result.X_test, y_test=result.y_test, task=result.task,
            classes=result.classes, metric=metric, tracking_uri=tracking_uri,
        )  # fmt: skip
        typer.echo(f"gate: {decision.alias}: {decision.reason}")


@app.command()
def validate(
    data: Annotated[
        str | None, typer.Argument(help="CSV or Parquet file or s3:// URL (or `data:` in --config)")
    ] = None,
    target: Annotated[str | None, typer.Option("--target", "-t", help="target column")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file")] = None,
    schema: Annotated[Path | None, typer.Option("--schema", help="saved schema to check for drift")] = None,
    save_schema: Annotated[
        Path | None, typer.Option("--save-schema", help="write this data's schema (for later --schema checks)")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, md or json")] = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="also write the report here")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a config key: key=value")] = None,
) -> None:
    """Check a data file before training: leakage, IDs, empty or constant columns, duplicates, imbalance, drift.

    Exit 0 when clean or only warnings, 1 when a check found an error (train would refuse this data)."""
    if fmt not in ("table", "md", "json"):
        raise ConfigError(f"unknown format {fmt!r}; use table, md or json.")
    from tabtrack.workflows.dataprep import validate_file
    from tabtrack.workflows.train import build_config

    cfg = build_config(data, target=target, config=config, overrides=set_ or ())
    report = validate_file(cfg, schema_path=schema, save_schema_to=save_schema)
    text = report.to_json() if fmt == "json" else report.to_markdown()
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text if fmt != "table" else report.to_json())
    if fmt == "table":
        from tabtrack.cli_output import console, validation_table

        console.print(validation_table(report))
    else:
        typer.echo(text, nl=False)
    if save_schema:
        typer.echo(f"schema written to {save_schema}", err=True)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def prepare(
    data: Annotated[Path | None, typer.Argument(help="raw CSV or Parquet file")] = None,
    target: Annotated[str | None, typer.Option("--target", "-t", help="target column")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file")] = None,
    out_dir: Annotated[Path, typer.Option("--out-dir", "-o", help="where train/test.parquet go")] = Path(
        "data/prepared"
    ),
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a config key: key=value")] = None,
) -> None:
    """Split DATA into train.parquet and test.parquet (seed and test_size from the config), with lineage."""
    from tabtrack.workflows.dataprep import prepare_split
    from tabtrack.workflows.train import build_config

    cfg = build_config(data, target=target, config=config, overrides=set_ or ())
    split = prepare_split(cfg, out_dir)
    typer.echo(f"wrote {split.train} ({split.n_train} rows) and {split.test} ({split.n_test} rows)")


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="project folder (created if missing)")] = Path("."),
    target: Annotated[str | None, typer.Option("--target", "-t", help="target column")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="raw data file; copied into DIR/data/ if outside")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="model family")] = "random_forest",
    force: Annotated[bool, typer.Option("--force", help="overwrite params.yaml and dvc.yaml")] = False,
) -> None:
    """Scaffold a DVC project: params.yaml + dvc.yaml (validate -> prepare -> train), so `dvc repro` tracks."""
    if not target:
        raise ConfigError("pass --target NAME: params.yaml needs the target column.")
    from tabtrack.workflows.scaffold import init_project

    scaffold = init_project(directory, target=target, data=data, model=model, force=force)
    for path in scaffold.written:
        typer.echo(f"wrote {path}")
    raw_exists = (scaffold.root / scaffold.data).is_file()
    steps = [] if raw_exists else [f"put the raw data at {scaffold.data}"]
    steps += [
        "git init && dvc init   (if not done yet)",
        f"dvc add {scaffold.data} && git add -A && git commit -m 'tabtrack project'",
        "dvc repro              (validate -> prepare -> train; each train is an MLflow run)",
        "dvc metrics show       (then: tabtrack ui)",
    ]
    typer.echo("next, in " + str(scaffold.root) + ":\n" + "\n".join(f"  {i}. {s}" for i, s in enumerate(steps, 1)))


@app.command()
def reproduce(
    run_id: Annotated[str, typer.Argument(help="the run to re-run")],
    data: Annotated[str | None, typer.Option("--data", help="data file (default: the run's recorded path)")] = None,
    test_data: Annotated[str | None, typer.Option("--test-data", help="pre-split test file")] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="refuse on a different git commit or package versions")
    ] = False,
    allow_data_change: Annotated[
        bool, typer.Option("--allow-data-change", help="re-run even when the data's sha256 differs")
    ] = False,
    tolerance: Annotated[
        float | None, typer.Option("--tolerance", help="allowed |delta| per test metric (default: exact; mlp 1e-6)")
    ] = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Re-train a past run from its recorded config and data, and verify every test metric matches.

    Exit 0 when they all match, 1 (with the table) when any differs."""
    from tabtrack.cli_output import console, fold_progress, reproduce_table
    from tabtrack.workflows.reproduce import reproduce as reproduce_workflow

    with fold_progress() as progress:
        outcome = reproduce_workflow(
            run_id, data=data, test_data=test_data, strict=strict, allow_data_change=allow_data_change,
            tolerance=tolerance, tracking_uri=tracking_uri, progress=progress,
        )  # fmt: skip
    console.print(reproduce_table(outcome))
    typer.echo(f"new run: {outcome.new_run_id}  (tagged tabtrack.reproduces={run_id})")
    if outcome.matched:
        typer.echo(f"reproduced: all {len(outcome.deltas)} test metrics match")
    else:
        bad = [d.name for d in outcome.deltas if not d.matches]
        typer.echo(f"NOT reproduced: {len(bad)} test metric(s) differ: {', '.join(bad)}", err=True)
        raise typer.Exit(1)


@app.command()
def compare(
    data: Annotated[
        str | None, typer.Argument(help="CSV or Parquet file or s3:// URL (or `data:` in --config)")
    ] = None,
    target: Annotated[str | None, typer.Option("--target", "-t", help="target column")] = None,
    models: Annotated[
        str | None, typer.Option("--models", help="comma-separated families; default: all installed for the task")
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(
            "--metric", help="ranking metric, by its CV mean on the training split; default: the task's primary"
        ),
    ] = None,
    cv: Annotated[
        int | None, typer.Option("--cv", help="K-fold CV in each model's run, which ranks them (default 5)")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override a config key: key=value (repeatable)")
    ] = None,
    params: Annotated[
        list[str] | None, typer.Option("--params", help="one model's parameter: MODEL.NAME=VALUE (repeatable)")
    ] = None,
    task: Annotated[str | None, typer.Option("--task", help="auto, classification or regression")] = None,
    test_size: Annotated[float | None, typer.Option("--test-size")] = None,
    seed: Annotated[int | None, typer.Option("--seed", "--random-state")] = None,
    experiment: Annotated[str | None, typer.Option("--experiment", "-e")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="tag key=value on every run (repeatable)")] = None,
    run_name: RunName = None,
    log_param: LogParam = None,
    code: Code = None,
    tracking_uri: TrackingUri = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="SHAP values per input column on up to 1,000 test rows (extra: shap)")
    ] = False,
    no_track: Annotated[bool, typer.Option("--no-track")] = False,
    register: Annotated[str | None, typer.Option("--register", help="register the best model under this name")] = None,
    gate: Annotated[
        bool, typer.Option("--gate", help="with --register: champion only if it beats the current one")
    ] = False,
    ray: Ray = None,
    cpus_per_task: CpusPerTask = 1.0,
    gpus_per_task: GpusPerTask = 0.0,
) -> None:
    """Train several model families on the same split and rank them by cross-validation: one parent run,
    one child per model."""
    if gate and not register:
        raise ConfigError("--gate needs --register NAME.")
    from tabtrack.cli_output import console, fold_progress, leaderboard_table
    from tabtrack.workflows.cluster import ray_settings
    from tabtrack.workflows.compare import compare as compare_workflow
    from tabtrack.workflows.train import build_config

    resolved = build_config(
        data, target=target, config=config, task=task, cv=cv, test_size=test_size, random_state=seed,
        experiment=experiment, tags=_pairs(tag, "--tag"), run_name=run_name,
        overrides=[*(set_ or ()), *(["explain=true"] if explain else [])],
        log_params=_pairs(log_param, "--log-param"), code_paths=code or (),
    )  # fmt: skip
    with fold_progress() as progress:
        result = compare_workflow(
            resolved,
            models=models.split(",") if models else None,
            metric=metric,
            params=_model_params(params),
            tracking_uri=tracking_uri,
            track=not no_track,
            progress=progress,
            ray=ray_settings(ray, cpus_per_task, gpus_per_task),
        )
    console.print(leaderboard_table(result.leaderboard, metric=result.metric, title=f"compare · {result.experiment}"))
    if result.run_id:
        console.print(f"parent run: {result.run_id}   best: {result.best_model}")
    for model_name, error in result.failures.items():
        typer.echo(f"failed: {model_name}: {error}", err=True)
    if register and result.best_model:
        _register_result(
            result.results[result.best_model], register, gate=gate, metric=result.metric, tracking_uri=tracking_uri
        )


@app.command()
def tune(
    data: Annotated[
        str | None, typer.Argument(help="CSV or Parquet file or s3:// URL (or `data:` in --config)")
    ] = None,
    target: Annotated[str | None, typer.Option("--target", "-t")] = None,
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
    metric: Annotated[
        str | None, typer.Option("--metric", help="CV metric to optimise; default: the task's primary")
    ] = None,
    cv: Annotated[int | None, typer.Option("--cv", help="folds per trial (default 3)")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override a config key: key=value (repeatable)")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", "--random-state")] = None,
    experiment: Annotated[str | None, typer.Option("--experiment", "-e")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag")] = None,
    tracking_uri: TrackingUri = None,
    register: Annotated[str | None, typer.Option("--register", help="register the refitted best model")] = None,
    gate: Annotated[bool, typer.Option("--gate")] = False,
    ray: Ray = None,
    cpus_per_task: CpusPerTask = 1.0,
    gpus_per_task: GpusPerTask = 0.0,
) -> None:
    """Tune a model family's hyperparameters with Optuna: one child run per trial, best refit on the parent."""
    from tabtrack.cli_output import console, fold_progress, print_train_result
    from tabtrack.workflows.cluster import ray_settings
    from tabtrack.workflows.train import build_config
    from tabtrack.workflows.tune import tune as tune_workflow

    if gate and not register:
        raise ConfigError("--gate needs --register NAME.")
    resolved = build_config(
        data, target=target, model=model, config=config, cv=cv, random_state=seed, experiment=experiment,
        tags=_pairs(tag, "--tag"), overrides=set_ or (),
    )  # fmt: skip
    with fold_progress() as progress:
        result = tune_workflow(
            resolved, trials=trials, timeout=timeout, jobs=jobs, storage=storage, study_name=study_name,
            metric=metric, tracking_uri=tracking_uri, progress=progress,
            ray=ray_settings(ray, cpus_per_task, gpus_per_task),
        )  # fmt: skip
    console.print(
        f"study {result.study_name} ({result.storage}): {result.n_trials} trials; best cv {result.metric} {result.best_value:.4f}"
    )
    console.print(f"best params: {result.best_params}")
    print_train_result(result.refit, console)
    if register:
        _register_result(result.refit, register, gate=gate, metric=None, tracking_uri=tracking_uri)


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
    tracking_uri: TrackingUri = None,
) -> None:
    """Add trials to a study that `tabtrack tune` started (on this machine or another)."""
    from tabtrack.workflows.tune import run_worker

    raise typer.Exit(
        run_worker(study_name=study_name, storage=storage, total=until, timeout=timeout, tracking_uri=tracking_uri)
    )


def _model_params(values: list[str] | None) -> dict[str, dict]:
    import yaml

    result: dict[str, dict] = {}
    for key, raw in _pairs(values, "--params").items():
        model_name, sep, name = key.partition(".")
        if not sep or not name:
            raise ConfigError(f"--params expects MODEL.NAME=VALUE, got {key}={raw!r} (e.g. random_forest.max_depth=6).")
        result.setdefault(model_name, {})[name] = yaml.safe_load(raw) if raw.strip() else None
    return result


@app.command("register")
def register_cmd(
    run_id: Annotated[str, typer.Argument(help="run whose `model` to register")],
    name: Annotated[str, typer.Option("--name", "-n", help="registered model name")],
    description: Annotated[str | None, typer.Option("--description", help="version description")] = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Register a run's model as a new version, tagged with its lineage and test metrics."""
    from tabtrack.workflows import registry

    version = registry.register(run_id, name=name, description=description, tracking_uri=tracking_uri)
    typer.echo(f"registered: {name} version {version.version}  (models:/{name}/{version.version})")


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="registered model name")],
    version: Annotated[str, typer.Option("--version", help="version to point the alias at")],
    alias: Annotated[str | None, typer.Option("--alias", help="alias, e.g. champion")] = None,
    stage: Annotated[
        str | None, typer.Option("--stage", help="deprecated: staging|production, mapped to an alias")
    ] = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Point an alias (champion, challenger, ...) at a model version."""
    from tabtrack.workflows import registry

    chosen = registry.promote(name, version=version, alias=alias, stage=stage, tracking_uri=tracking_uri)
    typer.echo(f"{name}@{chosen} -> version {version}  (models:/{name}@{chosen})")


models_app = typer.Typer(help="Registered models: list and show.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(tracking_uri: TrackingUri = None) -> None:
    """Registered models with their latest version and aliases."""
    from tabtrack.cli_output import console, simple_table
    from tabtrack.workflows import registry

    rows = [
        [m["name"], str(m["latest_version"]), ", ".join(f"{a}=v{v}" for a, v in sorted(m["aliases"].items()))]
        for m in registry.list_models(tracking_uri)
    ]
    console.print(simple_table(["name", "latest", "aliases"], rows))


@models_app.command("show")
def models_show(name: Annotated[str, typer.Argument()], tracking_uri: TrackingUri = None) -> None:
    """Versions of one model: aliases, source run and test metrics."""
    from tabtrack.cli_output import console, simple_table
    from tabtrack.workflows import registry

    rows = [
        [str(v["version"]), ", ".join(v["aliases"]), v["run_id"] or "", _headline(v["metrics"])]
        for v in registry.show_model(name, tracking_uri)
    ]
    console.print(simple_table(["version", "aliases", "run id", "test metrics"], rows, title=name))


runs_app = typer.Typer(help="Runs as data: list, export, clean.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
Experiment = Annotated[str | None, typer.Option("--experiment", "-e", help="experiment name; default: all")]
Filter = Annotated[str, typer.Option("--filter", help='MLflow search filter, e.g. "metrics.test_f1 > 0.9"')]
OrderBy = Annotated[list[str] | None, typer.Option("--order-by", help='e.g. "metrics.test_f1 DESC" (repeatable)')]
Folds = Annotated[bool, typer.Option("--folds", help="include CV fold runs")]


@runs_app.command("list")
def runs_list(
    experiment: Experiment = None,
    filter_: Filter = "",
    order_by: OrderBy = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv, md or json")] = "table",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write to a file instead of the terminal")
    ] = None,
    folds: Folds = False,
    tracking_uri: TrackingUri = None,
) -> None:
    """Runs with their params, metrics and key tags as columns."""
    _runs_out(experiment, filter_, order_by, fmt, output, folds, tracking_uri)


@runs_app.command("export")
def runs_export(
    experiment: Experiment = None,
    filter_: Filter = "",
    order_by: OrderBy = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv, md, json or table")] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file to write; default: stdout")] = None,
    folds: Folds = False,
    tracking_uri: TrackingUri = None,
) -> None:
    """Like `runs list`, CSV by default, for spreadsheets and reports."""
    _runs_out(experiment, filter_, order_by, fmt, output, folds, tracking_uri)


def _runs_out(experiment, filter_, order_by, fmt, output, folds, tracking_uri) -> None:
    from tabtrack.workflows import runs

    frame = runs.list_runs(
        experiment=experiment, filter_string=filter_, order_by=order_by, include_folds=folds, tracking_uri=tracking_uri
    )
    if fmt == "table":
        from tabtrack.cli_output import console, simple_table

        shown = runs.compact(frame)
        rows = [[runs._cell(v) for v in row] for row in shown.itertuples(index=False)]
        if output:
            output.write_text(runs.export(frame, "md"))
        else:
            console.print(simple_table(list(shown.columns), rows))
        return
    text = runs.export(frame, fmt)
    if output:
        output.write_text(text)
        typer.echo(f"wrote {len(frame)} runs to {output}")
    else:
        typer.echo(text, nl=False)


@runs_app.command("clean")
def runs_clean(
    failed: Annotated[bool, typer.Option("--failed", help="delete FAILED runs")] = False,
    stale: Annotated[bool, typer.Option("--stale", help="mark RUNNING runs whose process is gone as FAILED")] = False,
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="with --failed: only runs older than this, e.g. 7d")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would change, change nothing")] = False,
    experiment: Experiment = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Delete failed runs, or close runs left RUNNING by a process that died."""
    from tabtrack.workflows import runs

    if failed == stale:
        raise ConfigError("choose one of --failed or --stale.")
    verb = "would" if dry_run else "did"
    if failed:
        chosen = runs.clean_failed(
            experiment=experiment, older_than=older_than, dry_run=dry_run, tracking_uri=tracking_uri
        )
        typer.echo(f"{verb} delete {len(chosen)} failed run(s)" + "".join(f"\n  {r}" for r in chosen))
    else:
        marked, undecidable = runs.clean_stale(experiment=experiment, dry_run=dry_run, tracking_uri=tracking_uri)
        typer.echo(f"{verb} mark {len(marked)} stale run(s) FAILED" + "".join(f"\n  {r}" for r in marked))
        if undecidable:
            typer.echo(
                f"left {len(undecidable)} RUNNING run(s) from other hosts (or without tabtrack's host/pid tags) alone",
                err=True,
            )


@app.command("diff")
def diff_cmd(
    run_a: Annotated[str, typer.Argument()],
    run_b: Annotated[str, typer.Argument()],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table",
    only_changes: Annotated[bool, typer.Option("--changes", help="show only what differs")] = False,
    tracking_uri: TrackingUri = None,
) -> None:
    """Compare two runs: params, metrics with deltas, data and code lineage, package versions."""
    import json

    from tabtrack.workflows import runs

    result = runs.diff(run_a, run_b, tracking_uri=tracking_uri)
    if fmt == "json":
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    if fmt != "table":
        raise ConfigError(f"unknown format {fmt!r}; use table or json.")
    from rich.table import Table

    from tabtrack.cli_output import console

    for section, rows in result.items():
        table = Table(title=section, show_lines=False)
        for column in ("name", "a", "b", *(["delta"] if section == "metrics" else [])):
            table.add_column(column)
        for row in rows:
            if only_changes and not row["changed"] and section != "runs":
                continue
            style = "bold red" if row["changed"] and section != "runs" else None
            cells = [str(row["name"]), _fmt(row["a"]), _fmt(row["b"])]
            if section == "metrics":
                cells.append("" if row["delta"] is None else f"{row['delta']:+.4g}")
            table.add_row(*[("* " if style and i == 0 else "") + c for i, c in enumerate(cells)], style=style)
        console.print(table)


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


@app.command()
def predict(
    model_uri: Annotated[str, typer.Argument(help="models:/NAME@alias, models:/NAME/3, runs:/ID/model or a path")],
    data: Annotated[Path, typer.Argument(help="CSV or Parquet rows to score")],
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV to write")] = Path("predictions.csv"),
    tracking_uri: TrackingUri = None,
) -> None:
    """Score a file with a logged or registered model; classifiers add one probability column per class."""
    from tabtrack.serving.predict import predict_file

    rows = predict_file(model_uri, data, output, tracking_uri=tracking_uri)
    typer.echo(f"wrote {rows} predictions to {output}")


@app.command()
def serve(
    model_uri: Annotated[str, typer.Argument(help="models:/NAME@alias, models:/NAME/3, runs:/ID/model or a path")],
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p")] = 8080,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="processes, each with the model loaded")] = 1,
    tracking_uri: TrackingUri = None,
) -> None:
    """Serve a model over HTTP: POST /predict, GET /health, GET /metadata."""
    from tabtrack.serving.app import run_server

    run_server(model_uri, host=host, port=port, tracking_uri=tracking_uri, workers=workers)


@app.command()
def families() -> None:
    """List the model families and the tasks each supports."""
    from tabtrack.models.registry import get_spec, model_names

    for name in model_names():
        spec = get_spec(name)
        status = "" if spec.available() else "  (not installed)"
        typer.echo(f"{name:<24} {'/'.join(spec.tasks):<28} {spec.summary}{status}")


@app.command()
def report(
    run_ids: Annotated[
        list[str] | None,
        typer.Argument(help="one run id: its page; two or more: the comparison page", show_default=False),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="HTML file to write")] = None,
    experiment: Annotated[
        str | None, typer.Option("--experiment", "-e", help="compare the best runs of this experiment")
    ] = None,
    top: Annotated[int, typer.Option("--top", min=2, help="with --experiment: how many runs")] = 5,
    metric: Annotated[
        str | None, typer.Option("--metric", help="with --experiment: rank by this (CV mean, else test)")
    ] = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Write a standalone HTML page: one run's report, or several runs compared (metrics side by side,
    curves overlaid, the parameters and lineage that differ)."""
    from tabtrack.workflows.report import comparison_report, run_report

    run_ids = run_ids or []
    if experiment is not None and run_ids:
        raise TabtrackError("pass run ids or --experiment, not both.")
    if experiment is None and len(run_ids) == 1:
        page, default = run_report(run_ids[0], tracking_uri=tracking_uri), "report.html"
    else:
        page = comparison_report(run_ids, experiment=experiment, top=top, metric=metric, tracking_uri=tracking_uri)
        default = "compare.html"
    output = output or Path(default)
    output.write_text(page, encoding="utf-8")
    typer.echo(f"wrote {output}")


@app.command()
def card(
    model_uri: Annotated[str, typer.Argument(help="models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/model")],
    output: Annotated[Path, typer.Option("--output", "-o", help="card.md (Markdown) or card.html")] = Path("card.md"),
    tracking_uri: TrackingUri = None,
) -> None:
    """Write the model card of a registered version or a run's model (Mitchell et al., 2019)."""
    from tabtrack.evaluate.card import card_html
    from tabtrack.workflows.card import model_card

    markdown = model_card(model_uri, tracking_uri=tracking_uri)
    output.write_text(card_html(markdown) if output.suffix in (".html", ".htm") else markdown, encoding="utf-8")
    typer.echo(f"wrote {output}")


@app.command()
def ui(
    port: Annotated[int, typer.Option("--port", "-p", help="port to listen on")] = 5000,
    host: Annotated[str, typer.Option("--host", help="interface to bind; 0.0.0.0 exposes it")] = "127.0.0.1",
    tracking_uri: TrackingUri = None,
) -> None:
    """Open the MLflow UI on the same store `train` writes to."""
    from tabtrack.workflows.ui import serve_ui

    raise typer.Exit(serve_ui(tracking_uri=tracking_uri, host=host, port=port))


def _headline(metrics: dict[str, str]) -> str:
    """The few test metrics worth a column; `tabtrack report` and the UI have the rest."""
    keys = ("test_accuracy", "test_f1", "test_f1_macro", "test_roc_auc", "test_rmse", "test_r2")
    return "  ".join(f"{k.removeprefix('test_')}={float(metrics[k]):.4f}" for k in keys if k in metrics)


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} expects key=value, got {item!r}.")
        result[key.strip()] = value
    return result


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s: %(name)s: %(message)s"
    )
    # tabtrack's own messages: "warning: ..." on stderr, one handler however often main() runs in a process
    ours = logging.getLogger("tabtrack")
    for handler in [h for h in ours.handlers if getattr(h, "tabtrack_cli", False)]:
        ours.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    handler.tabtrack_cli = True
    ours.addHandler(handler)
    ours.setLevel(logging.INFO if verbose else logging.WARNING)
    ours.propagate = False
    # MLflow writes "View run ... at: <tracking URI>" straight to stdout for server URIs, password and all;
    # tabtrack prints its own link with credentials masked.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    if not verbose:
        # MLflow narrates every run ("View run ...", schema hints); the result table says what matters.
        for noisy in ("mlflow", "alembic", "skops", "ray"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        import warnings

        warnings.filterwarnings("ignore", module=r"mlflow(\..*)?")
        warnings.filterwarnings("ignore", category=FutureWarning)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is first imported


def _on_sigterm(signum, frame) -> None:
    # SystemExit unwinds through the tracker, which marks the run KILLED.
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    # At exit, what the command wrote is written and flushed. The interpreter's last full garbage collection
    # walks every object of every imported module (MLflow, scikit-learn, skops, torch: ~1.5 s after a tracked
    # run on a 2-core machine) only to free memory the process is about to give back: skip it.
    atexit.register(gc.freeze)
    try:
        app(args=_bare_ray(sys.argv[1:]))
    except TabtrackError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug, not a user mistake: one line, the traceback under --verbose and in the run
        if _verbose:
            raise
        typer.echo(f"error: internal error: {_one_line(exc)}", err=True)
        run_id = getattr(exc, FAILED_RUN_ATTR, None)
        where = f"run {run_id}'s {TRACEBACK_FILE}" if run_id else "the output of the same command with --verbose"
        typer.echo(f"       the traceback is in {where}; please report it with that traceback.", err=True)
        sys.exit(1)


def _bare_ray(args: list[str]) -> list[str]:
    """`--ray` with no address (last, or before another option) means a local Ray: click's options take a
    value or none, not an optional one."""
    if "--ray" not in args:
        return args
    from tabtrack.workflows.cluster import LOCAL_RAY

    out = []
    for index, arg in enumerate(args):
        out.append(arg)
        if arg == "--ray" and (index + 1 == len(args) or args[index + 1].startswith("-")):
            out.append(LOCAL_RAY)
    return out


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:500]}" if text else type(exc).__name__
