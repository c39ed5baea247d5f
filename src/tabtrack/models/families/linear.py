"""Linear baselines: logistic regression for classification, ridge for regression."""

from __future__ import annotations

from tabtrack.models.spec import ModelSpec


def _logistic_space(trial, task: str) -> dict:
    return {"C": trial.suggest_float("C", 1e-3, 1e2, log=True)}


def _ridge_space(trial, task: str) -> dict:
    return {"alpha": trial.suggest_float("alpha", 1e-3, 1e2, log=True)}


SPECS = (
    ModelSpec(
        name="logistic_regression",
        summary="L2-regularised logistic regression (lbfgs)",
        estimators={"classification": "sklearn.linear_model:LogisticRegression"},
        defaults={"max_iter": 1000},
        search_space=_logistic_space,
        requires=("scikit-learn",),
    ),
    ModelSpec(
        name="ridge",
        summary="ridge regression (L2-regularised least squares)",
        estimators={"regression": "sklearn.linear_model:Ridge"},
        search_space=_ridge_space,
        requires=("scikit-learn",),
    ),
)
