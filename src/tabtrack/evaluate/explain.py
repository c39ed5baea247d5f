"""SHAP values per *input* column (`--explain`): which columns pushed each test row's prediction, and how far.

The explainer follows the model: TreeExplainer for tree ensembles (path-dependent, no background data),
LinearExplainer for linear models, and a model-agnostic permutation explainer on a small background sample
otherwise. Values are in the explainer's own output space, where they are additive (a row's values sum to
its output minus the expected value): probability for scikit-learn forests, log-odds for boosting and
logistic models, the prediction for regressors; per class for multiclass. One-hot outputs are summed back
onto their input column, as feature importance is.

TreeSHAP on scikit-learn trees (and linear models) runs in a forked child process where forking is safe
(tabtrack/forked.py): shap's C extension is known to crash the whole process on deep forests (shap issues
#3726, #2777), and a crash there must only cost the explanation. The child starts before the rest of the
evaluation and is collected after it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tabtrack import forked
from tabtrack.models.spec import unwrap

MAX_ROWS = 1000  # test rows explained at most
AGNOSTIC_MAX_ROWS = 100  # the permutation explainer scores (2 x features + 1) x background rows per row
BACKGROUND_ROWS = 100  # linear models
AGNOSTIC_BACKGROUND_ROWS = 25
# TreeSHAP costs about rows x sum over trees of (leaves x depth^2); rows are cut to keep within this.
TREE_WORK_BUDGET = 1.5e10
TREE_MODULES = ("sklearn.ensemble._forest", "sklearn.tree", "sklearn.ensemble._hist_gradient_boosting",
                "sklearn.ensemble._gb", "xgboost", "lightgbm")  # fmt: skip
# scikit-learn trees whose TreeSHAP is shap's own C code (HistGradientBoosting's trees are converted to it)
FOREST_MODULES = (
    "sklearn.ensemble._forest",
    "sklearn.tree",
    "sklearn.ensemble._gb",
    "sklearn.ensemble._hist_gradient_boosting",
)


class ExplainError(RuntimeError):
    """The explanation could not be made; the run goes on without it."""


@dataclass
class Explanation:
    values: pd.DataFrame  # rows x input columns: each column's SHAP value toward the explained output
    data: pd.DataFrame  # the explained rows, input columns
    explainer: str  # tree | linear | permutation
    output: str  # the space the values add up in: probability, log-odds, prediction
    rows: int

    def importance(self) -> pd.DataFrame:
        """Mean |SHAP| per input column, largest first."""
        means = self.values.abs().mean()
        table = pd.DataFrame({"feature": means.index, "mean_abs_shap": means.to_numpy()})
        return table.sort_values("mean_abs_shap", ascending=False, kind="stable").reset_index(drop=True)


def start_explanation(model, X: pd.DataFrame, *, task: str, random_state: int) -> Callable[[], Explanation]:
    """Begin `explain`; the returned function waits for it and returns the Explanation (or raises).

    scikit-learn trees and linear models are explained in a forked child where forking is safe (the crash guard),
    which also lets the explainer, shap's import included, run beside the rest of the evaluation on another core.
    XGBoost and LightGBM (whose TreeSHAP is their own OpenMP code, unsafe in a child forked after OpenMP ran) and
    the permutation explainer run in this process, when the function is called."""
    transform, estimator, owners = _split(model, X)
    kind = explainer_kind(estimator)
    limit = AGNOSTIC_MAX_ROWS if kind == "permutation" else MAX_ROWS
    if kind == "tree":
        limit = min(limit, _tree_row_budget(estimator))
    rows = X.sample(min(limit, len(X)), random_state=random_state).sort_index() if len(X) > limit else X
    features = _dense(transform(rows))
    background = None
    if kind != "tree":
        size = BACKGROUND_ROWS if kind == "linear" else AGNOSTIC_BACKGROUND_ROWS
        sample = X.sample(min(size, len(X)), random_state=random_state + 1)
        background = _dense(transform(sample))
    job = (shap_values, estimator, features)
    options = {"task": task, "background": background, "seed": random_state}
    if kind == "linear" or type(estimator).__module__.startswith(FOREST_MODULES):
        pending = forked.Beside("SHAP values", *job, redo_after_crash=False, **options)
        values_of = pending.result
    else:
        values_of = lambda: shap_values(estimator, features, **options)  # noqa: E731

    def finish() -> Explanation:
        try:
            values, _, output = values_of()
        except forked.ChildFailed as exc:
            raise ExplainError(f"the explainer failed: {exc}") from None
        chosen = _explained_output(values, estimator, features, task)
        per_column = per_input_column(chosen, owners, list(X.columns))
        return Explanation(
            values=pd.DataFrame(per_column, columns=list(X.columns), index=rows.index),
            data=rows,
            explainer=kind,
            output=output,
            rows=len(rows),
        )

    return finish


def explainer_kind(estimator) -> str:
    module = type(estimator).__module__
    if module.startswith(TREE_MODULES):
        return "tree"
    if module.startswith("sklearn.linear_model") and hasattr(estimator, "coef_"):
        return "linear"
    return "permutation"


def shap_values(estimator, features: np.ndarray, *, task: str, background=None, seed: int = 0):
    """`(values[rows, features, outputs], expected[outputs], output space)` from the explainer that suits
    the estimator; a row's values sum to its output minus the expected value."""
    import shap

    kind = explainer_kind(estimator)
    classifier = task == "classification"
    if kind == "tree":
        explainer = shap.TreeExplainer(estimator, feature_perturbation="tree_path_dependent")
        values = explainer.shap_values(features, check_additivity=False)
        forest = type(estimator).__module__.startswith(("sklearn.ensemble._forest", "sklearn.tree"))
        output = ("probability" if forest else "log-odds") if classifier else "prediction"
    elif kind == "linear":
        explainer = shap.LinearExplainer(estimator, shap.maskers.Independent(background, max_samples=len(background)))
        values = explainer.shap_values(features)
        output = "log-odds" if classifier else "prediction"
    else:
        predict = estimator.predict_proba if classifier and hasattr(estimator, "predict_proba") else estimator.predict
        explainer = shap.PermutationExplainer(predict, shap.maskers.Independent(background), seed=seed)
        result = explainer(features, max_evals=2 * features.shape[1] + 1, silent=True)
        values, explainer.expected_value = result.values, result.base_values[0]
        output = "probability" if classifier else "prediction"
    values = np.stack(values, axis=-1) if isinstance(values, list) else np.asarray(values, dtype=float)
    if values.ndim == 2:
        values = values[:, :, None]
    return values, np.atleast_1d(np.asarray(explainer.expected_value, dtype=float)), output


