"""Data validation: the checks `tabtrack validate` reports and `train` runs before any run exists.

Errors stop training (a column that leaks the target, a schema that no longer matches);
warnings are logged on the run as `data_validation.json` so a reviewer sees them next to the metrics.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml

from tabtrack.errors import ConfigError

Severity = Literal["error", "warning"]
CHECKS = (
    "target",
    "null_share",
    "empty_column",
    "duplicate_rows",
    "constant_column",
    "high_cardinality",
    "identifier_column",
    "date_column",
    "class_imbalance",
    "leakage",
    "schema",
)
# Below this many rows a feature can separate the classes by chance, so the perfect-predictor check stays quiet.
MIN_ROWS_FOR_LEAKAGE = 50
# A text column with a distinct value on every row and at least this many rows is an identifier, not a feature.
MIN_ROWS_FOR_IDENTIFIER = 50


@dataclass(frozen=True)
class ValidationSettings:
    max_null_share: float = 0.5
    max_categories: int = 100
    min_class_ratio: float = 0.1  # rarest / commonest class count
    ignore: tuple[str, ...] = ()  # checks to skip, e.g. ("leakage",)


@dataclass(frozen=True)
class Finding:
    check: str
    severity: Severity
    message: str
    column: str | None = None


@dataclass
class ValidationReport:
    source: str
    target: str
    n_rows: int
    n_columns: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "n_rows": self.n_rows,
            "n_columns": self.n_columns,
            "ok": self.ok,
            "n_errors": len(self.errors),
            "n_warnings": len(self.warnings),
            "findings": [asdict(f) for f in self.findings],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        lines = [
            f"# Data validation: {self.source}",
            "",
            f"{self.n_rows} rows, {self.n_columns} columns, target `{self.target}`: "
            f"{len(self.errors)} error(s), {len(self.warnings)} warning(s).",
            "",
        ]
        if self.findings:
            lines += ["| severity | check | column | finding |", "|---|---|---|---|"]
            lines += [
                f"| {f.severity} | {f.check} | {f.column or ''} | {f.message.replace('|', '/')} |"
                for f in self.findings
            ]
        return "\n".join(lines) + "\n"


def validate_frame(
    frame: pd.DataFrame,
    *,
    target: str,
    source: str = "data",
    settings: ValidationSettings | None = None,
    schema: dict[str, Any] | None = None,
) -> ValidationReport:
    """Run every check on `frame`; never raises for what it finds (the caller decides)."""
    settings = settings or ValidationSettings()
    frame = frame.rename(columns=str)
    report = ValidationReport(source=source, target=target, n_rows=len(frame), n_columns=frame.shape[1])
    checks = [_check_columns]
    if target in frame.columns:
        checks += [_check_target, _check_leakage]
    else:
        report.findings.append(Finding("target", "error", f"target column {target!r} is not in {source}."))
    if schema is not None:
        checks.append(lambda f, t, s: _check_schema(f, schema))
    for check in checks:
        report.findings.extend(
            finding for finding in check(frame, target, settings) if finding.check not in settings.ignore
        )
    return report


# -- the checks ------------------------------------------------------------------------------------------
def _check_columns(frame: pd.DataFrame, target: str, settings: ValidationSettings) -> list[Finding]:
    findings: list[Finding] = []
    for column in (c for c in frame.columns if c != target):
        values = frame[column]
        nulls = float(values.isna().mean()) if len(values) else 0.0
        if nulls > settings.max_null_share and nulls < 1.0:
            findings.append(Finding("null_share", "warning", f"column {column!r} is {nulls:.0%} empty (over "
                                    f"{settings.max_null_share:.0%}).", column))  # fmt: skip
        if (found := _column_finding(values, column, nulls, settings)) is not None:
            findings.append(Finding(*found, column))
    # One 64-bit hash per row, then duplicates among the hashes: ~10x faster than DataFrame.duplicated.
    duplicates = int(pd.util.hash_pandas_object(frame, index=False).duplicated().sum())
    if duplicates:
        findings.append(
            Finding("duplicate_rows", "warning", f"{duplicates} duplicate row(s) ({duplicates / len(frame):.1%}).")
        )
    return findings


def _column_finding(
    values: pd.Series, column: str, nulls: float, settings: ValidationSettings
) -> tuple[str, Severity, str] | None:
    """What is wrong with one feature column, if anything: (check, severity, message)."""
    drop = f"drop it with --set 'drop_columns=[{column}]'"
    derive = "derive numeric features from it (year, month, days since a reference date)"
    if nulls == 1.0:
        return "empty_column", "error", f"column {column!r} has no values at all; drop it."
    if pd.api.types.is_datetime64_any_dtype(values):
        return (
            "date_column",
            "error",
            f"column {column!r} holds dates, which a model cannot take as they are; {derive} or {drop}.",
        )
    if not _is_text(values):
        if how := _numbers_the_rows(values):
            return (
                "identifier_column",
                "warning",
                f"integer column {column!r} {how}: as a feature it fits the row order, not the data; {drop}.",
            )
        # min == max is the constant test for numbers; no need to count distinct values (slow on 1M rows)
        if values.min() == values.max():
            return "constant_column", "warning", f"column {column!r} holds a single value; it adds nothing."
        return None
    if (example := _date_example(values)) is not None:
        return (
            "date_column",
            "warning",
            f"text column {column!r} holds dates (e.g. {example!r}), so each date is its own category; {derive} or {drop}.",
        )
    distinct = values.nunique(dropna=True)
    if distinct <= 1:
        return "constant_column", "warning", f"column {column!r} holds a single value; it adds nothing."
    if distinct == values.notna().sum() and len(values) >= MIN_ROWS_FOR_IDENTIFIER:
        return (
            "identifier_column",
            "error",
            f"text column {column!r} has a different value on every row ({distinct}), like an ID; {drop}.",
        )
    if distinct > settings.max_categories:
        return (
            "high_cardinality",
            "warning",
            f"text column {column!r} has {distinct} distinct values (over {settings.max_categories}); one-hot encoding it makes a very wide matrix.",
        )
    return None


def _check_target(frame: pd.DataFrame, target: str, settings: ValidationSettings) -> list[Finding]:
    y = frame[target]
    findings: list[Finding] = []
    missing = int(y.isna().sum())
    if missing == len(y):
        return [Finding("target", "error", f"target column {target!r} has no values.", target)]
    if missing:
        findings.append(
            Finding("target", "warning", f"{missing} row(s) have an empty target; they are dropped.", target)
        )
    from tabtrack.data.prepare import detect_task

    if detect_task(y) == "classification":
        counts = y.value_counts()
        if len(counts) >= 2 and counts.iloc[-1] / counts.iloc[0] < settings.min_class_ratio:
            findings.append(
                Finding(
                    "class_imbalance",
                    "warning",
                    f"class {counts.index[-1]!r} has {counts.iloc[-1]} row(s) against {counts.iloc[0]} for "
                    f"{counts.index[0]!r} (ratio {counts.iloc[-1] / counts.iloc[0]:.3f}); "
                    "consider class_weight=balanced and PR-AUC.",
                    target,
                )
            )
    return findings


def _check_leakage(frame: pd.DataFrame, target: str, settings: ValidationSettings) -> list[Finding]:
    """A feature equal to the target, or one that predicts it perfectly, means the model learns the answer."""
    from tabtrack.data.leakage import leaking_columns

    return [
        Finding(
            "leakage",
            "error",
            f"column {column!r} {how} target {target!r} (target leakage); drop it with "
            f"--set 'drop_columns=[{column}]', or keep it with --set 'validation.ignore=[leakage]'.",
            column,
        )
        for column, how in leaking_columns(frame, target, min_rows=MIN_ROWS_FOR_LEAKAGE)
    ]


def _numbers_the_rows(values: pd.Series) -> str | None:
    """How an integer column follows the rows, if it does: each of a run of consecutive numbers once (a row
    number, R's `rownames`), or unique values that only rise (or only fall) from row to row (employee numbers
    1, 2, 4, 5, 7, ... in a file kept in ID order). A sample of such rows, unordered, says nothing."""
    if len(values) < MIN_ROWS_FOR_IDENTIFIER or pd.api.types.is_bool_dtype(values):
        return None
    if not pd.api.types.is_integer_dtype(values) or values.isna().any():
        return None
    low, high = int(values.min()), int(values.max())
    consecutive = high - low == len(values) - 1
    ordered = "rises" if values.is_monotonic_increasing else "falls" if values.is_monotonic_decreasing else None
    if not (consecutive or ordered) or not values.is_unique:  # the cheap tests first: is_unique hashes every value
        return None
    if consecutive:
        return f"numbers the rows ({low} to {high}, each once), like a row index"
    first, second, last = (int(values.iloc[i]) for i in (0, 1, -1))
    return f"{ordered} with the row order ({first}, {second}, ... {last}, each once), like a row index or a record ID"


# Dates and times as text: 2021-03-04, 2021/03/04, 04/03/2021, 4.3.21, each optionally with a time.
_DATE = re.compile(
    r"^\s*(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?\s*$"
)
DATE_SHARE = 0.9  # of the sampled non-empty values


def _date_example(values: pd.Series) -> str | None:
    """The first value when (nearly) every sampled non-empty value of a text column is a date."""
    sample = values.dropna().astype(str).iloc[:200]
    if sample.empty:
        return None
    dates = sample.map(lambda v: bool(_DATE.match(v)))
    return str(sample[dates].iloc[0]) if dates.mean() >= DATE_SHARE else None


def _is_text(values: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values))


# -- schemas -----------------------------------------------------------------------------------------------
def schema_of(frame: pd.DataFrame, *, target: str) -> dict[str, Any]:
    """What later data is checked against: each column's kind, range (numeric) or categories (few), null share."""
    columns: dict[str, Any] = {}
    for column in frame.columns:
        values = frame[column]
        entry: dict[str, Any] = {"kind": "text" if _is_text(values) else "numeric"}
        if entry["kind"] == "numeric" and values.notna().any():
            entry["min"], entry["max"] = float(values.min()), float(values.max())
        elif entry["kind"] == "text" and values.nunique() <= 50:
            entry["categories"] = sorted(values.dropna().astype(str).unique().tolist())
        entry["null_share"] = round(float(values.isna().mean()), 6)
        columns[str(column)] = entry
    return {"target": target, "n_rows": len(frame), "columns": columns}


