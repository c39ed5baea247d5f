"""A fitted pipeline as one ONNX graph (the `onnx` extra): skl2onnx for scikit-learn, onnxmltools for LightGBM and
XGBoost, checked against the pipeline with ONNX Runtime before anyone relies on it.

The graph takes one input per raw column, named as the column: numbers as double, text as string (a missing text
value is the empty string). That is what tabtrack's input step does in Python, so the step itself becomes the
graph's typed inputs. The rest converts from a copy of the pipeline, changed where the converters need it and
nowhere the answers could move:
- numeric gaps are filled and scaled in double precision (ONNX Runtime's Imputer takes float only); the features
  reach HistGradientBoosting, LightGBM and linear models in double, and are cast to float32 just before a random
  forest or XGBoost, as those do themselves;
- text imputers look for the empty string instead of NaN (ONNX strings have no NaN);
- one-hot encoders encode an unseen category as zeros, or as the infrequent group where a column has one, as
  scikit-learn does (skl2onnx converts neither);
- tabtrack's label wrapper (XGBoost) becomes the bare booster answering in the user's labels.
The converters skl2onnx lacks or gets wrong here are ours (models/onnx_converters.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tabtrack.errors import TabtrackError
from tabtrack.models.onnx_converters import (
    NumberImputer,
    grouped_one_hot,
    labelled_booster_class,
    register_converters,
)

NUMBER, TEXT = "number", "text"
TOLERANCE = 1e-4  # the largest difference in a probability or prediction that still counts as the same answer
METADATA_KEY = "tabtrack_onnx"  # in model_onnx's MLmodel: the inputs and the check against the pipeline


@dataclass
class Verification:
    rows: int
    same_labels: float | None  # share of rows with the same label (classifiers)
    max_difference: float  # largest |difference| in a probability (classifiers) or a prediction (regression)

    def summary(self) -> str:
        labels = "" if self.same_labels is None else f"same label on {self.same_labels:.2%} of rows, "
        return f"{labels}largest difference {self.max_difference:.2g} ({self.rows} rows)"

    @property
    def passed(self) -> bool:
        labels_ok = self.same_labels is None or self.same_labels == 1.0
        return labels_ok and self.max_difference <= TOLERANCE

    def as_metrics(self) -> dict[str, float]:
        out = {"onnx_max_difference": self.max_difference, "onnx_verified_rows": float(self.rows)}
        if self.same_labels is not None:
            out["onnx_same_labels"] = self.same_labels
        return out


@dataclass
class Portable:
    """The ONNX model of a fitted pipeline and the raw columns it takes."""

    model: Any  # onnx.ModelProto
    inputs: dict[str, str]  # column -> "number" or "text", in the model's order

    def session(self):
        return session_for(self.model.SerializeToString())


def session_for(model: bytes | str, *, threads: int = 0):
    """An ONNX Runtime session on the CPU for a serialized graph or a file; `threads` 0: ONNX Runtime's default."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # warnings about unused initializers are for converter authors
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def example_rows(pipeline: Any, rows: pd.DataFrame, inputs: dict[str, str]) -> pd.DataFrame:
    """`rows` as the graph takes them: its columns only, numbers as float64, text with "" for a gap."""
    return pd.DataFrame(feeds(_typed(pipeline, rows, inputs), inputs))


def answers(session: Any, frame: pd.DataFrame, inputs: dict[str, str]) -> pd.DataFrame:
    """The graph's outputs for rows typed by the input step, one column per output."""
    names = [o.name for o in session.get_outputs()]
    return pd.DataFrame({n: np.asarray(v).reshape(len(frame), -1)[:, 0] for n, v in
                         zip(names, session.run(None, feeds(frame, inputs)), strict=True)})  # fmt: skip


def feeds(frame: pd.DataFrame, inputs: dict[str, str]) -> dict[str, np.ndarray]:
    """The graph's inputs from rows already typed by the input step (numbers float64, text str or NaN)."""
    out = {}
    for column, kind in inputs.items():
        values = frame[column]
        if kind == NUMBER:
            out[column] = values.to_numpy(dtype="float64")
        else:
            out[column] = values.astype(object).where(values.notna(), "").astype(str).to_numpy()
    return out


