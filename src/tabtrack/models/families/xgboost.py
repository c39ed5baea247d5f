"""XGBoost, classifier and regressor (histogram trees; `--device cuda` trains on the GPU)."""

from __future__ import annotations

import numpy as np

from tabtrack.models.spec import ModelSpec

# A binary target whose minority class is below this share gets scale_pos_weight = negatives / positives.
IMBALANCE_SHARE = 0.4


def _data_params(task: str, y_train, device: str) -> dict:
    if task == "regression":
        return {"eval_metric": "rmse"}
    labels, counts = np.unique(np.asarray(y_train), return_counts=True)
    if len(labels) > 2:
        return {"eval_metric": "mlogloss"}
    params = {"eval_metric": "logloss"}
    negatives, positives = counts  # sorted labels: the second is the positive class
    if min(counts) / counts.sum() < IMBALANCE_SHARE:
        params["scale_pos_weight"] = float(negatives / positives)
    return params


def _space(trial, task: str) -> dict:
    return {
        "n_estimators": trial.suggest_int("n_estimators", 50, 600, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "max_depth": trial.suggest_int("max_depth", 2, 10),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "min_child_weight": trial.suggest_float("min_child_weight", 1e-2, 20, log=True),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10, log=True),
    }


SPECS = (
    ModelSpec(
        name="xgboost",
        summary="XGBoost gradient-boosted trees (hist; CPU or CUDA)",
        estimators={"classification": "xgboost:XGBClassifier", "regression": "xgboost:XGBRegressor"},
        defaults={"n_estimators": 300, "learning_rate": 0.1, "max_depth": 6, "tree_method": "hist", "n_jobs": -1},
        search_space=_space,
        data_params=_data_params,
        trusted_types=("xgboost.core.Booster", "xgboost.sklearn.XGBClassifier", "xgboost.sklearn.XGBRegressor"),
        requires=("xgboost",),
        iterative=True,
        encode_labels=True,
        device_param="device",
    ),
)
