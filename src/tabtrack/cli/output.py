"""What the terminal shows: result tables and progress (plain text when not a terminal)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

# Off a terminal, lines are not wrapped at 80 columns: URLs and ids stay copyable. No markup: what is printed
# is data, and rich would read `[...]` in it (a fix such as `drop_columns=[id]`, a list param) as a style tag.
console = Console(soft_wrap=not sys.stdout.isatty(), width=None if sys.stdout.isatty() else 160, markup=False)
err_console = Console(stderr=True, markup=False)


def _box():
    """Rules on a terminal, plain ASCII in a log or a file."""
    return box.SIMPLE_HEAD if console.is_terminal else box.ASCII2


def _table(title: str | None) -> Table:
    return Table(title=title, box=_box())


@contextmanager
def fold_progress() -> Iterator:
    """A progress callback for folds, epochs and trials: a bar on a terminal, silence otherwise. The bar is redrawn
    when it moves, not by a refresh thread: a process with a second thread may not fork (tabtrack/forked.py)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import Progress

    with Progress(console=err_console, transient=True, auto_refresh=False) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"{stage}s", total=total)
            bar.update(tasks[stage], completed=done, refresh=True)

        yield update


def metrics_table(metrics: dict[str, dict[str, float]], title: str | None = None) -> Table:
    """Rows are metric names; columns train, cv (mean ± std) and test."""
    table = _table(title)
    table.add_column("metric")
    splits = [s for s in ("train", "cv", "test") if s in metrics]
    for split in splits:
        table.add_column(split, justify="right")
    names = list(dict.fromkeys(name for split in ("test", "train") for name in metrics.get(split, {})))
    for name in names:
        row = [name]
        for split in splits:
            if split == "cv":
                mean, std = metrics["cv"].get(f"{name}_mean"), metrics["cv"].get(f"{name}_std")
                row.append("" if mean is None else f"{mean:.4f} ± {std:.4f}")
            else:
                value = metrics[split].get(name)
                row.append("" if value is None else f"{value:.4f}")
        table.add_row(*row)
    return table


def print_train_result(result, out: Console = console) -> None:
    title = f"{result.model} · {result.task} · {result.experiment}"
    out.print(metrics_table(result.metrics, title=title))
    if result.offline_bundle:
        out.print(f"offline: recorded in {result.offline_bundle}  ({result.run_name})")
        out.print("         upload it with: tabtrack sync   (when the tracking server is back)")
    elif result.run_id:
        out.print(f"run id:  {result.run_id}  ({result.run_name})")
        if result.model_uri:
            out.print(f"model:   {result.model_uri}   (also runs:/{result.run_id}/model)")
            coverage = result.metrics.get("test", {}).get("interval_coverage")
            if coverage is not None:
                level = float(result.params.get("intervals", 0))
                out.print(f"intervals: runs:/{result.run_id}/model_intervals   (meant to hold for {level:.0%} of rows; "
                          f"held for {coverage:.1%} of the test split)")  # fmt: skip
        if result.ui_url:
            out.print(f"view:    {result.ui_url}   (start the UI with: tabtrack ui)")
    else:
        out.print("not tracked (--no-track)")


def simple_table(headers: list[str], rows: list[list[str]], title: str | None = None) -> Table:
    table = _table(title)
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*row)
    return table


def leaderboard_table(board, *, metric: str, title: str | None = None) -> Table:
    """Rank, model, the ranking metric's CV mean ± std (what ranks), how far behind the winner (and whether beyond
    noise), its test value, a few other test metrics, seconds, status."""
    table = _table(title)
    others = [c for c in board.columns if c.startswith("test_") and c != f"test_{metric}"][:3]
    columns = ["rank", "model", f"cv_{metric}", "vs_best", f"test_{metric}", *others, "seconds", "status"]
    for column in columns:
        table.add_column(column, justify="right" if column not in ("model", "status") else "left")
    for _, row in board.iterrows():
        cells = []
        for column in columns:
            if column == f"cv_{metric}":
                mean, std = row.get(f"cv_{metric}_mean"), row.get(f"cv_{metric}_std")
                cells.append("" if mean is None or mean != mean else f"{mean:.4f} ± {std:.4f}")
            elif column == "vs_best":
                cells.append(_versus_best(row))
            else:
                value = row.get(column)
                if isinstance(value, float):
                    cells.append("" if value != value else f"{value:.4f}" if column != "seconds" else f"{value:.1f}")
                else:
                    cells.append("" if value is None else str(value))
        table.add_row(*cells)
    return table


