"""A fitted model as MLflow will hold it, whichever door trained it: the types skops may trust to load it, the
pinned requirements, the code it needs, its input example, and the bare algorithm under its own flavor.

Trusted types: a family's are declared by its spec (nothing to scan). Any other model is scanned with skops,
and these pass: scikit-learn's public objects, numpy's types and functions (its file readers and writers
excepted), Python's own data types, tabtrack's classes, classes defined in modules under the run's
`code_paths` (which ship with the model), and the names the user passes as `trusted_types`. Any other type is
refused before anything is logged, with the class named.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabtrack.errors import TabtrackError
from tabtrack.lineage import pinned
from tabtrack.models.spec import unwrap
from tabtrack.tracking.base import ModelArtifact

log = logging.getLogger(__name__)

INPUT_EXAMPLE_ROWS = 5
RUNTIME_PACKAGE = "tabtrack_runtime"
# Distributions a model of these modules needs at inference time, by top-level module.
DISTRIBUTIONS = {"sklearn": "scikit-learn", "xgboost": "xgboost", "lightgbm": "lightgbm", "torch": "torch"}
BASE_REQUIREMENTS = ("scikit-learn", "numpy", "pandas", "scipy", "skops")
# Python's own types a scikit-learn parameter may hold (`make_column_selector(dtype_include=object)`).
BUILTIN_TYPES = frozenset(
    f"builtins.{name}" for name in ("object", "int", "float", "complex", "bool", "str", "bytes", "list", "tuple",
                                    "dict", "set", "frozenset", "slice", "range", "NoneType")
)  # fmt: skip
# numpy functions that read or write files: never trusted by default.
NUMPY_FILE_FUNCTIONS = frozenset(
    f"numpy.{name}" for name in ("load", "save", "savez", "savez_compressed", "loadtxt", "savetxt", "genfromtxt",
                                 "fromfile", "fromregex", "memmap", "DataSource")
)  # fmt: skip


@dataclass(frozen=True)
class Packaging:
    """How a run packages its fitted model: a family declares the types loading trusts and the distributions it
    needs; any other model is scanned (see the module docstring). `code_paths` ship with the model."""

    declared_types: tuple[str, ...] | None = None
    requires: tuple[str, ...] = ()
    code_paths: tuple[str, ...] = ()
    trusted_extra: tuple[str, ...] = ()
    extra_requirements: tuple[str, ...] = ()

    @classmethod
    def of_family(cls, spec: Any) -> Packaging:
        """A family's pipeline: tabtrack's input step and preprocessing, and the family's estimator."""
        from tabtrack.models.pipeline import PREPROCESSING_TRUSTED_TYPES

        return cls(declared_types=(*PREPROCESSING_TRUSTED_TYPES, *spec.all_trusted_types), requires=spec.requires)

    def artifact(self, model: Any, example: Any) -> ModelArtifact:
        return model_artifact(
            model, example, declared_types=self.declared_types, requires=self.requires, code_paths=self.code_paths,
            trusted_extra=self.trusted_extra, extra_requirements=self.extra_requirements,
        )  # fmt: skip


def model_artifact(
    model: Any,
    example: Any,
    *,
    declared_types: Sequence[str] | None = None,
    requires: Sequence[str] = (),
    code_paths: Sequence[str] = (),
    trusted_extra: Sequence[str] = (),
    extra_requirements: Sequence[str] = (),
) -> ModelArtifact:
    """`model` (fitted) as the `model` MLflow logs. `declared_types`: the types a family declares (skips the
    scan); `requires`: its distributions. `code_paths`: the user's code it needs, shipped with it."""
    from joblib import parallel_config

    head = example.head(INPUT_EXAMPLE_ROWS) if hasattr(example, "head") else example[:INPUT_EXAMPLE_ROWS]
    # A forest (n_jobs=-1) would start a joblib thread pool to predict five rows: ~40 ms against ~13 ms.
    with parallel_config(backend="sequential"):
        output_example = model.predict(head)
    if declared_types is not None:
        trusted = list(declared_types)
        pip = pinned(tuple(dict.fromkeys((*BASE_REQUIREMENTS, *requires)))) + list(extra_requirements)
    else:
        trusted = trusted_types(model, code_paths=code_paths, extra=trusted_extra)
        pip = requirements(trusted, extra_requirements)
    return ModelArtifact(
        model=model, flavor="sklearn", input_example=head, output_example=output_example,
        input_columns=[str(c) for c in head.columns] if hasattr(head, "columns") else None,
        pip_requirements=pip, trusted_types=trusted, code_paths=code_for(trusted, code_paths),
    )  # fmt: skip


