"""Random forest, classifier and regressor."""

from __future__ import annotations

from tabtrack.models.spec import ModelSpec


def _space(trial, task: str) -> dict:
    return {
        "n_estimators": trial.suggest_int("n_estimators", 50, 400, log=True),
        "max_depth": trial.suggest_int("max_depth", 2, 32, log=True),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 1, 20, log=True),
        "max_features": trial.suggest_categorical("max_features", ["sqrt", "log2", 1.0]),
    }


SPECS = (
    ModelSpec(
        name="random_forest",
        summary="random forest of decision trees",
        estimators={
            "classification": "sklearn.ensemble:RandomForestClassifier",
            "regression": "sklearn.ensemble:RandomForestRegressor",
        },
        defaults={"n_estimators": 100, "n_jobs": -1},
        search_space=_space,
        trusted_types=("sklearn.tree._tree.Tree",),
        requires=("scikit-learn",),
    ),
)