def per_input_column(values: np.ndarray, owners: list[str], columns: list[str]) -> np.ndarray:
    """rows x features -> rows x input columns: each feature's values added onto the column it came from."""
    index = {column: i for i, column in enumerate(columns)}
    summed = np.zeros((values.shape[0], len(columns)))
    for position, owner in enumerate(owners):
        summed[:, index[owner]] += values[:, position]
    return summed


def _explained_output(values: np.ndarray, estimator, features: np.ndarray, task: str) -> np.ndarray:
    """rows x features for one output: the positive class (binary), each row's predicted class (multiclass),
    the prediction (regression)."""
    outputs = values.shape[2]
    if outputs == 1:
        return values[:, :, 0]
    if outputs == 2 and task == "classification":
        return values[:, :, 1]
    predicted = np.argmax(estimator.predict_proba(features), axis=1)
    return values[np.arange(len(values)), :, predicted]


def _split(model, X: pd.DataFrame):
    """(transform, estimator, the input column of each feature the estimator sees). A pipeline of the user's
    own, whose features cannot be traced to input columns, is explained whole on numeric inputs."""
    from tabtrack.evaluate.importance import feature_owners

    columns = list(X.columns)
    steps = getattr(model, "steps", None)
    if not steps:
        return (lambda rows: rows), unwrap(model), columns
    preprocess = dict(steps).get("preprocess")
    owners = feature_owners(preprocess, columns) if preprocess is not None else None
    if owners is not None:
        return model[:-1].transform, unwrap(steps[-1][1]), owners
    if all(pd.api.types.is_numeric_dtype(dtype) for dtype in X.dtypes):
        return (lambda rows: rows), model, columns
    raise ExplainError(
        "cannot map this pipeline's features back to its input columns (not tabtrack's preprocessing, and "
        "some inputs are not numbers)"
    )


def _dense(matrix) -> np.ndarray:
    if hasattr(matrix, "toarray"):
        matrix = matrix.toarray()
    return np.asarray(matrix, dtype=float)


def _tree_row_budget(estimator) -> int:
    """How many rows TreeSHAP explains within TREE_WORK_BUDGET (deep forests get fewer)."""
    trees = getattr(estimator, "estimators_", None)
    if trees is None:
        return MAX_ROWS
    work = 0.0
    for tree in np.ravel(trees):
        structure = getattr(tree, "tree_", None)
        if structure is not None:
            work += structure.n_leaves * max(structure.max_depth, 1) ** 2
    return int(max(50, min(MAX_ROWS, TREE_WORK_BUDGET / max(work, 1.0))))