def code_for(trusted: Sequence[str], code_paths: Sequence[str]) -> list[str]:
    """What ships in the model's `code/` folder: the user's code, and tabtrack_runtime where a type comes from it."""
    runtime = [runtime_code()] if any(name.startswith(f"{RUNTIME_PACKAGE}.") for name in trusted) else []
    return [*runtime, *code_paths]


def runtime_code() -> str:
    """The folder of tabtrack_runtime, the one part of tabtrack a logged model imports."""
    import tabtrack_runtime

    return str(Path(tabtrack_runtime.__file__).parent)


def trusted_types(model: Any, *, code_paths: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """The type names skops must trust to load `model` (see the module docstring); refuses any other."""
    from tabtrack.models.loading import import_skops

    sio = import_skops()
    try:
        needed = sio.get_untrusted_types(data=sio.dumps(model))
    except Exception as exc:
        raise TabtrackError(
            f"the model cannot be saved with skops ({type(exc).__name__}: {exc}); a lambda or a locally defined "
            "function in it cannot be: use a module-level function."
        ) from exc
    roots = [Path(p).resolve() for p in code_paths]
    trusted, refused = [], []
    shipped = getattr(model, "user_classes", None)  # an adapter's classes outside skops (a torch checkpoint's)
    for name in shipped() if callable(shipped) else []:
        if not (name in extra or _defined_under(name, roots)):
            refused.append(name)
    for name in needed:
        if name in extra or _known(name) or _defined_under(name, roots):
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
            f"the model holds type(s) {', '.join(refused)} that are neither tabtrack's, scikit-learn's, numpy's nor "
            "defined under code_paths, so skops will not load them untrusted: ship the file or folder defining them "
            "with code_paths=[...] (--code PATH on the command line), or pass trusted_types=[...] naming them."
        )
    return trusted


def _known(name: str) -> bool:
    """Types loading may trust without the user naming them: see the module docstring."""
    from tabtrack.models.families import all_specs
    from tabtrack.models.pipeline import PREPROCESSING_TRUSTED_TYPES

    if name in BUILTIN_TYPES or name.startswith((f"{RUNTIME_PACKAGE}.", "tabtrack.")):
        return True
    if name in PREPROCESSING_TRUSTED_TYPES or any(name in spec.all_trusted_types for spec in all_specs()):
        return True
    if name.startswith("numpy."):
        return name not in NUMPY_FILE_FUNCTIONS and _resolves(name) is not None
    return name.startswith("sklearn.") and _public_sklearn(name)


def _resolves(name: str) -> Any:
    module_name, _, attribute = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute, None)
    except ImportError:
        return None


def _public_sklearn(name: str) -> bool:
    """A scikit-learn object its public API exports: `sklearn.compose._column_transformer.make_column_selector`
    is `sklearn.compose.make_column_selector`."""
    value = _resolves(name)
    *modules, attribute = name.split(".")
    if value is None or attribute.startswith("_"):
        return False
    public = []  # the module path up to its first private part: sklearn.compose of sklearn.compose._column_...
    for part in modules:
        if part.startswith("_"):
            break
        public.append(part)
    return any(_resolves(".".join([*public[:depth], attribute])) is value for depth in range(len(public), 0, -1))


