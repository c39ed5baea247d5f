"""The signature and dtype layer: a logged model takes rows however pandas hands them over (int64, or
float64 once a value is missing; nullable integers and booleans; booleans as objects; `category`; text
with gaps; any column order), with the same predictions; and the row-index and date checks."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

import tabtrack
from tabtrack.data.validate import validate_frame
from tabtrack_runtime.raw_input import RawInput


def test_raw_input_gives_the_training_types_whatever_arrives():
    step = RawInput(columns=["age", "member", "city"], numeric=["age", "member"]).fit(None)
    variants = {
        "as trained": pd.DataFrame({"age": [30.0, np.nan], "member": [1.0, 0.0], "city": ["lyon", np.nan]}),
        "int64, bool, category": pd.DataFrame(
            {"age": [30, 41], "member": [True, False], "city": pd.Categorical(["lyon", "nice"])}
        ),
        "nullable": pd.DataFrame(
            {
                "age": pd.array([30, None], dtype="Int64"),
                "member": pd.array([True, None], dtype="boolean"),
                "city": pd.array(["lyon", None], dtype="string"),
            }
        ),
        "objects from JSON, reordered, extra": pd.DataFrame(
            {"city": ["lyon", None], "extra": [1, 2], "member": [True, None], "age": ["30", None]}
        ),
    }
    for name, frame in variants.items():
        out = step.transform(frame)
        assert list(out.columns) == ["age", "member", "city"], name
        assert out["age"].dtype == np.float64 and out["member"].dtype == np.float64, name
        assert out["city"].dtype == object and all(isinstance(v, str) or v != v for v in out["city"]), name
    assert step.transform(variants["nullable"])["age"].isna().tolist() == [False, True]
    assert step.transform(variants["int64, bool, category"])["member"].tolist() == [1.0, 0.0]

    with pytest.raises(ValueError, match=r"lacks column.*'city'"):
        step.transform(pd.DataFrame({"age": [1], "member": [0]}))
    with pytest.raises(ValueError, match="column 'age' must be numeric; got 'old'"):
        step.transform(pd.DataFrame({"age": ["old"], "member": [0], "city": ["x"]}))


def test_text_columns_pass_through_without_a_copy():
    from tabtrack_runtime.raw_input import as_number_column, as_text_column

    text = pd.Series(["a", "b"], dtype=object)
    assert np.shares_memory(as_text_column(text).to_numpy(), text.to_numpy())
    numbers = pd.Series([1.5, np.nan])
    assert np.shares_memory(as_number_column(numbers).to_numpy(), numbers.to_numpy())


@pytest.fixture
def mixed_model(workdir, store_uri):
    """A model trained on integers (one with gaps), a boolean, text with gaps: as a CSV holds them."""
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame(
        {
            "rooms": rng.integers(1, 6, n),
            "floor": pd.array(np.where(rng.random(n) < 0.1, None, rng.integers(0, 9, n)), dtype="Int64"),
            "garden": rng.random(n) < 0.4,
            "city": np.where(rng.random(n) < 0.1, None, rng.choice(["lyon", "nice", "paris"], n)),
        }
    )
    frame["price"] = frame["rooms"] * 50 + frame["garden"] * 30 + rng.normal(0, 10, n)
    path = workdir / "homes.csv"
    frame.to_csv(path, index=False)
    result = tabtrack.train(path, target="price", model="random_forest", tracking_uri=store_uri)
    return result, pd.read_csv(path).drop(columns=["price"])


def test_the_signature_declares_every_input_column_any_type(mixed_model):
    result, raw = mixed_model
    info = mlflow.models.get_model_info(result.model_uri)
    inputs = info.signature.inputs.to_dict()
    assert [spec["name"] for spec in inputs] == list(raw.columns)
    assert {spec["type"] for spec in inputs} == {"any"}


def test_pyfunc_predicts_the_same_whatever_the_batch_looks_like(mixed_model):
    result, raw = mixed_model
    model = mlflow.pyfunc.load_model(result.model_uri)
    expected = np.asarray(model.predict(raw))
    assert raw["floor"].dtype == np.float64  # the whole file: a gap makes the integer column float64
    complete = raw[raw["floor"].notna() & raw["city"].notna()]
    as_ints = complete.astype({"floor": "int64"})
    assert as_ints["floor"].dtype == np.int64
    batches = {
        "int64 (a batch without gaps)": (as_ints, complete.index),
        "float64 with NaN": (raw.head(40), raw.index[:40]),
        "nullable Int64 and boolean": (
            raw.astype({"floor": "Int64", "rooms": "Int64", "garden": "boolean"}),
            raw.index,
        ),
        "booleans as objects": (raw.astype({"garden": object}), raw.index),
        "category text": (raw.astype({"city": "category"}), raw.index),
        "columns reordered": (raw[raw.columns[::-1]], raw.index),
    }
    for name, (batch, rows) in batches.items():
        np.testing.assert_allclose(np.asarray(model.predict(batch)), expected[rows], err_msg=name)
    np.testing.assert_allclose(result.pipeline.predict(raw), expected)


def test_mlflow_models_serve_takes_json_bodies_and_refuses_csv_ones(mixed_model):
    """The README's one limit of the AnyType signature: MLflow's scoring server reads CSV bodies with the
    signature's pandas dtypes, which AnyType has not."""
    from fastapi.testclient import TestClient
    from mlflow.pyfunc import scoring_server

    result, raw = mixed_model
    model = mlflow.pyfunc.load_model(result.model_uri)
    client = TestClient(scoring_server.init(model))
    body = {"dataframe_split": json.loads(raw.head(30).to_json(orient="split", index=False))}
    answer = client.post("/invocations", json=body)
    assert answer.status_code == 200
    np.testing.assert_allclose(answer.json()["predictions"], model.predict(raw.head(30)))
    refused = client.post(
        "/invocations", content=raw.head(30).to_csv(index=False), headers={"Content-Type": "text/csv"}
    )
    assert refused.status_code == 400 and "pandas types" in refused.text


