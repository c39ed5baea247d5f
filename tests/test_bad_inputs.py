"""Each user mistake: exit code 2, one line on stderr naming the problem, no traceback, no run left behind."""

from __future__ import annotations

import pytest

from conftest import mixed_frame


def _write(workdir, name: str, content: str | bytes):
    path = workdir / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def _cases():
    good = "a,b,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n9,1,0\n2,3,1\n4,5,0\n6,7,1\n8,9,0\n1,1,1\n"
    return [
        # (id, files to write, extra args, expected fragment)
        ("missing file", {}, ["nope.csv", "--target", "y"], "data file 'nope.csv' not found"),
        ("directory", {"dir/x": "a"}, ["dir", "--target", "y"], "is a directory"),
        ("unknown format", {"d.xlsx": good}, ["d.xlsx", "--target", "y"], "unknown data format '.xlsx'"),
        ("empty file", {"d.csv": ""}, ["d.csv", "--target", "y"], "is empty"),
        ("header only", {"d.csv": "a,b,y\n"}, ["d.csv", "--target", "y"], "has a header but no rows"),
        ("binary garbage", {"d.csv": b"\x00\x01\x02garbage\xff"}, ["d.csv", "--target", "y"], "looks binary"),
        ("not utf-8", {"d.csv": "a,b,y\n1,caf\xe9,0\n".encode("latin-1")}, ["d.csv", "--target", "y"], "not UTF-8"),
        (
            "bad parquet",
            {"d.parquet": b"PAR1 not really"},
            ["d.parquet", "--target", "y"],
            "not a readable Parquet file",
        ),
        ("duplicate columns", {"d.csv": "a,a,y\n1,2,0\n"}, ["d.csv", "--target", "y"], "duplicate column names: 'a'"),
        ("target missing", {"d.csv": good}, ["d.csv", "--target", "Y "], "target column 'Y ' is not in"),
        (
            "target typo suggests",
            {"d.csv": good.replace("y\n", "label\n", 1)},
            ["d.csv", "--target", "lable"],
            "Did you mean 'label'",
        ),
        ("one class", {"d.csv": "a,y\n1,0\n2,0\n3,0\n4,0\n"}, ["d.csv", "--target", "y"], "single class"),
        ("all targets empty", {"d.csv": "a,y\n1,\n2,\n"}, ["d.csv", "--target", "y"], "has no values"),
        ("no features", {"d.csv": "y\n1\n0\n1\n0\n"}, ["d.csv", "--target", "y"], "no feature columns"),
        (
            "infinite feature",
            {"d.csv": good.replace("3,4,1", "inf,4,1")},
            ["d.csv", "--target", "y"],
            "infinite values",
        ),
        ("all-empty feature", {"d.csv": "a,b,y\n1,,0\n2,,1\n3,,0\n4,,1\n5,,0\n"}, ["d.csv", "--target", "y"], "'b'"),
        ("singleton class", {"d.csv": good + "3,3,2\n"}, ["d.csv", "--target", "y"], "have a single row"),
        (
            "unknown model",
            {"d.csv": good},
            ["d.csv", "--target", "y", "--model", "random_forrest"],
            "Did you mean 'random_forest'",
        ),
        (
            "model lacks task",
            {"d.csv": good},
            ["d.csv", "--target", "y", "--model", "ridge"],
            "does not support classification",
        ),
        (
            "unknown param",
            {"d.csv": good},
            ["d.csv", "--target", "y", "--set", "model.params.max_dept=3"],
            "Did you mean 'max_depth'",
        ),
        (
            "bad param value",
            {"d.csv": good},
            ["d.csv", "--target", "y", "--set", "model.params.n_estimators=-3"],
            "n_estimators",
        ),
        (
            "unknown --set key",
            {"d.csv": good},
            ["d.csv", "--target", "y", "--set", "tests_size=0.3"],
            "Did you mean 'test_size'",
        ),
        ("--set without =", {"d.csv": good}, ["d.csv", "--target", "y", "--set", "test_size"], "expects key=value"),
        ("test_size too big", {"d.csv": good}, ["d.csv", "--target", "y", "--test-size", "1.5"], "test_size"),
        ("test_size zero", {"d.csv": good}, ["d.csv", "--target", "y", "--test-size", "0"], "test_size"),
        ("cv of one", {"d.csv": good}, ["d.csv", "--target", "y", "--cv", "1"], "at least 2"),
        ("cv above class count", {"d.csv": good}, ["d.csv", "--target", "y", "--cv", "5"], "fewer than cv_folds=5"),
        ("cv above row count", {"d.csv": good}, ["d.csv", "--target", "y", "--cv", "9"], "exceeds the 8 training rows"),
        ("negative seed", {"d.csv": good}, ["d.csv", "--target", "y", "--seed", "-1"], "random_state"),
        ("unknown task", {"d.csv": good}, ["d.csv", "--target", "y", "--task", "ranking"], "task"),
        (
            "text target for regression",
            {"d.csv": "a,y\n1,x\n2,y\n3,x\n4,y\n"},
            ["d.csv", "--target", "y", "--task", "regression"],
            "not numeric",
        ),
        ("tag without =", {"d.csv": good}, ["d.csv", "--target", "y", "--tag", "stage"], "--tag expects key=value"),
        ("no target", {"d.csv": good}, ["d.csv"], "no target column given"),
        ("no data", {}, ["--target", "y"], "no data file given"),
        (
            "config missing",
            {"d.csv": good},
            ["d.csv", "--target", "y", "--config", "nope.yaml"],
            "config file 'nope.yaml' not found",
        ),
        (
            "config bad yaml",
            {"c.yaml": "model: [unclosed", "d.csv": good},
            ["d.csv", "--target", "y", "--config", "c.yaml"],
            "not valid YAML",
        ),
        (
            "config not a mapping",
            {"c.yaml": "- a\n- b\n", "d.csv": good},
            ["d.csv", "--target", "y", "--config", "c.yaml"],
            "must hold a mapping",
        ),
        (
            "config unknown key",
            {"c.yaml": "modle: {type: ridge}\n", "d.csv": good},
            ["d.csv", "--target", "y", "--config", "c.yaml"],
            "Did you mean 'model'",
        ),
        (
            "config nested unknown key",
            {"c.yaml": "model: {kind: ridge}\n", "d.csv": good},
            ["d.csv", "--target", "y", "--config", "c.yaml"],
            "under 'model'",
        ),
        (
            "config wrong type",
            {"c.yaml": "test_size: lots\n", "d.csv": good},
            ["d.csv", "--target", "y", "--config", "c.yaml"],
            "'test_size'",
        ),
        (
            "config params not a mapping",
            {"c.yaml": "model: {params: 3}\n", "d.csv": good},
            ["d.csv", "--target", "y", "--config", "c.yaml"],
            "model.params",
        ),
    ]