def requirements(model_types: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """Pinned versions of what loading the model needs: the sklearn flavor's, the libraries its types come
    from (XGBoost, LightGBM, torch), and the user's extra requirements as given."""
    modules = {name.split(".", 1)[0] for name in model_types}
    if RUNTIME_PACKAGE in modules and any("torch" in name for name in model_types):
        modules.add("torch")
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


# -- the bare algorithm under its own flavor -----------------------------------------------------------------------
def native_artifact(model: Any, example: Any, *, code_paths: Sequence[str] = ()) -> ModelArtifact | None:
    """The model's algorithm under its own MLflow flavor, as `model_native`, for the algorithms that have one
    (XGBoost, LightGBM, a torch module: tabtrack's MLP or a TorchModel); None for the others. It takes the
    features the model's preprocessing gives, not raw rows."""
    import numpy as np

    from tabtrack_runtime.adapters import TorchModel

    head = example.head(INPUT_EXAMPLE_ROWS) if hasattr(example, "head") else example[:INPUT_EXAMPLE_ROWS]
    if isinstance(model, TorchModel):
        algorithm, flavor, features = model.module.cpu().eval(), "pytorch", model.features(head)
    else:
        algorithm = unwrap(model.steps[-1][1] if hasattr(model, "steps") else model)
        flavor = _native_flavor(algorithm)
        if flavor is None:
            return None
        if flavor == "pytorch":
            algorithm = algorithm.torch_module()
        features = model[:-1].transform(head) if hasattr(model, "steps") else head
        if hasattr(features, "toarray"):
            features = features.toarray()
    return ModelArtifact(
        model=algorithm, flavor=flavor, input_example=np.asarray(features, dtype=np.float32), output_example=None,
        pip_requirements=pinned(("numpy", {"pytorch": "torch"}.get(flavor, flavor))), name="model_native",
        code_paths=list(code_paths) if flavor == "pytorch" else [],
    )  # fmt: skip


def _native_flavor(algorithm: Any) -> str | None:
    module = type(algorithm).__module__
    if module.startswith(("xgboost", "lightgbm")):
        return module.partition(".")[0]
    if module == f"{RUNTIME_PACKAGE}.torch_mlp":
        return "pytorch"
    return None


def interval_artifact(main: ModelArtifact, model_uri: str, calibration: dict[str, Any]) -> ModelArtifact:
    """`model_intervals`: the logged `model` (at `model_uri`, copied in) answering with its conformal interval or
    set, for MLflow's own tools (`mlflow.pyfunc`, `mlflow models predict/serve`)."""
    from tabtrack_runtime.intervals import with_intervals

    output = with_intervals(main.model, calibration, main.input_example)
    if calibration["task"] == "classification":  # labels as text: the set's schema is an array of strings
        output["prediction_set"] = output["prediction_set"].map(lambda labels: [str(v) for v in labels])
    return ModelArtifact(
        model=str(Path(runtime_code()) / "interval_pyfunc.py"), flavor="pyfunc", input_example=main.input_example,
        output_example=output, pip_requirements=[*main.pip_requirements, *pinned(("mlflow",))],
        input_columns=main.input_columns, code_paths=list(dict.fromkeys([runtime_code(), *main.code_paths])),
        name="model_intervals", artifacts={"model": model_uri}, model_config={"calibration": calibration},
    )  # fmt: skip


def onnx_artifact(model: Any, X_test: Any) -> tuple[ModelArtifact, Any]:
    """`model_onnx`: `model` converted to ONNX (models/portable.py) and checked on the test rows (and probe rows) with
    ONNX Runtime, with that check (a Verification). A model that cannot be converted, or whose converted answers differ, is a
    TabtrackError naming why."""
    import pandas as pd

    from tabtrack.models import portable

    rows = X_test if isinstance(X_test, pd.DataFrame) else pd.DataFrame(X_test)
    converted = portable.convert(model, rows)
    checked, _ = portable.with_probe_rows(model, rows, converted.inputs)
    check = portable.verify(converted, model, checked)
    if not check.passed:
        raise TabtrackError(
            f"the ONNX model answers differently from the model ({check.summary()}), so it is not kept."
        )
    example = portable.example_rows(model, rows.head(INPUT_EXAMPLE_ROWS), converted.inputs)
    output = portable.answers(converted.session(), example, converted.inputs)
    metadata = {portable.METADATA_KEY: {"inputs": converted.inputs, **check.as_metrics()}}
    return ModelArtifact(
        model=converted.model, flavor="onnx", input_example=example, output_example=output,
        pip_requirements=pinned(("onnx", "onnxruntime")), name="model_onnx", metadata=metadata,
    ), check  # fmt: skip
