"""Models the user trained: what tabtrack checks before recording one, and how it is saved.

A user's model is saved as an MLflow sklearn model with skops, trusting exactly: the types tabtrack itself
builds (its families and preprocessing), tabtrack's own classes, classes defined in modules under the run's
`code_paths` (which ship with the model), and the names the user passes as `trusted_types`. Any other type
skops would have to trust is refused before anything is logged, with the class named.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tabtrack.errors import ConfigError, TabtrackError
from tabtrack.lineage import pinned
from tabtrack.models.spec import ModelSpec

# Distributions a model of these modules needs at inference time, by top-level module.
DISTRIBUTIONS = {"sklearn": "scikit-learn", "xgboost": "xgboost", "lightgbm": "lightgbm", "torch": "torch"}
BASE_REQUIREMENTS = ("scikit-learn", "numpy", "pandas", "scipy", "skops")


OBJECT_PREFIX = "python:"  # the model type `train(model=<object>)` records: an object, not a reference


@dataclass(frozen=True)
class OwnModelSpec(ModelSpec):
    """A model the user brings to `tabtrack.train`: an estimator or Pipeline object, or a factory
    (`file.py:function` or `module:function`) returning one. `model.params` are the factory's keyword
    arguments. A Pipeline is trained as it is; a bare estimator gets tabtrack's input step and
    preprocessing, as a family does."""

    make: Callable[..., Any] | None = None
    code: tuple[str, ...] = ()  # the factory's file: it ships with the model

    @property
    def tasks(self) -> tuple[str, ...]:
        return ("classification", "regression")

    def missing_packages(self) -> list[str]:
        return []

    def build(self, task: str | None, params, *, random_state: int, y_train: Any = None, device: str = "cpu"):
        estimator = self.make(**dict(params))
        if not hasattr(estimator, "fit") or not hasattr(estimator, "predict"):
            raise ConfigError(
                f"model {self.name!r} gave a {type(estimator).__name__}, not an estimator with fit() and predict()."
            )
        return with_seed(estimator, random_state)


def own_spec(model: Any) -> OwnModelSpec:
    """The spec for `train(model=...)`: an estimator object (cloned for every fit) or a factory reference."""
    from sklearn.base import clone

    from tabtrack.evaluate.custom import load_function

    if isinstance(model, str):
        if model.startswith(OBJECT_PREFIX):
            raise ConfigError(
                f"model {model!r} was a Python object passed to tabtrack.train(model=...), which its config cannot "
                "rebuild; train with a factory instead: --model path/to/file.py:function."
            )
        target = model.rpartition(":")[0]
        name = Path(target).stem if target.endswith(".py") else None
        factory, source = load_function(model, what="model factory", module_name=name)
        code = (source,) if target.endswith(".py") and source else ()
        return OwnModelSpec(name=model, summary="your model factory", estimators={}, make=factory, code=code)
    if not hasattr(model, "fit"):
        raise ConfigError(
            f"model= takes a family name, a 'file.py:function' factory or an estimator; got {type(model).__name__}."
        )
    return OwnModelSpec(
        name=f"{OBJECT_PREFIX}{type(model).__name__}", summary="your estimator", estimators={},
        make=lambda **params: clone(model).set_params(**params) if params else clone(model),
    )  # fmt: skip


def with_seed(estimator: Any, seed: int) -> Any:
    """The run's seed for every `random_state` the user left unset (None), in a Pipeline's steps too."""
    get_params = getattr(estimator, "get_params", None)
    if get_params is None:
        return estimator
    unset = {k: seed for k, v in get_params(deep=True).items() if k.split("__")[-1] == "random_state" and v is None}
    return estimator.set_params(**unset) if unset else estimator


def is_pipeline(model: Any) -> bool:
    return hasattr(model, "steps")


def check_model(model: Any) -> None:
    """A model tabtrack can evaluate: it predicts, and it has been fitted."""
    if not callable(getattr(model, "predict", None)):
        raise TabtrackError(
            f"the model ({type(model).__name__}) has no predict(); pass a fitted scikit-learn estimator or Pipeline, "
            "an XGBoost/LightGBM scikit-learn model, or wrap your model with tabtrack.TorchModel / tabtrack.BoosterModel."
        )
    from sklearn.base import BaseEstimator
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if isinstance(model, BaseEstimator):
        try:
            check_is_fitted(model)
        except NotFittedError:
            raise TabtrackError(
                f"the model ({type(model).__name__}) is not fitted; call model.fit(X_train, y_train) before evaluate()."
            ) from None


def model_task(model: Any, task: str | None) -> str:
    """`task` when given, else what the model is: a classifier (it has classes_) or a regressor."""
    if task is not None:
        if task not in ("classification", "regression"):
            raise TabtrackError(f"task must be 'classification' or 'regression', got {task!r}.")
        return task
    from sklearn.base import is_classifier

    return "classification" if is_classifier(model) or hasattr(model, "classes_") else "regression"


def check_rows(X: Any, y: Any, what: str) -> tuple[pd.DataFrame | np.ndarray, pd.Series]:
    """X as given (a DataFrame stays one), y as a Series; their lengths must agree."""
    if X is None or y is None:
        raise TabtrackError(f"{what}: both X and y are needed.")
    if len(X) != len(y):
        raise TabtrackError(f"{what}: X has {len(X)} rows but y has {len(y)}; pass rows and labels of the same split.")
    if len(X) == 0:
        raise TabtrackError(f"{what}: no rows.")
    y = y if isinstance(y, pd.Series) else pd.Series(np.asarray(y).ravel())
    if isinstance(X, pd.DataFrame):
        y = y.set_axis(X.index)
    return X, y


def check_labels(model: Any, y: pd.Series, what: str) -> list:
    """The classes, in the model's order; labels the model never saw are refused."""
    classes = getattr(model, "classes_", None)
    if classes is None:
        return sorted(pd.unique(y).tolist())
    known = [c.item() if hasattr(c, "item") else c for c in classes]
    unseen = sorted({v.item() if hasattr(v, "item") else v for v in pd.unique(y)} - set(known), key=str)
    if unseen:
        raise TabtrackError(
            f"{what} holds label(s) {', '.join(map(repr, unseen[:5]))} the model never saw (it knows "
            f"{', '.join(map(repr, known[:10]))}); evaluate on labels of the same kind it was trained on."
        )
    return known


