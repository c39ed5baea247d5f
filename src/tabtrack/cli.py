"""The command line: thin wrappers that parse options and call workflows.

Heavy imports (pandas, scikit-learn, mlflow) happen inside commands so `--help` is instant.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from tabtrack import __version__
from tabtrack.errors import ConfigError, TabtrackError

app = typer.Typer(
    name="tabtrack",
    help="Train tabular models into complete, reproducible MLflow runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # internal bugs keep a plain traceback (and no locals: they may hold secrets)
)

TrackingUri = Annotated[
    str | None,
    typer.Option("--tracking-uri", help="MLflow tracking URI; default: $MLFLOW_TRACKING_URI, else ./mlflow.db"),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tabtrack {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show library logs, MLflow's included.")] = False,
) -> None:
    _configure_logging(verbose)


@app.command()
def train(
    data: Annotated[Path | None, typer.Argument(help="CSV or Parquet file (or `data:` in --config)")] = None,
    target: Annotated[str | None, typer.Option("--target", "-t", help="target column")] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="model family (tabtrack families lists them)")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file")] = None,
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
    tracking_uri: TrackingUri = None,
    no_track: Annotated[bool, typer.Option("--no-track", help="train and print metrics without MLflow")] = False,
) -> None:
    """Train one model and record it as one standard MLflow run."""
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
            overrides=set_ or (),
            tracking_uri=tracking_uri,
            track=not no_track,
            progress=progress,
        )
    print_train_result(result, console)


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
    run_id: Annotated[str, typer.Argument(help="MLflow run id")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write")] = Path("report.html"),
    tracking_uri: TrackingUri = None,
) -> None:
    """Write a standalone HTML report (params, metrics, lineage, plots) for a run."""
    from tabtrack.workflows.report import run_report

    output.write_text(run_report(run_id, tracking_uri=tracking_uri), encoding="utf-8")
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


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} expects key=value, got {item!r}.")
        result[key.strip()] = value
    return result


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    if not verbose:
        # MLflow narrates every run ("View run ...", schema hints); the result table says what matters.
        for noisy in ("mlflow", "alembic", "skops"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        import warnings

        warnings.filterwarnings("ignore", module=r"mlflow(\..*)?")
        warnings.filterwarnings("ignore", category=FutureWarning)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _on_sigterm(signum, frame) -> None:
    # SystemExit unwinds through the tracker, which marks the run KILLED.
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        app()
    except TabtrackError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
