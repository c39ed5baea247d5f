"""scikit-learn's histogram gradient boosting, classifier and regressor."""

from __future__ import annotations

from tabtrack.models.spec import ModelSpec


def _space(trial, task: str) -> dict:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "max_iter": trial.suggest_int("max_iter", 50, 500, log=True),
        "max_depth": trial.suggest_int("max_depth", 2, 16),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 5, 100, log=True),
        "l2_regularization": trial.suggest_float("l2_regularization", 1e-6, 10.0, log=True),
    }


SPECS = (
    ModelSpec(
        name="hist_gradient_boosting",
        summary="histogram-based gradient boosting (LightGBM-style, in scikit-learn)",
        estimators={
            "classification": "sklearn.ensemble:HistGradientBoostingClassifier",
            "regression": "sklearn.ensemble:HistGradientBoostingRegressor",
        },
        search_space=_space,
        trusted_types=("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",),
        requires=("scikit-learn",),
        iterative=True,
        fits_beside_python=True,
    ),
)
