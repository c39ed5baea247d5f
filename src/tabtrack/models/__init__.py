"""Model families: a registry of specs, one module per family under `families/`."""

from tabtrack.models.pipeline import build_pipeline
from tabtrack.models.registry import available_models, get_spec, model_names
from tabtrack.models.spec import ModelSpec

__all__ = ["ModelSpec", "available_models", "build_pipeline", "get_spec", "model_names"]
