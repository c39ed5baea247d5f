"""What a model family declares: how to build it, its defaults, search space and flavor."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tabtrack.errors import ConfigError, choices_hint

SearchSpace = Callable[[Any, str], dict[str, Any]]  # (optuna.Trial, task) -> params


@dataclass(frozen=True)
class ModelSpec:
    """One model family.

    `estimators` maps each supported task to the estimator class as "module:Class", so
    declaring a family imports nothing heavy; the class is imported when it is built.
    """

    name: str
    summary: str
    estimators: Mapping[str, str]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    seed_param: str | None = "random_state"
    search_space: SearchSpace | None = None
    flavor: str = "sklearn"
    # Types skops must trust to load this estimator (MLflow 3 saves sklearn models with skops).
    trusted_types: tuple[str, ...] = ()
    # Distributions the estimator needs at inference time, pinned to installed versions.
    requires: tuple[str, ...] = ()
    iterative: bool = False  # has a notion of iterations, so Optuna pruning applies

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.estimators)

    def available(self) -> bool:
        return all(importlib.util.find_spec(module) is not None for module in self._modules())

    def estimator_class(self, task: str) -> type:
        if task not in self.estimators:
            raise ConfigError(f"model {self.name!r} does not support {task}; it supports {', '.join(self.tasks)}.")
        module_name, _, class_name = self.estimators[task].partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(
                f"model {self.name!r} needs the package {module_name.split('.')[0]!r}; "
                f"install it with: pip install 'tabtrack[{self.name}]'"
            ) from exc
        return getattr(module, class_name)

    def resolve_params(self, task: str, params: Mapping[str, Any], *, random_state: int) -> dict[str, Any]:
        """Defaults, then the user's params, then the run's seed; unknown names are errors."""
        cls = self.estimator_class(task)
        valid = set(cls().get_params(deep=False))
        for key in params:
            if key not in valid:
                raise ConfigError(choices_hint(key, valid, what=f"parameter for model {self.name!r}"))
        resolved = {**self.defaults, **params}
        if self.seed_param and self.seed_param in valid:
            resolved[self.seed_param] = random_state
        return resolved

    def build(self, task: str, params: Mapping[str, Any], *, random_state: int):
        """A new, unfitted estimator; invalid parameter values are reported as ConfigError."""
        cls = self.estimator_class(task)
        estimator = cls(**self.resolve_params(task, params, random_state=random_state))
        _check_param_values(estimator, self.name)
        return estimator

    def _modules(self) -> set[str]:
        return {path.partition(":")[0].split(".")[0] for path in self.estimators.values()}


def _check_param_values(estimator: Any, name: str) -> None:
    """Run scikit-learn's own parameter validation now, before any run is created."""
    validate = getattr(estimator, "_validate_params", None)
    if validate is None:
        return
    from sklearn.utils._param_validation import InvalidParameterError

    try:
        validate()
    except InvalidParameterError as exc:
        raise ConfigError(f"invalid parameter for model {name!r}: {exc}") from exc
