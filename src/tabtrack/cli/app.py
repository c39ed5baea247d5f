"""The `tabtrack` application: its root options, and `main`, which turns a user's mistake into one line and exit
code 2, and a bug into one line (its traceback in the run and under --verbose) and exit code 1.

Heavy imports (pandas, scikit-learn, mlflow) happen inside commands so `--help` is instant.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

from tabtrack import __version__
from tabtrack.cli.options import LOCAL_RAY
from tabtrack.cli.process import install, set_up
from tabtrack.errors import TabtrackError
from tabtrack.tracking.base import FAILED_RUN_ATTR, TRACEBACK_FILE

# What `tabtrack --help` lists first: a run's life from data to serving, then the runs already recorded.
HELP_ORDER = ("train", "compare", "tune", "tune-worker", "validate", "prepare", "init", "register", "promote", "models",
              "predict", "serve", "export", "monitor", "retrain", "ci", "card", "families", "runs", "diff", "report", "reproduce", "sync",
              "ui")  # fmt: skip


class _Commands(TyperGroup):
    def list_commands(self, ctx) -> list[str]:
        return sorted(super().list_commands(ctx), key=lambda name: (*HELP_ORDER, name).index(name))


app = typer.Typer(
    name="tabtrack",
    cls=_Commands,
    help="Train tabular models into complete, reproducible MLflow runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # internal bugs keep a plain traceback (and no locals: they may hold secrets)
    rich_markup_mode=None,  # plain click help: rich's help renderer costs ~70 ms of the 0.3 s start-up budget
)

_verbose = False  # --verbose: bugs keep their traceback on the terminal


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
    set_up(verbose=verbose)


def main() -> None:
    """The console script (through `tabtrack.cli`, whose modules add their commands to `app`)."""
    install()
    try:
        app(args=bare_ray(sys.argv[1:]))
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


def bare_ray(args: list[str]) -> list[str]:
    """`--ray` with no address (last, or before another option) means a local Ray: click's options take a
    value or none, not an optional one."""
    out = []
    for index, arg in enumerate(args):
        out.append(arg)
        if arg == "--ray" and (index + 1 == len(args) or args[index + 1].startswith("-")):
            out.append(LOCAL_RAY)
    return out


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:500]}" if text else type(exc).__name__
