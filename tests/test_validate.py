"""Data validation: each check fires on a frame built to trip it and stays quiet on clean data;
`tabtrack validate` reports and exits 1 on errors; `train` refuses errors and records warnings."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import runs_of
from tabtrack.data.validate import ValidationSettings, schema_of, validate_frame


def clean_frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    return pd.DataFrame(
        {
            "x1": x1,
            "x2": x2,
            "city": rng.choice(["a", "b", "c", "d"], size=n),
            "y": (x1 + x2 + rng.normal(scale=1.0, size=n) > 0).astype(int),
        }
    )


def findings(frame: pd.DataFrame, **kwargs) -> set[tuple[str, str, str | None]]:
    report = validate_frame(frame, target="y", **kwargs)
    return {(f.check, f.severity, f.column) for f in report.findings}


def test_clean_frame_has_no_findings():
    assert findings(clean_frame()) == set()
    regression = clean_frame().assign(y=lambda f: f.x1 * 2 + np.random.default_rng(1).normal(size=len(f)))
    assert findings(regression) == set()


def _with(column: str, values) -> pd.DataFrame:
    frame = clean_frame()
    frame[column] = values
    return frame


N = 300
rng = np.random.default_rng(7)
CASES = [
    # (id, frame, expected finding)
    ("null share", _with("x2", np.where(np.arange(N) % 10 < 7, np.nan, 1.0)), ("null_share", "warning", "x2")),
    ("all empty", _with("x2", np.nan), ("empty_column", "error", "x2")),
    ("constant", _with("k", 5.0), ("constant_column", "warning", "k")),
    ("high cardinality", _with("zip", [f"z{i % 140}" for i in range(N)]), ("high_cardinality", "warning", "zip")),
    ("identifier", _with("customer", [f"c{i}" for i in range(N)]), ("identifier_column", "error", "customer")),
    ("identical to target", clean_frame().assign(copy=lambda f: f.y), ("leakage", "error", "copy")),
    (
        "category predicts target",
        clean_frame().assign(label=lambda f: f.y.map({0: "no", 1: "yes"})),
        ("leakage", "error", "label"),
    ),
    (
        "numeric separates classes",
        clean_frame().assign(score=lambda f: f.y * 10 + rng.uniform(size=N)),
        ("leakage", "error", "score"),
    ),
    (
        "class imbalance",
        clean_frame().assign(y=[1 if i < 10 else 0 for i in range(N)]),
        ("class_imbalance", "warning", "y"),
    ),
]


@pytest.mark.parametrize("frame, expected", [pytest.param(f, e, id=i) for i, f, e in CASES])
def test_each_check_fires(frame, expected):
    assert expected in findings(frame)


def test_leakage_on_columns_longer_than_the_first_rows_it_looks_at():
    """Past SAMPLE_ROWS the checks look at the first rows before the whole column; a column that only
    differs, or only overlaps, after them must not be flagged, and one that leaks throughout must be."""
    from tabtrack.data.leakage import SAMPLE_ROWS

    n = SAMPLE_ROWS + 2_000
    frame = clean_frame(n)
    late = np.arange(n) >= SAMPLE_ROWS
    frame["copy"] = frame["y"]
    frame["copy_until_late"] = np.where(late, 1 - frame["y"], frame["y"])
    frame["label"] = frame["y"].map({0: "no", 1: "yes"}).astype(str)
    frame["y_text_until_late"] = np.where(late, "other", frame["y"].astype(str))
    frame["score"] = frame["y"] * 10 + np.random.default_rng(3).uniform(size=n)
    frame["score_until_late"] = np.where(late, 5.0, frame["score"])  # 5.0 lies between the two classes' ranges
    leaks = {column for check, _, column in findings(frame) if check == "leakage"}
    assert leaks == {"copy", "label", "score"}


def test_duplicates_and_regression_leak_and_missing_target():
    frame = clean_frame()
    doubled = pd.concat([frame, frame.head(30)], ignore_index=True)
    assert ("duplicate_rows", "warning", None) in findings(doubled)
    regression = frame.assign(y=frame.x1 * 3.0 + 1.0, x2=frame.x1 * 3.0 + 1.0 + 1e-9)
    assert ("leakage", "error", "x2") in findings(regression)
    assert ("target", "error", None) in findings(frame.drop(columns="y"))


def test_ignore_and_thresholds_silence_checks():
    leaky = clean_frame().assign(copy=lambda f: f.y)
    assert not any(f[0] == "leakage" for f in findings(leaky, settings=ValidationSettings(ignore=("leakage",))))
    sparse = _with("x2", np.where(np.arange(N) % 10 < 3, np.nan, 1.0))
    assert ("null_share", "warning", "x2") in findings(sparse, settings=ValidationSettings(max_null_share=0.2))
    assert ("null_share", "warning", "x2") not in findings(sparse)


def test_schema_drift():
    frame = clean_frame()
    schema = schema_of(frame, target="y")
    assert findings(frame, schema=schema) == set()
    drifted = frame.drop(columns="x2").assign(x1=frame.x1 * 100, city=frame.city.replace("a", "new_city"), extra=1.0)
    found = {(f.check, f.severity, f.column) for f in validate_frame(drifted, target="y", schema=schema).findings}
    assert ("schema", "error", None) in found  # x2 missing
    assert ("schema", "warning", "x1") in found  # out of range
    assert ("schema", "warning", "city") in found  # unseen category
    retyped = frame.assign(x1=frame.x1.astype(str) + "kg")
    assert ("schema", "error", "x1") in findings(retyped, schema=schema)


def test_validate_cli_reports_and_exits_nonzero_on_errors(workdir, cli):
    clean_frame().to_csv("clean.csv", index=False)
    clean_frame().assign(copy=lambda f: f.y).to_csv("leaky.csv", index=False)
    code, out, err = cli("validate", "clean.csv", "--target", "y", "--save-schema", "schema.yaml")
    assert code == 0, err
    assert "0 error(s), 0 warning(s)" in out and (workdir / "schema.yaml").is_file()
    code, out, _ = cli("validate", "leaky.csv", "--target", "y", "--format", "json", "-o", "report.json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False and report["n_errors"] == 1
    assert report["findings"][0]["column"] == "copy"
    assert json.loads((workdir / "report.json").read_text()) == report
    code, out, _ = cli("validate", "leaky.csv", "--target", "y", "--schema", "schema.yaml", "-f", "md")
    assert code == 1 and "new column(s) not in the schema: 'copy'" in out and out.startswith("# Data validation")


def test_train_refuses_errors_and_logs_warnings(workdir, cli, client):
    clean_frame().assign(copy=lambda f: f.y).to_csv("leaky.csv", index=False)
    code, _, err = cli("train", "leaky.csv", "--target", "y")
    assert code == 2 and "column 'copy' is identical to target 'y'" in err
    assert runs_of(client, "leaky") == []
    code, _, err = cli("train", "leaky.csv", "--target", "y", "--set", "drop_columns=[copy]", "--experiment", "v")
    assert code == 0, err
    (run,) = runs_of(client, "v")
    assert run.data.params["drop_columns"] == "copy" and run.data.params["n_features"] == "3"

    _with("k", 5.0).to_csv("warn.csv", index=False)
    code, _, err = cli("train", "warn.csv", "--target", "y", "--experiment", "w")
    assert code == 0, err
    assert "'k' holds a single value" in err
    (run,) = runs_of(client, "w")
    assert run.data.tags["data.validation_warnings"] == "1"
    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)
    recorded = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/data_validation.json"))
    assert [(f["check"], f["column"]) for f in recorded["findings"]] == [("constant_column", "k")]