def convert(pipeline: Any, sample: pd.DataFrame) -> Portable:
    """The ONNX graph of `pipeline` (fitted); `sample`: rows it takes, for the input kinds of a user's pipeline.
    A step no converter handles is a TabtrackError naming it."""
    from tabtrack.extras import require

    for module in ("skl2onnx", "onnxmltools", "onnxruntime"):
        require(module, purpose="an ONNX model")
    import skl2onnx

    register_converters()
    inputs, model = _portable_copy(pipeline, sample)
    _check_convertible(model)
    from skl2onnx.common.data_types import DoubleTensorType, StringTensorType

    types = [
        (c, DoubleTensorType([None, 1]) if k == NUMBER else StringTensorType([None, 1])) for c, k in inputs.items()
    ]
    estimator = _last(model)
    options: dict[int, dict] = {id(estimator): {"zipmap": False}} if hasattr(estimator, "predict_proba") else {}
    # (x - mean) / scale in double, as scikit-learn computes it (the default multiplies by 1 / scale in float)
    options.update(
        {id(scaler): {"div": "div"} for scaler in _parts(model) if type(scaler).__name__ == "StandardScaler"}
    )
    try:
        graph = skl2onnx.convert_sklearn(
            model, initial_types=types, options=options, target_opset={"": 18, "ai.onnx.ml": 3}
        )
    except Exception as exc:  # a converter's own refusal: its first line names what it could not do
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TabtrackError(f"cannot convert the model to ONNX: {reason[:300]}") from exc
    _declared_as_computed(graph)
    _one_column_per_input(graph, inputs)
    classes = getattr(estimator, "classes_", None)
    if classes is not None:
        _one_output_per_class(graph, [c.item() if hasattr(c, "item") else c for c in classes])
    return Portable(model=graph, inputs=inputs)


def probability_output(label: Any) -> str:
    return f"probability_{label}"


def _declared_as_computed(graph: Any) -> None:
    """Each output's element type as the graph computes it. skl2onnx declares a linear model's outputs float when
    the column transformer's first block is (a one-hot encoding placed before the numbers), while the model
    computes in double: ONNX Runtime then refuses the graph."""
    import onnx

    probe = copy.deepcopy(graph)
    for output in probe.graph.output:
        output.type.tensor_type.elem_type = onnx.TensorProto.UNDEFINED
    try:
        inferred = {o.name: o.type.tensor_type.elem_type for o in onnx.shape_inference.infer_shapes(probe).graph.output}
    except Exception:  # (inference is a check here, not a requirement: keep what skl2onnx declared)
        return
    for output in graph.graph.output:
        if inferred.get(output.name):
            output.type.tensor_type.elem_type = inferred[output.name]


def _one_column_per_input(graph: Any, inputs: dict[str, str]) -> None:
    """Inputs of shape [N] (a table's column, what MLflow's onnx flavor feeds from a DataFrame), reshaped to the
    [N, 1] the converters take. Reshape and Gather (below): ops whose form is the same at every opset a converter
    may have chosen."""
    from onnx import TensorProto, helper

    renamed = {name: f"{name}__column" for name in inputs}
    for node in graph.graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    column = "tabtrack_column_shape"
    graph.graph.initializer.append(helper.make_tensor(column, TensorProto.INT64, [2], [-1, 1]))
    prelude = [helper.make_node("Reshape", [name, column], [renamed[name]], name=f"column_{i}")
               for i, name in enumerate(inputs)]  # fmt: skip
    for i, node in enumerate(prelude):
        graph.graph.node.insert(i, node)
    for value in graph.graph.input:
        shape = value.type.tensor_type.shape
        del shape.dim[1:]


def _one_output_per_class(graph: Any, classes: list) -> None:
    """`probabilities` [N, K] split into one [N, 1] output per class, `probability_<label>`: what MLflow's onnx
    flavor can return as DataFrame columns; `label` stays."""
    from onnx import TensorProto, helper

    outputs = [o.name for o in graph.graph.output]
    if "probabilities" not in outputs:
        return
    names = [probability_output(c) for c in classes]
    for i, name in enumerate(names):
        index = f"tabtrack_class_{i}"
        graph.graph.initializer.append(helper.make_tensor(index, TensorProto.INT64, [1], [i]))
        graph.graph.node.append(helper.make_node("Gather", ["probabilities", index], [name], axis=1, name=f"class_{i}"))
    (probabilities,) = [o for o in graph.graph.output if o.name == "probabilities"]
    elem_type = probabilities.type.tensor_type.elem_type  # float, or double from a linear model
    keep = [o for o in graph.graph.output if o.name != "probabilities"]
    del graph.graph.output[:]
    graph.graph.output.extend(keep)
    graph.graph.output.extend(helper.make_tensor_value_info(n, elem_type, [None, 1]) for n in names)


