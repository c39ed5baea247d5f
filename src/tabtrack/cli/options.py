"""Options several commands share, each declared once, and how the command line becomes a RunConfig."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tabtrack.errors import ConfigError

# -- what to train on, and how -------------------------------------------------------------------------------------
Data = Annotated[str | None, typer.Argument(help="CSV or Parquet file or s3:// URL (or `data:` in --config)")]
Target = Annotated[str | None, typer.Option("--target", "-t", help="target column")]
ConfigFile = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file")]
Set = Annotated[list[str] | None, typer.Option("--set", help="override a config key: key=value (repeatable)")]
Task = Annotated[str | None, typer.Option("--task", help="auto, classification or regression")]
Cv = Annotated[int | None, typer.Option("--cv", help="K-fold cross-validation on the training split")]
TestSize = Annotated[float | None, typer.Option("--test-size", help="held-out share, in (0, 1)")]
Seed = Annotated[int | None, typer.Option("--seed", "--random-state", help="seed for every random step")]
Metric = Annotated[
    str | None, typer.Option("--metric", help="metric to rank or optimise by; default: the task's primary")
]
Onnx = Annotated[
    bool,
    typer.Option(
        "--onnx", help="also log model_onnx: the whole pipeline as ONNX, checked on the test split (extra: onnx)"
    ),
]
Explain = Annotated[
    bool, typer.Option("--explain", help="SHAP values per input column on up to 1,000 test rows (extra: shap)")
]
Intervals = Annotated[
    float | None,
    typer.Option("--intervals", help="conformal prediction intervals or sets holding for this share of rows, e.g. 0.9"),
]

# -- where and how it is recorded ----------------------------------------------------------------------------------
Experiment = Annotated[str | None, typer.Option("--experiment", "-e", help="MLflow experiment name")]
Tag = Annotated[list[str] | None, typer.Option("--tag", help="run tag key=value (repeatable)")]
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
NoTrack = Annotated[bool, typer.Option("--no-track", help="train and print metrics without MLflow")]
Register = Annotated[str | None, typer.Option("--register", help="register the model under this name")]
Gate = Annotated[
    bool, typer.Option("--gate", help="with --register: champion only if it beats the current one beyond noise")
]
MinImprovement = Annotated[
    float,
    typer.Option(
        "--min-improvement",
        help="the gate promotes when the improvement's 95% interval lies above this (in the metric's units)",
    ),
]
Output = Annotated[Path | None, typer.Option("--output", "-o", help="file to write")]
Format = Annotated[str | None, typer.Option("--format", "-f", help="output format")]
ModelUri = Annotated[
    str, typer.Argument(help="NAME@alias, NAME/3, models:/NAME@alias, runs:/ID/model or a model folder")
]

# -- after deployment ------------------------------------------------------------------------------------------------
LogPredictions = Annotated[
    str,
    typer.Option("--log-predictions", metavar="LOCATION|off",
                 help="where the prediction log goes: a folder or an fsspec URL (s3://bucket/prefix); off: nowhere"),
]  # fmt: skip
LogSample = Annotated[
    float, typer.Option("--log-sample", min=0.0, max=1.0, help="the share of requests logged (whole requests)")
]

# -- scaling out -----------------------------------------------------------------------------------------------------
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
LOCAL_RAY = "local"  # what a bare --ray stands for (cli/app.py:bare_ray)


def ray_settings(address: str | None, cpus_per_task: float, gpus_per_task: float):
    """`--ray [ADDRESS]` (LOCAL_RAY when given bare) as RaySettings, or None without it."""
    from tabtrack.commands.cluster import RaySettings

    if address is None:
        return None
    if address.lower().endswith((".csv", ".tsv", ".parquet", ".pq")):
        raise ConfigError(f"--ray took {address!r} as its address; put DATA first, or write --ray=ADDRESS.")
    if cpus_per_task <= 0 or gpus_per_task < 0:
        raise ConfigError("--cpus-per-task must be above 0 and --gpus-per-task at least 0.")
    return RaySettings(None if address == LOCAL_RAY else address, cpus_per_task, gpus_per_task)


def log_location(value: str) -> str | None:
    """`--log-predictions`: None for off."""
    return None if value.strip().lower() in ("off", "none", "") else value


def pairs(values: list[str] | None, option: str) -> dict[str, str]:
    """`["k=v", ...]` from a repeatable option, as a dict; anything else is a one-line error naming the option."""
    result: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} expects key=value, got {item!r}.")
        result[key.strip()] = value
    return result


def run_config(
    data: str | Path | None,
    *,
    config: Path | None,
    overrides: list[str] | None,
    explain: bool = False,
    onnx: bool = False,
    tag: list[str] | None = None,
    log_param: list[str] | None = None,
    code: list[str] | None = None,
    **options: Any,
):
    """The RunConfig a command's options describe: the config file, then the options given (RunConfig keys), then
    `--set` overrides (and `--explain` / `--onnx`, which are `--set explain=true` / `--set onnx=true`)."""
    from tabtrack.core.training import build_config

    return build_config(
        data, config=config, overrides=[*(overrides or ()), *(["explain=true"] if explain else []), *(["onnx=true"] if onnx else [])],
        tags=pairs(tag, "--tag"), extra_params=pairs(log_param, "--log-param"), code_paths=code or (), **options,
    )  # fmt: skip


def model_params(values: list[str] | None) -> dict[str, dict]:
    """`--params MODEL.NAME=VALUE` (repeatable) as {model: {name: value}}; values are read as YAML."""
    import yaml

    result: dict[str, dict] = {}
    for key, raw in pairs(values, "--params").items():
        model_name, sep, name = key.partition(".")
        if not sep or not name:
            raise ConfigError(f"--params expects MODEL.NAME=VALUE, got {key}={raw!r} (e.g. random_forest.max_depth=6).")
        result.setdefault(model_name, {})[name] = yaml.safe_load(raw) if raw.strip() else None
    return result


def choice(value: str | None, default: str, valid: tuple[str, ...]) -> str:
    """A `--format` value (its command's default where not given), or a one-line error listing the valid ones."""
    value = value or default
    if value not in valid:
        listed = valid[0] if len(valid) == 1 else f"{', '.join(valid[:-1])} or {valid[-1]}"
        raise ConfigError(f"unknown format {value!r}; use {listed}.")
    return value