def trusted_types(model: Any, *, code_paths: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """The type names skops must trust to load `model` (see the module docstring); refuses any other."""
    from tabtrack.models.loading import import_skops
    from tabtrack.models.pipeline import PREPROCESSING_TRUSTED_TYPES
    from tabtrack.models.registry import all_specs

    sio = import_skops()
    try:
        needed = sio.get_untrusted_types(data=sio.dumps(model))
    except Exception as exc:
        raise TabtrackError(
            f"the model cannot be saved with skops ({type(exc).__name__}: {exc}); a lambda or a locally defined "
            "function in it cannot be: use a module-level function."
        ) from exc
    known = {*PREPROCESSING_TRUSTED_TYPES, *(t for spec in all_specs() for t in spec.all_trusted_types), *extra}
    roots = [Path(p).resolve() for p in code_paths]
    trusted, refused = [], []
    shipped = getattr(model, "user_classes", None)  # an adapter's classes outside skops (a torch checkpoint's)
    for name in shipped() if callable(shipped) else []:
        if not (name in extra or _defined_under(name, roots)):
            refused.append(name)
    for name in needed:
        if name in known or name.startswith("tabtrack.") or _defined_under(name, roots):
            trusted.append(name)
        else:
            refused.append(name)
    if refused:
        in_script = [n for n in refused if n.startswith("__main__.")]
        if in_script:
            raise TabtrackError(
                f"class(es) {', '.join(in_script)} are defined in the script itself, so no other process can load "
                "the model: move them into a module under code_paths (e.g. src/) and import them from there."
            )
        raise TabtrackError(
            f"the model holds type(s) {', '.join(refused)} that are neither tabtrack's, scikit-learn's nor defined "
            "under code_paths, so skops will not load them untrusted: ship the file or folder defining them with "
            "code_paths=[...] (--code PATH on the command line), or pass trusted_types=[...] naming them."
        )
    return trusted


def requirements(model_types: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """Pinned versions of what loading the model needs: the sklearn flavor's, the libraries its types come
    from (XGBoost, LightGBM, torch), and the user's extra requirements as given."""
    modules = {name.split(".", 1)[0] for name in model_types}
    wanted = (*BASE_REQUIREMENTS, *(DISTRIBUTIONS[m] for m in sorted(modules) if m in DISTRIBUTIONS))
    return [*pinned(tuple(dict.fromkeys(wanted))), *extra]


def _defined_under(type_name: str, roots: Sequence[Path]) -> bool:
    module_name = type_name.rpartition(".")[0]
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except Exception:
            return False
    source = getattr(module, "__file__", None)
    return source is not None and any(Path(source).resolve().is_relative_to(root) for root in roots)
