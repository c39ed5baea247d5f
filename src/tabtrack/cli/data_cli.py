"""`tabtrack validate`, `prepare` and `init`: the data stages of a DVC pipeline, and the project that runs them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import tabtrack.cli.options as o
from tabtrack.cli.app import app
from tabtrack.errors import ConfigError


@app.command()
def validate(
    data: o.Data = None,
    target: o.Target = None,
    config: o.ConfigFile = None,
    schema: Annotated[Path | None, typer.Option("--schema", help="saved schema to check for drift")] = None,
    save_schema: Annotated[
        Path | None, typer.Option("--save-schema", help="write this data's schema (for later --schema checks)")
    ] = None,
    fmt: o.Format = None,
    output: o.Output = None,
    set_: o.Set = None,
) -> None:
    """Check a data file before training: leakage, IDs, empty or constant columns, duplicates, imbalance, drift.
    --format table (default), md or json; --output also writes the report (JSON for table).

    Exit 0 when clean or only warnings, 1 when a check found an error (train would refuse this data)."""
    fmt = o.choice(fmt, "table", ("table", "md", "json"))
    from tabtrack.commands.dataprep import validate_file

    cfg = o.run_config(data, config=config, overrides=set_, target=target)
    report = validate_file(cfg, schema_path=schema, save_schema_to=save_schema)
    text = report.to_json() if fmt == "json" else report.to_markdown()
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text if fmt != "table" else report.to_json())
    if fmt == "table":
        from tabtrack.cli.output import console, validation_table

        console.print(validation_table(report))
    else:
        typer.echo(text, nl=False)
    if save_schema:
        typer.echo(f"schema written to {save_schema}", err=True)
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def prepare(
    data: o.Data = None,
    target: o.Target = None,
    config: o.ConfigFile = None,
    out_dir: Annotated[Path, typer.Option("--out-dir", "-o", help="where train/test.parquet go")] = Path(
        "data/prepared"
    ),
    set_: o.Set = None,
) -> None:
    """Split DATA into train.parquet and test.parquet (seed and test_size from the config), with lineage."""
    from tabtrack.commands.dataprep import prepare_split

    cfg = o.run_config(data, config=config, overrides=set_, target=target)
    split = prepare_split(cfg, out_dir)
    typer.echo(f"wrote {split.train} ({split.n_train} rows) and {split.test} ({split.n_test} rows)")


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="project folder (created if missing)")] = Path("."),
    target: o.Target = None,
    data: Annotated[Path | None, typer.Option("--data", help="raw data file; copied into DIR/data/ if outside")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="model family")] = "random_forest",
    force: Annotated[bool, typer.Option("--force", help="overwrite params.yaml and dvc.yaml")] = False,
    ci: Annotated[
        str | None, typer.Option("--ci", help="github or gitlab: also a workflow gating every change (tabtrack ci)")
    ] = None,
) -> None:
    """Scaffold a DVC project: params.yaml + dvc.yaml (validate -> prepare -> train), so `dvc repro` tracks."""
    if not target:
        raise ConfigError("pass --target NAME: params.yaml needs the target column.")
    from tabtrack.commands.scaffold import init_project

    scaffold = init_project(directory, target=target, data=data, model=model, force=force, ci=ci)
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
