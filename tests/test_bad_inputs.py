"""Each user mistake: exit code 2, one line on stderr naming the problem, no traceback, no run left behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import mixed_frame

CORPUS = Path(__file__).parent / "bad_inputs"
CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "case.yaml").is_file())


def test_corpus_is_large():
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES)
@pytest.mark.fresh_store
def test_bad_input_is_one_line_and_exit_2(case, workdir, cli):
    """tests/bad_inputs/CASE/ holds the files and case.yaml (args, expected fragment of the one error line)."""
    shutil.copytree(CORPUS / case, workdir, dirs_exist_ok=True)
    spec = yaml.safe_load((workdir / "case.yaml").read_text(encoding="utf-8"))
    code, out, err = cli("train", *spec["args"])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert spec["expect"] in lines[0], lines[0]
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


# -- fuzz: whatever values config keys and options get, the outcome is a result or one clear line ---------

_ANY_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
_OVERSIZED = st.integers(min_value=10**6 + 1, max_value=2**70) | st.integers(min_value=-(2**70), max_value=-(10**6) - 1)
_NOT_INT = st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
_CONFIG_VALUES = {
    "test_size": st.one_of(st.floats(min_value=-1, max_value=2), _ANY_SCALAR),
    "cv_folds": st.one_of(st.integers(min_value=-3, max_value=12), _ANY_SCALAR),
    "random_state": st.one_of(st.integers(min_value=-5, max_value=2**40), _ANY_SCALAR),
    "thresholds": st.one_of(st.lists(st.floats(min_value=-1, max_value=2), max_size=3), _ANY_SCALAR),
    "task": st.one_of(st.sampled_from(["auto", "classification", "regression"]), _ANY_SCALAR),
    "device": st.one_of(st.sampled_from(["auto", "cpu", "cuda"]), _ANY_SCALAR),
    # Model sizes stay small or go past the 10**6 limit (an error): anything between trains for minutes.
    "model.params.n_estimators": st.one_of(st.integers(min_value=-3, max_value=25), _OVERSIZED, _NOT_INT),
    "model.params.max_depth": st.one_of(st.integers(min_value=-3, max_value=8), _OVERSIZED, _NOT_INT),
    "model.type": st.one_of(st.sampled_from(["random_forest", "logistic_regression", "ridge"]), _ANY_SCALAR),
    "tags": st.one_of(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2), _ANY_SCALAR),
    "drop_columns": st.one_of(st.lists(st.sampled_from(["a", "b", "y", "z"]), max_size=2), _ANY_SCALAR),
}
_SMALL = "a,b,y\n" + "".join(f"{i % 7},{(i * 3) % 11},{i % 2}\n" for i in range(40))


def _yaml_scalar(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    overrides=st.dictionaries(st.sampled_from(sorted(_CONFIG_VALUES)), st.none(), min_size=1, max_size=3),
    data=st.data(),
)
def test_fuzzed_config_values_give_a_result_or_one_line(overrides, data, tmp_path_factory, cli, monkeypatch):
    work = tmp_path_factory.mktemp("fuzz")
    monkeypatch.chdir(work)
    (work / "d.csv").write_text(_SMALL)
    args = ["train", "d.csv", "--target", "y", "--no-track"]
    for key in overrides:
        args += ["--set", f"{key}={_yaml_scalar(data.draw(_CONFIG_VALUES[key], label=key))}"]
    code, out, err = cli(*args)
    assert code in (0, 2), (args, code, err[-2000:])
    assert "Traceback" not in out + err
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)
    else:
        assert "test" in out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    option=st.sampled_from(["--test-size", "--cv", "--seed", "--task", "--device", "--model", "--tag", "--set"]),
    value=st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=15),
)
def test_fuzzed_cli_options_never_crash(option, value, tmp_path_factory, cli, monkeypatch):
    work = tmp_path_factory.mktemp("fuzzcli")
    monkeypatch.chdir(work)
    (work / "d.csv").write_text(_SMALL)
    code, out, err = cli("train", "d.csv", "--target", "y", "--no-track", option, value)
    assert code in (0, 2), (option, value, code, err[-2000:])
    assert "Traceback" not in out + err
    assert not (work / "mlflow.db").exists()
