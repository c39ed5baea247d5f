"""`tabtrack register`, `promote`, `models`, `card`, `predict`, `serve`, `export` and `families`: models after training."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

import tabtrack.cli.options as o
from tabtrack.cli.app import app
from tabtrack.errors import ConfigError

DEFAULT_LOG = ".tabtrack/predictions"
_DAY, _NO_TIME = (
    timedelta(days=1) - timedelta(microseconds=1),
    timedelta(0),
)  # serving/prediction_log.py:DEFAULT_LOCATION (not imported: --help stays fast)


@app.command("register")
def register_model(
    run_id: Annotated[str, typer.Argument(help="run whose `model` to register")],
    name: Annotated[str, typer.Option("--name", "-n", help="registered model name")],
    description: Annotated[str | None, typer.Option("--description", help="version description")] = None,
    tracking_uri: o.TrackingUri = None,
) -> None:
    """Register a run's model as a new version, tagged with its lineage and test metrics."""
    from tabtrack.commands import registry

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
    tracking_uri: o.TrackingUri = None,
) -> None:
    """Point an alias (champion, challenger, ...) at a model version."""
    from tabtrack.commands import registry

    chosen = registry.promote(name, version=version, alias=alias, stage=stage, tracking_uri=tracking_uri)
    typer.echo(f"{name}@{chosen} -> version {version}  (models:/{name}@{chosen})")


