"""`tabtrack runs`, `diff`, `report`, `reproduce`, `sync` and `ui`: the runs already recorded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import tabtrack.cli.options as o
from tabtrack.cli.app import app
from tabtrack.errors import ConfigError, TabtrackError

runs_app = typer.Typer(help="Runs as data: list, export, clean.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
Filter = Annotated[str, typer.Option("--filter", help='MLflow search filter, e.g. "metrics.test_f1 > 0.9"')]
OrderBy = Annotated[list[str] | None, typer.Option("--order-by", help='e.g. "metrics.test_f1 DESC" (repeatable)')]
Folds = Annotated[bool, typer.Option("--folds", help="include CV fold runs")]


@runs_app.command("list")
def runs_list(
    experiment: o.Experiment = None,
    filter_: Filter = "",
    order_by: OrderBy = None,
    fmt: o.Format = None,
    output: o.Output = None,
    folds: Folds = False,
    tracking_uri: o.TrackingUri = None,
) -> None:
    """Runs (of every experiment unless --experiment) with their params, metrics and key tags as columns:
    --format table (default), csv, md or json; --output writes to a file instead of the terminal."""
    _runs_out(experiment, filter_, order_by, o.choice(fmt, "table", FORMATS), output, folds, tracking_uri)


@runs_app.command("export")
def runs_export(
    experiment: o.Experiment = None,
    filter_: Filter = "",
    order_by: OrderBy = None,
    fmt: o.Format = None,
    output: o.Output = None,
    folds: Folds = False,
    tracking_uri: o.TrackingUri = None,
) -> None:
    """Like `runs list`, CSV by default, for spreadsheets and reports (to stdout unless --output)."""
    _runs_out(experiment, filter_, order_by, o.choice(fmt, "csv", FORMATS), output, folds, tracking_uri)


FORMATS = ("table", "csv", "md", "json")


def _runs_out(experiment, filter_, order_by, fmt, output, folds, tracking_uri) -> None:
    from tabtrack.commands import runs

    frame = runs.list_runs(
        experiment=experiment, filter_string=filter_, order_by=order_by, include_folds=folds, tracking_uri=tracking_uri
    )
    if fmt == "table":
        from tabtrack.cli.output import console, simple_table
        from tabtrack.pages.markdown import cell

        shown = runs.compact(frame)
        rows = [[cell(v) for v in row] for row in shown.itertuples(index=False)]
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
    experiment: o.Experiment = None,
    tracking_uri: o.TrackingUri = None,
) -> None:
    """Delete failed runs, or close runs left RUNNING by a process that died."""
    from tabtrack.commands import runs

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
def diff_runs(
    run_a: Annotated[str, typer.Argument()],
    run_b: Annotated[str, typer.Argument()],
    fmt: o.Format = None,
    only_changes: Annotated[bool, typer.Option("--changes", help="show only what differs")] = False,
    tracking_uri: o.TrackingUri = None,
) -> None:
    """Compare two runs: params, metrics with deltas, data and code lineage, package versions (--format table or
    json)."""
    import json

    from tabtrack.commands import runs

    fmt = o.choice(fmt, "table", ("table", "json"))
    result = runs.diff(run_a, run_b, tracking_uri=tracking_uri)
    if fmt == "json":
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    from tabtrack.cli.output import console, diff_tables

    for table in diff_tables(result, only_changes=only_changes):
        console.print(table)


@app.command()
def report(
    run_ids: Annotated[
        list[str] | None,
        typer.Argument(help="one run id: its page; two or more: the comparison page", show_default=False),
    ] = None,
    output: o.Output = None,
    experiment: o.Experiment = None,
    top: Annotated[int, typer.Option("--top", min=2, help="with --experiment: how many runs")] = 5,
    metric: o.Metric = None,
    tracking_uri: o.TrackingUri = None,
) -> None:
    """Write a standalone HTML page: one run's report (report.html), or several runs compared (compare.html:
    metrics side by side, curves overlaid, the parameters and lineage that differ); --experiment compares its
    --top best runs, ranked by --metric (CV mean, else test)."""
    from tabtrack.commands.report import comparison_report, run_report

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
    tracking_uri: o.TrackingUri = None,
) -> None:
    """Re-train a past run from its recorded config and data, and verify every test metric matches.

    Exit 0 when they all match, 1 (with the table) when any differs."""
    from tabtrack.cli.output import console, fold_progress, reproduce_table
    from tabtrack.commands.reproduce import reproduce as reproduce_run

    with fold_progress() as progress:
        outcome = reproduce_run(
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
def sync(
    tracking_uri: o.TrackingUri = None,
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


@app.command()
def ui(
    port: Annotated[int, typer.Option("--port", "-p", help="port to listen on")] = 5000,
    host: Annotated[str, typer.Option("--host", help="interface to bind; 0.0.0.0 exposes it")] = "127.0.0.1",
    tracking_uri: o.TrackingUri = None,
) -> None:
    """Open the MLflow UI on the same store `train` writes to."""
    from tabtrack.commands.ui import serve_ui

    raise typer.Exit(serve_ui(tracking_uri=tracking_uri, host=host, port=port))
