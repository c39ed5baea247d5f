"""`tabtrack monitor`, `tabtrack retrain` and `tabtrack ci`: a model's life after deployment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import tabtrack.cli.options as o
from tabtrack.cli.app import app


@app.command()
def monitor(
    model_uri: o.ModelUri,
    since: Annotated[
        str | None, typer.Option("--since", help="the log's rows since then: 7d, 12h, 2w or a date (default 1d)")
    ] = None,
    until: Annotated[str | None, typer.Option("--until", help="... and before then (default: now)")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="score this file instead of reading the log")] = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="a file of labels for logged rows")] = None,
    on: Annotated[str, typer.Option("--on", help="the labels' column holding the request id")] = "request_id",
    reference: Annotated[
        Path | None, typer.Option("--reference", help="build the reference from this (training) file")
    ] = None,
    log_predictions: o.LogPredictions = ".tabtrack/predictions",
    config: o.ConfigFile = None,
    set_: o.Set = None,
    output: o.Output = None,
    no_track: Annotated[bool, typer.Option("--no-track", help="record no monitoring run")] = False,
    shadow: Annotated[
        str | None,
        typer.Option(
            "--shadow",
            help="the model that scored the same requests in shadow: agreement, "
            "and both models' metrics on labelled rows with the paired interval",
        ),
    ] = None,
    tracking_uri: o.TrackingUri = None,
) -> None:
    """Compare what a model met with what it was trained on: drift per input column and of the predictions,
    and metrics once labels arrive. A table, a page (--output), and a run in the experiment monitoring-NAME.

    Exit 0 when nothing crossed a threshold (config `monitoring:`, e.g. --set monitoring.psi=0.25), 1 when
    something did, 2 on a user error."""
    from tabtrack.cli.output import console, drift_table
    from tabtrack.commands.monitor import monitor as monitor_model

    thresholds = None
    if config or set_:
        thresholds = o.run_config(None, config=config, overrides=set_).monitoring
    report = monitor_model(
        model_uri, since=since, until=until, data=data, labels=labels, on=on, reference=reference,
        log_location=o.log_location(log_predictions), thresholds=thresholds, tracking_uri=tracking_uri,
        track=not no_track, shadow=shadow,
    )  # fmt: skip
    console.print(drift_table(report))
    if report.pair is not None:
        console.print("\n".join(report.pair.summary()))
    if report.labelled_rows:
        shown = "  ".join(f"{k} {v:.4f} (test {report.test_metrics[k]:.4f})" for k, v in report.metrics.items()
                          if k in report.test_metrics)  # fmt: skip
        console.print(f"{report.labelled_rows} labelled rows: {shown}")
    if output:
        output.write_text(report.page, encoding="utf-8")
        typer.echo(f"wrote {output}")
    if report.run_id:
        typer.echo(f"monitoring run: {report.run_id}")
    for alarm in report.alarms:
        typer.echo(f"drift: {alarm}", err=True)
    if report.drifted:
        raise typer.Exit(1)


@app.command()
def retrain(
    name: Annotated[str, typer.Argument(help="the registered model whose champion is retrained")],
    data: Annotated[Path, typer.Option("--data", help="the new training data (CSV or Parquet)")],
    test_data: Annotated[
        Path | None,
        typer.Option(
            "--test-data", help="held-out rows both versions are scored on (default: the new run's test split)"
        ),
    ] = None,
    promote: Annotated[bool, typer.Option("--promote", help="move champion when the new version wins")] = False,
    min_improvement: o.MinImprovement = 0.0,
    tracking_uri: o.TrackingUri = None,
) -> None:
    """Train the champion's recipe again on new data, register it as a new version and gate it against the
    champion on the same held-out rows. Without --promote the new version becomes the challenger and the gate's
    decision is recorded on it."""
    from tabtrack.cli.output import fold_progress
    from tabtrack.commands.retrain import retrain as retrain_model

    with fold_progress() as progress:
        outcome = retrain_model(name, data=data, test_data=test_data, promote=promote, tracking_uri=tracking_uri,
                                progress=progress, min_improvement=min_improvement)  # fmt: skip
    decision = outcome.decision
    typer.echo(f"new run: {outcome.run_id}  registered: {name} version {outcome.version}")
    held = "champion" if decision.promoted and decision.alias == "champion" else "challenger"
    typer.echo(f"gate: {decision.alias}: {decision.reason}  -> v{outcome.version} is now {held}")


@app.command()
def ci(
    promote: Annotated[
        bool, typer.Option("--promote", help="move champion to the candidate when it wins beyond noise (main)")
    ] = False,
    name: Annotated[str | None, typer.Option("--name", help="registered model (default: the experiment)")] = None,
    tracking_uri: o.TrackingUri = None,
) -> None:
    """What CI runs on every change (tabtrack init --ci writes the workflow): dvc repro, register this commit's run,
    gate it against the champion on the same test split; the comparison goes to ci-report/ (and GitHub's job
    summary). Exit 0: the candidate wins or ties within noise; 1: it loses; 2: something is broken."""
    from tabtrack.commands.ci import run_ci

    outcome = run_ci(Path("."), promote=promote, name=name, tracking_uri=tracking_uri)
    typer.echo(f"{outcome.name} v{outcome.version} (run {outcome.run_id}) {outcome.verdict}: {outcome.decision.reason}")
    typer.echo(f"wrote {outcome.summary_path}" + (f" and {outcome.page_path}" if outcome.page_path else ""))
    raise typer.Exit(outcome.exit_code)