def verify(portable: Portable, pipeline: Any, rows: pd.DataFrame) -> Verification:
    """Score `rows` (raw) with both and compare: same labels, probabilities or predictions within TOLERANCE."""
    typed = _typed(pipeline, rows, portable.inputs)
    try:
        answers = portable.session().run(None, feeds(typed, portable.inputs))
    except Exception as exc:  # ONNX Runtime refusing a graph a converter wrote: not this model's ONNX, said in a line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TabtrackError(f"ONNX Runtime cannot run the converted model: {reason[:300]}") from exc
    if hasattr(pipeline, "predict_proba"):
        expected_proba = np.asarray(pipeline.predict_proba(rows), dtype="float64")
        expected = np.asarray(pipeline.classes_)[np.argmax(expected_proba, axis=1)]
        labels, proba = answers[0].ravel(), np.hstack(answers[1:]).astype("float64")
        same = float(np.mean(_same_labels(labels, expected))) if len(rows) else 1.0
        return Verification(len(rows), same, float(np.max(np.abs(proba - expected_proba), initial=0.0)))
    expected = np.asarray(pipeline.predict(rows), dtype="float64").ravel()
    got = np.asarray(answers[0], dtype="float64").ravel()
    # The graph adds trees in float32: a difference counts relative to the prediction's size beyond 1.
    relative = np.abs(got - expected) / np.maximum(1.0, np.abs(expected))
    return Verification(len(rows), None, float(np.max(relative, initial=0.0)))


def with_probe_rows(pipeline: Any, rows: pd.DataFrame, inputs: dict[str, str]) -> tuple[pd.DataFrame, int]:
    """`rows` and eight probe rows, where the pipeline itself answers them (a user's pipeline may refuse gaps): one
    all missing, then numbers 1 to 1,000 either side of zero and text no training row held, some missing. Unseen
    categories and gaps are where converters are most likely to part from scikit-learn. Also how many were added."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(8):
        row: dict[str, Any] = {}
        for column, kind in inputs.items():
            if i == 0:
                row[column] = None
            elif kind == NUMBER:
                row[column] = float(rng.normal(scale=10.0 ** (i % 4)))
            else:
                row[column] = None if i % 3 == 0 else f"probe{i}"
        records.append(row)
    probes = pd.DataFrame.from_records(records, columns=list(inputs))
    try:
        pipeline.predict(probes)
    except Exception:  # the pipeline's own refusal: nothing to compare on those rows
        return rows, 0
    return pd.concat([rows[list(inputs)], probes], ignore_index=True), len(probes)


def _same_labels(labels: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """ONNX writes bool and number labels as int64."""
    if expected.dtype.kind in "biuf":
        return labels.astype("float64") == expected.astype("float64")
    return labels.astype(str) == expected.astype(str)


# -- the copy the converters see -------------------------------------------------------------------------------
def _portable_copy(pipeline: Any, sample: pd.DataFrame) -> tuple[dict[str, str], Any]:
    from sklearn.pipeline import Pipeline

    from tabtrack_runtime.raw_input import RawInput

    model = copy.deepcopy(pipeline)
    steps = list(getattr(model, "steps", []))
    if steps and isinstance(steps[0][1], RawInput):
        raw = steps.pop(0)[1]
        numeric = set(raw.numeric)
        inputs = {c: NUMBER if c in numeric else TEXT for c in raw.columns}
    else:
        inputs = {c: NUMBER if _is_number(sample[c]) else TEXT for c in sample.columns}
    if not steps:
        steps = [("model", model)]
    steps = [(name, _portable(step)) for name, step in steps]
    from skl2onnx.sklapi import CastTransformer

    if not _compares_in_double(steps[-1][1]):
        steps.insert(len(steps) - 1, ("float32", CastTransformer(dtype=np.float32)))
    portable = Pipeline(steps)
    return inputs, portable


def _portable(step: Any) -> Any:
    """`step` as the converters need it (see the module docstring), recursing through pipelines and column
    transformers."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from tabtrack_runtime.label_encoded import LabelEncodedClassifier

    if isinstance(step, Pipeline):
        step.steps = [(name, _portable(inner)) for name, inner in step.steps]
    elif isinstance(step, ColumnTransformer):
        step.transformers_ = [(name, _portable(inner), columns) for name, inner, columns in step.transformers_]
    elif isinstance(step, SimpleImputer):
        if step.statistics_.dtype == object:
            step.missing_values = ""
        else:
            return NumberImputer(np.asarray(step.statistics_, dtype="float64"))
    elif isinstance(step, OneHotEncoder) and step.handle_unknown != "error" and step.drop is None:
        # Missing text reaches the graph as "": where the encoder learnt "missing" as a category, so does the copy.
        step.categories_ = [np.array(["" if pd.isna(c) else c for c in cats], dtype=object) if cats.dtype == object
                            else cats for cats in step.categories_]  # fmt: skip
        if any(c is not None for c in _infrequent(step)):  # (text categories: the grouper maps strings)
            return grouped_one_hot(step) if all(isinstance(c, str) for cs in step.categories_ for c in cs) else step
        # With no infrequent category, an unseen one is all zeros under every handle_unknown but "error"; skl2onnx
        # writes that (zeros=1) for "ignore" only, and ONNX Runtime fails the whole request on the others.
        step.handle_unknown = "ignore"
    elif isinstance(step, LabelEncodedClassifier):
        booster = step.estimator_
        booster.__class__ = labelled_booster_class()
        booster.classes_ = np.asarray(step.classes_)
        return booster
    return step


