"""Models the user brings to `tabtrack.train`: an estimator or Pipeline object, or a factory reference
(`path/to/file.py:function`, `module:function`) that returns one. A Pipeline is trained as it is; a bare
estimator gets tabtrack's input step and preprocessing, as a family does. How such a model is saved (the
types skops may trust) is core/packaging.py's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabtrack.errors import ConfigError
from tabtrack.models.spec import ModelSpec

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
