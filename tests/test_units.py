"""Pure pieces: task detection, config layering, redaction, DVC lookups, metric aggregation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from tabtrack.config import parse_overrides, resolve_config, valid_keys
from tabtrack.data.fingerprint import dvc_md5
from tabtrack.data.prepare import detect_task
from tabtrack.errors import ConfigError
from tabtrack.evaluate.metrics import GREATER_IS_BETTER, aggregate_folds, compute_metrics, primary_metric
from tabtrack.models.families import available_models, get_spec, model_names
from tabtrack.redact import redact, redact_uri


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (["a", "b", "a"], "classification"),
        ([True, False, True], "classification"),
        ([0, 1, 2, 1], "classification"),
        ([0.0, 1.0, 1.0], "classification"),
        (np.linspace(0, 1, 50), "regression"),
        (list(range(100)), "regression"),  # many distinct integers: a count, not labels
    ],
)
def test_detect_task(values, task):
    assert detect_task(pd.Series(values)) == task


def test_overrides_parse_yaml_values_and_reject_unknown_keys():
    assert parse_overrides(
        ["model.params.max_depth=6", "cv_folds=5", "tags.stage=prod", "model.params.hidden=[1, 2]"]
    ) == {
        "model": {"params": {"max_depth": 6, "hidden": [1, 2]}},
        "cv_folds": 5,
        "tags": {"stage": "prod"},
    }
    with pytest.raises(ConfigError, match=r"Valid: .*test_size"):
        parse_overrides(["test_sizes=0.1"])
    assert "model.type" in valid_keys() and "model.params" in valid_keys()


def test_layers_file_then_options_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump({"target": "y", "test_size": 0.3, "model": {"type": "ridge", "params": {"alpha": 2}}})
    )
    config = resolve_config(
        file=path, options={"test_size": 0.25, "model": {"type": None}}, overrides=["model.params.alpha=3"]
    )
    assert (config.test_size, config.model.type, config.model.params) == (0.25, "ridge", {"alpha": 3})


def test_redaction():
    assert redact_uri("postgresql://bob:hunter2@db:5432/mlflow") == "postgresql://***@db:5432/mlflow"
    assert redact_uri("sqlite:///x/mlflow.db") == "sqlite:///x/mlflow.db"
    cleaned = redact({"tags": {"api_token": "abc", "owner": "me"}, "password": "x", "uri": "http://u:p@h"})
    assert cleaned == {"tags": {"api_token": "***", "owner": "me"}, "password": "***", "uri": "http://***@h"}


def test_dvc_lock_outputs_are_found(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "data" / "prepared").mkdir(parents=True)
    target = tmp_path / "data" / "prepared" / "train.parquet"
    target.write_bytes(b"x")
    (tmp_path / "dvc.lock").write_text(
        yaml.safe_dump(
            {
                "schema": "2.0",
                "stages": {"prepare": {"outs": [{"path": "data/prepared", "md5": "abc.dir", "hash": "md5"}]}},
            }
        )
    )
    assert dvc_md5(target) == ("abc.dir", str(tmp_path / "dvc.lock"))
    assert dvc_md5(tmp_path / "elsewhere.csv") == (None, None)


def test_fold_aggregation_skips_undefined_values():
    agg = aggregate_folds([{"a": 1.0, "b": 2.0}, {"a": 3.0}, {"a": 5.0, "b": float("nan")}])
    assert agg == {"a_mean": 3.0, "a_std": pytest.approx(np.std([1, 3, 5])), "b_mean": 2.0, "b_std": 0.0}


def test_metric_names_carry_direction():
    for task, y, pred, proba, classes in (
        (
            "classification",
            [0, 1, 1, 0],
            [0, 1, 0, 0],
            np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]]),
            [0, 1],
        ),
        ("regression", [1.0, 2.0, 3.0], [1.1, 1.9, 3.2], None, None),
    ):
        names = compute_metrics(task, y, pred, proba, classes=classes)
        assert set(names) <= set(GREATER_IS_BETTER)
    assert primary_metric("classification", 2) == "roc_auc" and primary_metric("regression") == "rmse"


def test_registry_lists_families_and_rejects_unknown_ones():
    assert {"logistic_regression", "ridge", "random_forest", "hist_gradient_boosting"} <= set(model_names())
    assert "ridge" not in available_models("classification")
    with pytest.raises(ConfigError, match="Did you mean 'ridge'"):
        get_spec("ridgee")
    spec = get_spec("random_forest")
    with pytest.raises(ConfigError, match="does not support ranking"):
        spec.estimator_class("ranking")
    assert spec.resolve_params("regression", {"max_depth": 3}, random_state=7)["random_state"] == 7


def test_numeric_imputer_fits_the_same_medians_as_scikit_learns_median_strategy():
    """tabtrack imputes with strategy=np.median (column by column, no masked copy of the whole block):
    the medians, the transformed rows, and skops' trust list must match what the logged model needs."""
    import skops.io
    from sklearn.impute import SimpleImputer

    from tabtrack.models.pipeline import PREPROCESSING_TRUSTED_TYPES, build_preprocessor

    rng = np.random.default_rng(0)
    values = rng.normal(size=(1001, 4)) * [1, 1e-6, 1e6, 3]
    values[rng.random(values.shape) < 0.2] = np.nan
    frame = pd.DataFrame(values, columns=["a", "b", "c", "d"]).assign(e=[None, "x", "y"] * 333 + ["x", "y"])
    preprocess = build_preprocessor(["a", "b", "c", "d"], ["e"]).fit(frame)

    fitted = preprocess.named_transformers_["num"].named_steps["impute"]
    reference = SimpleImputer(strategy="median").fit(frame[["a", "b", "c", "d"]])
    assert np.array_equal(fitted.statistics_, reference.statistics_)
    assert np.array_equal(
        fitted.transform(frame[["a", "b", "c", "d"]]), reference.transform(frame[["a", "b", "c", "d"]])
    )

    saved = skops.io.dumps(preprocess)
    assert set(skops.io.get_untrusted_types(data=saved)) <= set(PREPROCESSING_TRUSTED_TYPES)
    loaded = skops.io.loads(saved, trusted=list(PREPROCESSING_TRUSTED_TYPES))
    assert np.array_equal(loaded.transform(frame), preprocess.transform(frame))