def _infrequent(encoder: Any) -> list:
    """Per column, the categories a one-hot encoder groups as infrequent (None where there are none)."""
    return list(getattr(encoder, "infrequent_categories_", None) or []) if encoder._infrequent_enabled else []


def _compares_in_double(estimator: Any) -> bool:
    """HistGradientBoosting and LightGBM compare float64 features with float64 thresholds (onnx_converters.py), and
    linear models add large coefficients: their graphs take doubles and keep them. Other trees cast to float32
    first, as scikit-learn's and XGBoost's do."""
    name = type(estimator).__name__
    return name.startswith(("HistGradientBoosting", "LGBM")) or type(estimator).__module__.startswith(
        "sklearn.linear_model"
    )


def _parts(model: Any) -> list:
    """Every estimator inside `model`, through pipelines and column transformers."""
    inner = [step for _, step in getattr(model, "steps", [])] or [t for _, t, _ in getattr(model, "transformers_", [])]
    return [model] if not inner else [part for step in inner for part in _parts(step)]


def _last(model: Any) -> Any:
    return model.steps[-1][1] if hasattr(model, "steps") else model


def _is_number(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)


def _typed(pipeline: Any, rows: pd.DataFrame, inputs: dict[str, str]) -> pd.DataFrame:
    from tabtrack_runtime.raw_input import RawInput, as_number_column, as_text_column

    first = pipeline.steps[0][1] if hasattr(pipeline, "steps") else None
    if isinstance(first, RawInput):
        return first.transform(rows)
    return pd.DataFrame(
        {c: as_number_column(rows[c], c) if k == NUMBER else as_text_column(rows[c]) for c, k in inputs.items()}
    )


def _check_convertible(model: Any, path: tuple[str, ...] = ()) -> None:
    """Name the first step no registered converter handles, before skl2onnx fails somewhere inside."""
    from skl2onnx import get_model_alias
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if isinstance(model, Pipeline | ColumnTransformer):
        inner = model.steps if isinstance(model, Pipeline) else [(n, t) for n, t, _ in model.transformers_]
        for name, step in inner:
            if not isinstance(step, str):  # "drop", "passthrough"
                _check_convertible(step, (*path, name))
        return
    try:
        get_model_alias(type(model))
    except RuntimeError:
        where = " > ".join(path) or "model"
        raise TabtrackError(
            f"cannot convert step {where!r} ({type(model).__name__}) to ONNX: neither skl2onnx nor onnxmltools has "
            "a converter for it."
        ) from None