def test_a_row_index_is_a_warning_and_a_sorted_one_leaks(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=200), "y": rng.integers(0, 2, 200)})
    for name, ids in {"1..N": np.arange(1, 201), "shuffled, offset": rng.permutation(200) + 1000}.items():
        report = validate_frame(frame.assign(rownames=ids), target="y")
        (finding,) = [f for f in report.findings if f.column == "rownames"]
        assert (finding.check, finding.severity) == ("identifier_column", "warning"), name
        assert "--set 'drop_columns=[rownames]'" in finding.message
    # unique IDs that rise with the rows (employee numbers 1, 2, 4, 5, 7, ...) are reported like a row index
    numbers = np.sort(rng.choice(np.arange(1, 1000), 200, replace=False))
    (rising,) = [
        f for f in validate_frame(frame.assign(employee=numbers), target="y").findings if f.column == "employee"
    ]
    assert rising.check == "identifier_column" and "rises with the row order" in rising.message
    # a sample of such rows, unordered, stays silent
    sample = validate_frame(frame.assign(employee=rng.permutation(numbers)), target="y")
    assert not [f for f in sample.findings if f.column == "employee"]
    gappy = frame.assign(rownames=pd.array(np.where(np.arange(200) == 5, None, np.arange(200)), dtype="Int64"))
    assert not [f for f in validate_frame(gappy, target="y").findings if f.column == "rownames"]
    ordered = frame.sort_values("y").assign(rownames=np.arange(1, 201))  # a table sorted by class
    leaks = [f for f in validate_frame(ordered, target="y").findings if f.column == "rownames"]
    assert sorted((f.check, f.severity) for f in leaks) == [("identifier_column", "warning"), ("leakage", "error")]


def test_dates_are_reported():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=100), "y": rng.integers(0, 2, 100)})
    days = pd.date_range("2024-01-01", periods=100, freq="D")
    for values in (days.strftime("%Y-%m-%d"), days.strftime("%d/%m/%Y %H:%M"), days.strftime("%Y-%m-%dT%H:%M:%SZ")):
        report = validate_frame(frame.assign(when=values), target="y")
        (finding,) = [f for f in report.findings if f.column == "when"]
        assert (finding.check, finding.severity) == ("date_column", "warning")
        assert f"e.g. {values[0]!r}" in finding.message and "drop_columns=[when]" in finding.message
    labels = validate_frame(frame.assign(code=[f"A-{i % 7}" for i in range(100)]), target="y")
    assert not [f for f in labels.findings if f.check == "date_column"]
    typed = validate_frame(frame.assign(when=days), target="y")
    assert [(f.check, f.severity) for f in typed.findings if f.column == "when"] == [("date_column", "error")]


def test_train_refuses_a_date_column_in_one_line(workdir, data_dir, cli):
    frame = pd.read_csv(data_dir / "wine.csv").assign(bottled=pd.Timestamp("2020-01-01"))
    frame.to_parquet(workdir / "dated.parquet")
    code, _, err = cli("train", workdir / "dated.parquet", "--target", "target", "--no-track")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "'bottled'" in err and "holds dates" in err and "--set 'drop_columns=[bottled]'" in err


def test_validate_prints_the_fix_intact(workdir, cli):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"rownames": np.arange(1, 301), "x": rng.normal(size=300), "y": rng.integers(0, 2, 300)})
    frame.to_csv(workdir / "rows.csv", index=False)
    code, out, _ = cli("validate", workdir / "rows.csv", "--target", "y")
    assert code == 0
    assert "--set 'drop_columns=[rownames]'" in " ".join(out.split())  # not eaten as terminal markup
