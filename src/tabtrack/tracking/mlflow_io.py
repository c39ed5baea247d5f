"""What the MLflow adapter, offline bundles and `sync` share: MLflow's batch limits, how a frame becomes an
MLflow dataset entity, and how a model is saved or logged under its flavor.

One module that all three import, so none of them imports another for these."""

from __future__ import annotations

import importlib
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from tabtrack import forked
from tabtrack.tracking.base import ModelArtifact

# MLflow's per-request limits for log_batch.
MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100
MAX_PARAM_LENGTH = 6000
PARENT_TAG = "mlflow.parentRunId"
# The dataset schema MLflow records is inferred from this many rows: the column types are settled by them.
SCHEMA_SAMPLE_ROWS = 1000
FLAVORS = ("sklearn", "xgboost", "lightgbm", "pytorch", "pyfunc", "onnx")
# Models whose every estimator comes from these modules are saved in a child beside the evaluation.
SAVED_AHEAD_MODULES = ("sklearn.", "tabtrack_runtime.raw_input")
# ... and whose parameters hold no code but these modules' (numpy's functions, Python's own types).
SAVED_AHEAD_CODE = ("sklearn", "numpy", "builtins")

log = logging.getLogger(__name__)


def dataset_entity(frame: Any, *, source: str, name: str, target: str | None, digest: str | None = None):
    """The MLflow dataset entity (digest, schema, profile) for a frame.

    The digest is tabtrack's (one vectorised hashing pass): MLflow's default maps type() over every cell
    of the whole frame (4.9 s for 1M x 31). The schema comes from the first rows; the profile counts all.
    With `digest` (a file's, from its sha256) the frame is the file's first rows, read for the schema."""
    import mlflow
    from mlflow.entities import Dataset

    from tabtrack.data.fingerprint import frame_digest

    with warnings.catch_warnings():
        # MLflow registers two identical local-file source types and warns that it picked one.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")  # schema: information only
        sample = mlflow.data.from_pandas(
            frame.head(SCHEMA_SAMPLE_ROWS),
            source=source,
            name=name,
            targets=target,
            digest=digest or frame_digest(frame),
        ).to_dict()
    profile = {"num_rows": len(frame), "num_elements": int(frame.size)} if digest is None else {"digest": "sha256"}
    return Dataset(
        name=sample["name"],
        digest=sample["digest"],
        source_type=sample["source_type"],
        source=sample["source"],
        schema=sample["schema"],
        profile=json.dumps(profile),
    )


def model_kwargs(artifact: ModelArtifact) -> dict[str, Any]:
    """What log_model and save_model both take for this artifact, by flavor."""
    # Known requirements: skips MLflow's requirement inference (~6.7 s per call).
    kwargs: dict[str, Any] = {"pip_requirements": artifact.pip_requirements}
    if artifact.input_example is not None:
        kwargs["signature"] = signature(artifact)
        kwargs["input_example"] = artifact.input_example
    if artifact.code_paths:
        kwargs["code_paths"] = artifact.code_paths
    if artifact.flavor == "sklearn":
        kwargs["skops_trusted_types"] = artifact.trusted_types or None
    if artifact.flavor == "onnx":  # MLflow's default names CUDA first, and warns where it is missing
        kwargs["onnx_execution_providers"] = ["CPUExecutionProvider"]
    if artifact.metadata:
        kwargs["metadata"] = artifact.metadata
    return kwargs


def _model_arguments(artifact: ModelArtifact) -> tuple[tuple, dict[str, Any]]:
    """The model itself, as the flavor takes it: first and positional, or pyfunc's python_model and artifacts."""
    if artifact.flavor == "pyfunc":  # a model from code: python_model is the file's path
        return (), {
            "python_model": artifact.model,
            "artifacts": artifact.artifacts,
            "model_config": artifact.model_config,
        }
    return (artifact.model,), {}