models_app = typer.Typer(help="Registered models: list, show, and who held an alias when.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(tracking_uri: o.TrackingUri = None) -> None:
    """Registered models with their latest version and aliases."""
    from tabtrack.cli.output import console, simple_table
    from tabtrack.commands import registry

    rows = [
        [m["name"], str(m["latest_version"]), ", ".join(f"{a}=v{v}" for a, v in sorted(m["aliases"].items()))]
        for m in registry.list_models(tracking_uri)
    ]
    console.print(simple_table(["name", "latest", "aliases"], rows))


@models_app.command("show")
def models_show(name: Annotated[str, typer.Argument()], tracking_uri: o.TrackingUri = None) -> None:
    """Versions of one model: aliases, source run and test metrics."""
    from tabtrack.cli.output import console, headline, simple_table
    from tabtrack.commands import registry

    rows = [
        [str(v["version"]), ", ".join(v["aliases"]), v["run_id"] or "", headline(v["metrics"])]
        for v in registry.show_model(name, tracking_uri)
    ]
    console.print(simple_table(["version", "aliases", "run id", "test metrics"], rows, title=name))


@models_app.command("history")
def models_history(
    name: Annotated[str, typer.Argument()],
    at: Annotated[
        str | None,
        typer.Option("--at", help="which version held the alias then: a date (its end, UTC) or a time; or 7d, 12h"),
    ] = None,
    alias: Annotated[str | None, typer.Option("--alias", help="one alias (with --at: default champion)")] = None,
    tracking_uri: o.TrackingUri = None,
) -> None:
    """Every move of the model's aliases that tabtrack made (promote, the gate, retrain), oldest first; with --at,
    the version that held the alias at that moment."""
    from tabtrack.cli.output import console, simple_table
    from tabtrack.commands.alias_history import alias_history, holder_at, unrecorded
    from tabtrack.commands.monitor import parse_time
    from tabtrack.tracking.store import mlflow_client

    client = mlflow_client(tracking_uri)
    moves = alias_history(client, name, alias=alias)
    for moved in unrecorded(client, name, alias_history(client, name)):
        typer.echo(f"note: {moved}, which no recorded move explains (moved outside tabtrack, or before it kept "
                   "this history)", err=True)  # fmt: skip
    if at is None:
        if not moves:
            typer.echo(f"no alias moves recorded for {name} (tabtrack records those it makes)")
            return
        rows = [[f"{m.moment:%Y-%m-%d %H:%M:%S}", m.alias, f"v{m.from_version}" if m.from_version else "-",
                 f"v{m.to_version}", m.user or "", m.reason if len(m.reason) <= 100 else m.reason[:99] + "…"]
                for m in moves]  # fmt: skip
        console.print(simple_table(["time (UTC)", "alias", "from", "to", "user", "reason"], rows, title=name))
        return
    alias = alias or "champion"
    whole_day = len(at.strip()) == 10 and at.strip()[4] == "-"  # 2026-11-02: as the day ended
    moment = parse_time(at) + (_DAY if whole_day else _NO_TIME)
    held = holder_at(moves, alias, moment)
    when = f"{at} (end of day, UTC)" if whole_day else f"{moment:%Y-%m-%d %H:%M:%S} UTC"
    if held is None:
        typer.echo(f"{name}@{alias} on {when}: no version on record (no move recorded before then)")
        return
    typer.echo(f"{name}@{alias} on {when}: version {held.to_version}, since {held.moment:%Y-%m-%d %H:%M:%S} UTC"
               f"{f' by {held.user}' if held.user else ''} ({held.reason})")  # fmt: skip


@app.command()
def card(model_uri: o.ModelUri, output: o.Output = None, tracking_uri: o.TrackingUri = None) -> None:
    """Write the model card of a registered version or a run's model (Mitchell et al., 2019): Markdown, or HTML
    when --output ends in .html (default: card.md)."""
    from tabtrack.commands.card import model_card
    from tabtrack.pages.card_page import card_html

    output = output or Path("card.md")
    markdown = model_card(model_uri, tracking_uri=tracking_uri)
    output.write_text(card_html(markdown) if output.suffix in (".html", ".htm") else markdown, encoding="utf-8")
    typer.echo(f"wrote {output}")


@app.command()
def predict(
    model_uri: o.ModelUri,
    data: Annotated[Path, typer.Argument(help="CSV or Parquet rows to score")],
    output: o.Output = None,
    log_predictions: o.LogPredictions = DEFAULT_LOG,
    log_sample: o.LogSample = 1.0,
    tracking_uri: o.TrackingUri = None,
) -> None:
    """Score a file with a logged or registered model into a CSV (default: predictions.csv); classifiers add one
    probability column per class. The scored rows go to the prediction log, as `serve`'s do."""
    from tabtrack.serving.predict import predict_file
    from tabtrack.serving.prediction_log import describe_log

    output = output or Path("predictions.csv")
    location = o.log_location(log_predictions)
    rows, request_id = predict_file(
        model_uri, data, output, tracking_uri=tracking_uri, log_predictions=location, log_sample=log_sample
    )
    typer.echo(describe_log(location, log_sample), err=True)  # after: a refused file gets its one line alone
    typer.echo(f"wrote {rows} predictions to {output}  (request id {request_id})")


@app.command()
def serve(
    model_uri: o.ModelUri,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p")] = 8080,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="processes, each with the model loaded")] = 1,
    log_predictions: o.LogPredictions = DEFAULT_LOG,
    log_sample: o.LogSample = 1.0,
    shadow: Annotated[
        str | None,
        typer.Option(
            "--shadow",
            help="a challenger (MODEL_URI) scoring every request off the response path; its "
            "answers go to the prediction log only",
        ),
    ] = None,
    canary: Annotated[
        float | None,
        typer.Option(
            "--canary",
            help="with --shadow: the challenger answers this share of requests instead (sticky by request id)",
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file", help="require this bearer token of every request but /health (else $TABTRACK_SERVE_TOKEN)"
        ),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="serve on a non-loopback --host without a token")
    ] = False,
    runtime: Annotated[
        str,
        typer.Option(
            "--runtime",
            help="auto: answer with ONNX Runtime (the run's model_onnx, else the model converted and checked at "
            "start-up) where it can, else scikit-learn; onnx: ONNX Runtime or refuse to start; sklearn: the pipeline",
        ),
    ] = "auto",
    tracking_uri: o.TrackingUri = None,
) -> None:
    """Serve a model over HTTP: POST /predict, GET /health, GET /metadata; every scored row goes to the
    prediction log. On any --host but a loopback one, every request needs a bearer token."""
    from tabtrack.serving.model import RUNTIMES
    from tabtrack.serving.service import run_server, serve_token

    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown --runtime {runtime!r}; use auto, onnx or sklearn.")
    run_server(
        model_uri, host=host, port=port, tracking_uri=tracking_uri, workers=workers,
        log_predictions=o.log_location(log_predictions), log_sample=log_sample, shadow=shadow, canary=canary,
        token=serve_token(str(token_file) if token_file else None), insecure=insecure, runtime=runtime,
    )  # fmt: skip


@app.command()
def export(
    model_uri: o.ModelUri,
    format_: Annotated[str, typer.Option("--format", "-f", help="onnx")] = "onnx",
    output: o.Output = None,
    tracking_uri: o.TrackingUri = None,
) -> None:
    """Write a model as one portable file: ONNX (extra: onnx), the whole pipeline from raw columns, checked against
    the model with ONNX Runtime on its run's test split first (default: model.onnx)."""
    from tabtrack.commands.export import FORMATS, export_onnx

    o.choice(format_, "onnx", FORMATS)
    done = export_onnx(model_uri, output or Path("model.onnx"), tracking_uri=tracking_uri)
    kinds = ", ".join(f"{name} ({kind})" for name, kind in done.inputs.items())
    typer.echo(f"checked on {done.checked_on}: {done.verification.summary()}")
    typer.echo(f"wrote {done.path}  inputs: {kinds}")


@app.command()
def families() -> None:
    """List the model families and the tasks each supports."""
    from tabtrack.models.families import get_spec, model_names

    for name in model_names():
        spec = get_spec(name)
        status = "" if spec.available() else "  (not installed)"
        typer.echo(f"{name:<24} {'/'.join(spec.tasks):<28} {spec.summary}{status}")
