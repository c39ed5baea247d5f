"""LightGBM, classifier and regressor."""

from __future__ import annotations

from tabtrack.models.spec import ModelSpec


def _space(trial, task: str) -> dict:
    return {
        "n_estimators": trial.suggest_int("n_estimators", 50, 600, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 8, 256, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 5, 100, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "subsample_freq": 1,
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10, log=True),
    }


SPECS = (
    ModelSpec(
        name="lightgbm",
        summary="LightGBM gradient-boosted trees (leaf-wise)",
        estimators={"classification": "lightgbm:LGBMClassifier", "regression": "lightgbm:LGBMRegressor"},
        # deterministic + col-wise histograms: the same seed gives the same model on any thread count
        defaults={
            "n_estimators": 300,
            "learning_rate": 0.05,
            "verbose": -1,
            "deterministic": True,
            "force_col_wise": True,
        },
        search_space=_space,
        trusted_types=(
            "collections.OrderedDict",
            "lightgbm.basic.Booster",
            "lightgbm.sklearn.LGBMClassifier",
            "lightgbm.sklearn.LGBMRegressor",
        ),
        requires=("lightgbm",),
        iterative=True,
        fits_beside_python=True,
    ),
)