def signature(artifact: ModelArtifact):
    """The model's signature. A frame's columns are declared AnyType: MLflow's schema enforcement has no
    column type that takes both int64 and float64 with NaN (the same integer column of a CSV read whole
    and read in batches), nor both text and pandas `category`; so the names are checked (missing ones
    refused, order and extra columns handled) and the values go to the model as they are, whose first
    step settles their types (tabtrack.models.raw_input). Outputs are inferred from the output example."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    with warnings.catch_warnings():
        # Its advice (declare integer columns as doubles) is what the AnyType inputs below already settle.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        inferred = infer_signature(artifact.input_example, artifact.output_example)
    if artifact.input_columns is None:
        return inferred
    inputs = Schema([ColSpec(AnyType(), name) for name in artifact.input_columns])
    return ModelSignature(inputs=inputs, outputs=inferred.outputs)


def log_model(artifact: ModelArtifact, saved: Path | None = None):
    """`mlflow.<flavor>.log_model` into the active run; returns MLflow's ModelInfo. With `saved` (the folder
    `save_and_check(artifact, saved)` wrote, see SavedAhead), MLflow logs that folder instead of saving again."""
    if saved is None and artifact.flavor in ("pyfunc", "onnx"):
        # Saved here and logged as saved: Model.log's serving check would load the scikit-learn model inside, whose
        # loader imports skops (seconds) that the main model's check already paid in its own process; for ONNX it
        # fails on pandas 3's text columns, which MLflow's onnx flavor hands to ONNX Runtime as Arrow arrays.
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            save_model(artifact, Path(tmp) / artifact.name)
            return log_model(artifact, Path(tmp) / artifact.name)
    if saved is None:
        args, model = _model_arguments(artifact)
        return flavor_module(artifact.flavor).log_model(*args, name=artifact.name, **model, **model_kwargs(artifact))
    return log_saved(artifact.flavor, artifact.name, saved)


def log_saved(flavor: str, name: str, folder: Path):
    """Log a model folder mlflow.<flavor>.save_model wrote (it is moved into place) into the active run."""
    from mlflow.models import Model

    # Model.log checks that the input example serves by loading the model here: the very cost the folder
    # spared this process (for scikit-learn, skops' import). The check ran on the folder where it was saved.
    # `validate_serving_input` is a keyword Model.log reads from its flavor kwargs without documenting it;
    # tests/test_tracking_internals.py fails if it stops honouring it.
    return Model.log(None, flavor=_SavedFlavor(flavor, folder), name=name, validate_serving_input=False)


def save_model(artifact: ModelArtifact, path: str | Path) -> None:
    """The same model log_model would store, written to a local folder (offline bundles)."""
    args, model = _model_arguments(artifact)
    flavor_module(artifact.flavor).save_model(*args, path=str(path), **model, **model_kwargs(artifact))


class SavedAhead:
    """`save_and_check(artifact)` in a forked child, started as soon as the model is fitted, so the save (for
    scikit-learn models mostly `import skops.io`, which imports every scikit-learn module) and MLflow's serving
    check run on another core while this process evaluates the model. `folder()` waits for it, up to the fork
    timeout: None if it failed, crashed or timed out, and log_model then saves in this process (where the same
    failure raises with its traceback)."""

    def __init__(self, artifact: ModelArtifact) -> None:
        self.artifact = artifact
        self._tmp = tempfile.TemporaryDirectory(prefix="tabtrack-model-")
        self._path = Path(self._tmp.name) / "model"
        self._child = forked.Forked(_save_in_child, artifact, self._path)

    @staticmethod
    def possible(artifact: ModelArtifact) -> bool:
        """Where fork is safe (tabtrack/forked.py), for a scikit-learn model that runs known code only."""
        return artifact.flavor == "sklearn" and forked.fork_safe() and runs_known_code_only(artifact.model)

    def folder(self) -> Path | None:
        try:
            self._child.result()
        except forked.ChildTimedOut as exc:
            log.warning("saving the model in a child process: %s; saving it in this process", exc)
            return None
        except forked.ChildFailed as exc:
            log.debug("saving the model ahead failed (%s); saving it in this process", exc)
            return None
        return self._path

    def discard(self) -> None:
        self._child.cancel()
        self._tmp.cleanup()


def runs_known_code_only(model: Any) -> bool:
    """A model made of scikit-learn's own estimators and tabtrack's input step, whose parameters hold no code of
    anyone else's (a FunctionTransformer with a user's function, a callable column selector). scikit-learn's
    OpenMP code obeys a child's one-thread limit; XGBoost, LightGBM, torch (the MLP) and unknown code may start
    thread teams of their own, which hang in a child forked after they ran, or take locks another thread held."""
    return hasattr(model, "get_params") and all(_known(v) for v in (model, *model.get_params(deep=True).values()))


def _known(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return all(_known(item) for item in value)
    if hasattr(value, "get_params"):
        return type(value).__module__.startswith(SAVED_AHEAD_MODULES)
    if callable(value):
        module = getattr(value, "__module__", None) or type(value).__module__
        return module.partition(".")[0] in SAVED_AHEAD_CODE
    return True


def _save_in_child(artifact: ModelArtifact, path: Path) -> None:
    """The saver child's work, arranged not to get in the way of the evaluation beside it."""
    from joblib import parallel_config
    from threadpoolctl import threadpool_limits

    os.nice(10)  # the evaluation comes first: its OpenMP threads slow down badly when crowded
    # OpenMP's threads did not survive the fork; joblib's default backend refuses to start processes from a
    # child, and says so.
    with threadpool_limits(1), parallel_config(backend="threading", n_jobs=1):
        save_and_check(artifact, path)


def save_and_check(artifact: ModelArtifact, path: Path) -> None:
    """What log_model does before it uploads: save, then check that the saved input example serves."""
    from mlflow.models import Model, validate_serving_input

    save_model(artifact, path)
    serving_input = Model.load(str(path)).get_serving_input(str(path))
    if serving_input:
        with warnings.catch_warnings():
            # Deprecated as a public helper (MLflow 3.13) in favour of mlflow.models.predict in a fresh environment;
            # Model.log still runs the same check in-process, which is what is mirrored here.
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*validate_serving_input")
            validate_serving_input(str(path), serving_input)


class _SavedFlavor:
    """The `flavor` mlflow.models.Model.log takes (an object with `save_model(path, mlflow_model)`) for a
    folder already saved by mlflow.<flavor>.save_model: it moves the folder into place and gives the model
    MLflow is logging (its id, run and location) what the save recorded."""

    def __init__(self, flavor: str, folder: Path) -> None:
        self.__name__ = f"mlflow.{flavor}"  # what MLflow records as the logged model's flavor
        self.folder = folder

    def save_model(self, path: str, mlflow_model, **_: Any) -> None:
        import shutil

        from mlflow.models import Model

        shutil.move(str(self.folder), path)
        saved = Model.load(path)
        for field in ("flavors", "signature", "saved_input_example_info", "metadata", "model_size_bytes"):
            setattr(mlflow_model, field, getattr(saved, field))
        mlflow_model.save(str(Path(path) / "MLmodel"))


def flavor_module(name: str):
    """The mlflow.<flavor> module for the flavors tabtrack logs."""
    if name not in FLAVORS:
        raise ValueError(f"no MLflow flavor {name!r}")
    if name == "sklearn":
        from tabtrack.models.loading import import_skops

        import_skops()  # before MLflow imports it: without torch
    return importlib.import_module(f"mlflow.{name}")
