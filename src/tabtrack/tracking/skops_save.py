"""Saving a scikit-learn model in MLflow's skops format at ~60% of the cost, for the agent's workers.

`mlflow.sklearn` saves with `skops.io.dump` and then loads the file back to check that every type in it
is trusted. For a 100-tree forest (an 18 MB pickle) that is 0.3 of log_model's 0.45 CPU-s, on a tracked
run's critical path: skops writes its 2 MB schema indented, which forces Python's pure-Python JSON
encoder (0.06 s of its 0.18), and the check builds the whole model again (0.13 s; asking skops for the
types takes 0.06). Here the schema is written compact
(same JSON, so the same file to every reader) and the check asks skops which types the file holds
without building them (`get_untrusted_types`), rejecting exactly what the load would reject.

`use_compact_skops_save` puts this in place of `mlflow.sklearn._save_model`, a private function, and
only in the processes the tracking agent forks, which run nothing but tabtrack's own logging; it leaves
MLflow as it is where the function or skops' internals are not the ones this was written against.
"""

from __future__ import annotations

import inspect
import io
import json
import logging
import zipfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_EXPECTED_PARAMETERS = ["sk_model", "output_path", "serialization_format", "skops_trusted_types"]


def use_compact_skops_save() -> bool:
    """Replace MLflow's sklearn model writer with `save_model` below; False where that is not safe."""
    try:
        import mlflow.sklearn
    except ImportError:
        return False
    original = getattr(mlflow.sklearn, "_save_model", None)
    if original is None or list(inspect.signature(original).parameters) != _EXPECTED_PARAMETERS:
        log.debug("mlflow.sklearn._save_model is not the one tabtrack knows; keeping it")
        return False
    if not _writes_what_skops_writes():  # also False where skops lacks the internals dump_compact uses
        log.debug("skops' internals are not the ones tabtrack knows; keeping MLflow's model writer")
        return False

    def save_model(sk_model, output_path, serialization_format, skops_trusted_types):
        if serialization_format != mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS:
            return original(sk_model, output_path, serialization_format, skops_trusted_types)
        return save_skops(sk_model, output_path, skops_trusted_types)

    mlflow.sklearn._save_model = save_model
    return True


def save_skops(model: Any, output_path: str | Path, trusted_types: list[str] | None) -> None:
    """Write `model` as a skops file, raising MLflow's errors where `mlflow.sklearn` raises them."""
    import skops.io
    from mlflow.exceptions import MlflowException

    try:
        data = dump_compact(model)
    except Exception as exc:
        # MLflow's message, as mlflow.sklearn words it for a model skops cannot serialise.
        raise MlflowException(
            "The sklearn model could not be serialized in the skops serialization format. "
            "skops does not support custom functions or classes that are not defined at the "
            "top level. To work around this limitation, you can set the serialization_format "
            "'cloudpickle', while exercising caution due to the possible arbitrary "
            "code during model deserialization using CloudPickle."
        ) from exc
    untrusted = sorted(set(skops.io.get_untrusted_types(data=data)) - set(trusted_types or ()))
    if untrusted:
        raise MlflowException(
            "The saved sklearn model references untrusted types. "
            "If you are sure loading these types is safe, "
            "set the 'skops_trusted_types' parameter when calling 'log_model' or 'save_model' "
            f"to the list of trusted types. Root error: Untrusted types found in the file: {untrusted}."
        )
    try:
        Path(output_path).write_bytes(data)
    except BaseException:
        Path(output_path).unlink(missing_ok=True)
        raise


def dump_compact(model: Any) -> bytes:
    """`skops.io.dumps(model)` with the schema written without indentation (C encoder)."""
    import skops
    from skops.io._utils import SaveContext, get_state

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        context = SaveContext(zip_file=archive)
        state = get_state(model, context)
        context.clear_memo()
        state["protocol"] = context.protocol
        state["_skops_version"] = skops.__version__
        archive.writestr("schema.json", json.dumps(state))
    return buffer.getvalue()


def _writes_what_skops_writes() -> bool:
    """The same schema and arrays as `skops.io.dumps`, on a small fitted pipeline (object ids aside:
    skops names nodes and array files by `id()`, which differs between any two dumps)."""
    import numpy as np
    import skops.io
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    X = np.arange(20.0).reshape(10, 2)
    model = make_pipeline(StandardScaler(), DecisionTreeClassifier(random_state=0)).fit(X, np.arange(10) % 2)
    try:
        return _canonical(dump_compact(model)) == _canonical(skops.io.dumps(model))
    except Exception:
        return False


def _canonical(data: bytes) -> tuple[Any, list[bytes]]:
    """A skops file's schema with ids numbered in order of appearance, and its arrays in that order."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    ids: dict[int, int] = {}
    arrays: list[bytes] = []

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            if key == "__id__":
                out[key] = ids.setdefault(value, len(ids))
            elif key == "file":
                arrays.append(archive.read(value))
                out[key] = len(arrays)
            else:
                out[key] = walk(value)
        return out

    return walk(json.loads(archive.read("schema.json"))), arrays