def save_schema(schema: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(schema, sort_keys=False))


def load_schema(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"schema file '{path}' not found; create one with tabtrack validate DATA --save-schema {path}."
        )
    try:
        schema = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"schema file '{path}' is not valid YAML: {exc}") from exc
    if not isinstance(schema, dict) or not isinstance(schema.get("columns"), dict):
        raise ConfigError(f"schema file '{path}' has no `columns:` mapping; re-create it with --save-schema.")
    return schema


def _check_schema(frame: pd.DataFrame, schema: dict[str, Any]) -> list[Finding]:
    expected: dict[str, Any] = schema["columns"]
    findings: list[Finding] = []
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        findings.append(
            Finding("schema", "error", f"column(s) {', '.join(map(repr, missing))} of the schema are missing.")
        )
    extra = [c for c in frame.columns if c not in expected]
    if extra:
        findings.append(
            Finding("schema", "warning", f"new column(s) not in the schema: {', '.join(map(repr, extra))}.")
        )
    for column, spec in expected.items():
        if column not in frame.columns or not isinstance(spec, dict):
            continue
        values = frame[column]
        kind = "text" if _is_text(values) else "numeric"
        if spec.get("kind") and kind != spec["kind"]:
            findings.append(
                Finding("schema", "error", f"column {column!r} is {kind}; the schema says {spec['kind']}.", column)
            )
            continue
        if kind == "numeric" and "min" in spec and values.notna().any():
            outside = int(((values < spec["min"]) | (values > spec["max"])).sum())
            if outside:
                findings.append(
                    Finding(
                        "schema",
                        "warning",
                        f"{outside} value(s) of {column!r} fall outside the schema's range "
                        f"[{spec['min']:g}, {spec['max']:g}] (now [{values.min():g}, {values.max():g}]).",
                        column,
                    )
                )
        if kind == "text" and "categories" in spec:
            new = sorted(set(values.dropna().astype(str)) - set(map(str, spec["categories"])))
            if new:
                shown = ", ".join(map(repr, new[:5])) + (" ..." if len(new) > 5 else "")
                findings.append(
                    Finding("schema", "warning", f"column {column!r} has unseen categories: {shown}.", column)
                )
        null_share = float(values.isna().mean())
        if null_share > float(spec.get("null_share", 0)) + 0.1:
            findings.append(
                Finding(
                    "schema",
                    "warning",
                    f"column {column!r} is {null_share:.0%} empty; the schema saw {float(spec.get('null_share', 0)):.0%}.",
                    column,
                )
            )
    return findings