def _versus_best(row) -> str:
    """The winner's advantage over this model across the shared folds, and whether it is beyond noise."""
    verdict, difference = row.get("vs_best"), row.get("vs_best_difference")
    if not isinstance(verdict, str) or verdict in ("best", "no fold scores"):
        return verdict if isinstance(verdict, str) else ""
    return f"-{difference:.4f} p={row.get('vs_best_p_value'):.2f}{' *' if verdict == 'beyond noise' else ''}"


LEADERBOARD_NOTE = (
    "vs_best: how far behind the winner across the CV folds all models share, and the corrected resampled t-test's "
    "p-value; * beyond noise at 95%. In leaderboard.csv: vs_best_low, vs_best_high."
)


def validation_table(report) -> Table:
    table = Table(
        title=f"{report.source}: {report.n_rows} rows, {len(report.errors)} error(s), {len(report.warnings)} warning(s)",
        box=_box(),
    )
    for column in ("severity", "check", "finding"):
        table.add_column(column, overflow="fold")
    for finding in report.findings:
        style = "red" if finding.severity == "error" else "yellow"
        table.add_row(Text(finding.severity, style=style), finding.check, finding.message)
    if not report.findings:
        table.add_row("ok", "all checks", "nothing found")
    return table


def reproduce_table(outcome) -> Table:
    table = Table(
        title=f"reproducing {outcome.original_run_id}",
        box=_box(),
    )
    for column in ("test metric", "original", "reproduced", "delta", "match"):
        table.add_column(column, justify="right" if column != "test metric" else "left")

    def cell(value) -> str:
        return "" if value is None else f"{value:.6g}"

    for d in outcome.deltas:
        table.add_row(d.name, cell(d.original), cell(d.reproduced), cell(d.delta), "yes" if d.matches else "NO")
    return table


def headline(metrics: dict[str, str]) -> str:
    """The few test metrics worth a column; `tabtrack report` and the UI have the rest."""
    keys = ("test_accuracy", "test_f1", "test_f1_macro", "test_roc_auc", "test_rmse", "test_r2")
    return "  ".join(f"{k.removeprefix('test_')}={float(metrics[k]):.4f}" for k in keys if k in metrics)


def diff_tables(result: dict, *, only_changes: bool) -> list[Table]:
    """`tabtrack diff`: one table per section (runs, params, metrics with deltas, lineage, packages), what
    differs marked."""
    tables = []
    for section, rows in result.items():
        table = Table(title=section, show_lines=False)
        for column in ("name", "a", "b", *(["delta"] if section == "metrics" else [])):
            table.add_column(column)
        for row in rows:
            if only_changes and not row["changed"] and section != "runs":
                continue
            style = "bold red" if row["changed"] and section != "runs" else None
            cells = [str(row["name"]), _value(row["a"]), _value(row["b"])]
            if section == "metrics":
                cells.append("" if row["delta"] is None else f"{row['delta']:+.4g}")
            table.add_row(*[("* " if style and i == 0 else "") + c for i, c in enumerate(cells)], style=style)
        tables.append(table)
    return tables


def _value(value) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def drift_table(report) -> Table:
    """`tabtrack monitor`: the input columns, biggest drift first, then the predictions."""
    table = _table(f"{report.rows} rows from {report.source}")
    for column in ("column", "kind", "psi", "test", "p-value", "missing", "new"):
        table.add_column(column, justify="left" if column in ("column", "kind", "test", "new") else "right")
    for drift in [*report.columns, *report.predictions]:
        flag = "* " if report.crossed(drift) else ""
        table.add_row(
            flag + drift.column, drift.kind, f"{drift.psi:.3f}", f"{drift.test} {drift.statistic:.3g}",
            f"{drift.p_value:.2g}", f"{drift.null_share_reference:.1%} -> {drift.null_share:.1%}",
            f"{drift.new_share:.1%}" if drift.new_share else "",
        )  # fmt: skip
    for name in report.missing_columns:
        table.add_row(f"* {name}", "missing", "", "", "", "", "")
    return table
