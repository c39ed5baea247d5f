"""The model families, by name: every module in this package that defines `SPECS` (a tuple of ModelSpec) is
one, so adding a family is a single new file."""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from tabtrack.errors import ConfigError, choices_hint
from tabtrack.models.spec import ModelSpec


@cache
def _registry() -> dict[str, ModelSpec]:
    specs: dict[str, ModelSpec] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for spec in getattr(module, "SPECS", ()):
            if spec.name in specs:
                raise RuntimeError(f"model family {spec.name!r} is declared twice")
            specs[spec.name] = spec
    return specs


def all_specs() -> list[ModelSpec]:
    return list(_registry().values())


def model_names() -> list[str]:
    return sorted(_registry())


def get_spec(name: str) -> ModelSpec:
    """A family by name, or the user's own model factory for a `file.py:function` / `module:function` reference."""
    if ":" in name:
        from tabtrack.models.own import own_spec

        return own_spec(name)
    try:
        return _registry()[name]
    except KeyError:
        raise ConfigError(
            choices_hint(name, _registry(), what="model") + " Or your own: path/to/file.py:function."
        ) from None


def available_models(task: str | None = None) -> list[str]:
    """Families whose packages are installed (and that support `task`, when given)."""
    return [
        name for name, spec in sorted(_registry().items()) if spec.available() and (task is None or task in spec.tasks)
    ]