@pytest.mark.parametrize(("files", "args", "fragment"), [c[1:] for c in _cases()], ids=[c[0] for c in _cases()])
def test_bad_input_is_one_line_and_exit_2(files, args, fragment, workdir, cli):
    for name, content in files.items():
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        _write(workdir, name, content)
    code, out, err = cli("train", *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err + out
    # nothing was recorded: the store is not even created
    assert not (workdir / "mlflow.db").exists()


def test_identifier_column_is_refused_until_dropped_and_mixed_types_train(workdir, cli):
    frame = mixed_frame(200)
    frame["id_like"] = [f"row{i}" for i in range(len(frame))]
    frame["zip"] = [f"z{i % 150}" for i in range(len(frame))]  # high cardinality: a warning, not an error
    frame["age"] = frame["age"].astype(object)
    frame.loc[::7, "age"] = "unknown"  # mixed numeric and text: read as a categorical column
    frame.to_csv(workdir / "d.csv", index=False)
    args = ("train", "d.csv", "--target", "churn", "--model", "logistic_regression", "--no-track")
    code, out, err = cli(*args)
    assert code == 2
    assert "'id_like' has a different value on every row" in err and "drop_columns=[id_like]" in err
    code, out, err = cli(*args, "--set", "drop_columns=[id_like]")
    assert code == 0, err
    assert "accuracy" in out
    assert "'zip' has 150 distinct values" in err  # the warning is shown
