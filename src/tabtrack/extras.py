"""Optional dependencies: which extra of `pip install 'tabtrack[EXTRA]'` brings each, and one error that says so.

Every install hint tabtrack prints comes from EXTRAS, and a test checks each extra named here exists in
pyproject.toml.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

# importable module -> the extra that installs it
EXTRAS = {
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "torch": "mlp",
    "shap": "shap",
    "ray": "ray",
    "s3fs": "s3",
    "boto3": "s3",
    "psycopg": "postgres",
    "skl2onnx": "onnx",
    "onnxmltools": "onnx",
    "onnxruntime": "onnx",
    "onnx": "onnx",
}


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def install_hint(module: str) -> str:
    """`pip install 'tabtrack[EXTRA]'` for a module an extra brings, else `pip install MODULE`."""
    extra = EXTRAS.get(module.partition(".")[0])
    return f"pip install 'tabtrack[{extra}]'" if extra else f"pip install {module}"


def require(module: str, *, purpose: str, instead: str = "") -> ModuleType:
    """`module`, imported; where it is not installed, a ConfigError naming what needs it and the install
    command (`instead`: another way out, e.g. "or drop --explain")."""
    from tabtrack.errors import ConfigError

    if not installed(module.partition(".")[0]):
        alternative = f" ({instead})" if instead else ""
        raise ConfigError(f"{purpose} needs {module.partition('.')[0]}: {install_hint(module)}{alternative}.")
    return importlib.import_module(module)
