"""The converters models/portable.py adds to skl2onnx, all through its public `update_registered_converter`:
- LightGBM and XGBoost: onnxmltools' converters (skl2onnx's documented way to use them inside a pipeline); XGBoost
  answering in the user's labels;
- HistGradientBoosting and LightGBM with thresholds in double: in float32 they miss test values sitting exactly on
  a threshold (on the HMDA table LightGBM's probabilities moved by up to 0.0018); and skl2onnx 1.20's own
  HistGradientBoosting converter emits a Python bool among integer node attributes, which protobuf rejects (ours
  wraps skl2onnx's, rather than waiting for the fix upstream);
- numeric gap filling in double (ONNX Runtime's Imputer takes float only);
- a text column's infrequent categories (OneHotEncoder's max_categories, which skl2onnx does not convert): grouped
  first by a string-to-string LabelEncoder, then one-hot encoded with the group as one more category.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class NumberImputer(TransformerMixin, BaseEstimator):
    """A fitted numeric SimpleImputer's fill values, converted as Where(IsNaN) in the input's precision."""

    def __init__(self, fill=None):
        self.fill = fill

    def transform(self, X):
        return np.where(np.isnan(X), self.fill, X)


INFREQUENT = "infrequent_sklearn"  # scikit-learn's name for the group of a column's infrequent categories
UNSEEN = "\x00unseen"  # a category no encoder knows: all zeros


class InfrequentGrouper(TransformerMixin, BaseEstimator):
    """Text columns mapped value by value: `maps[j]` a column's known categories to themselves or to INFREQUENT,
    anything else to `unseen[j]`."""

    def __init__(self, maps=None, unseen=None):
        self.maps, self.unseen = maps, unseen

    def transform(self, X):
        X = np.asarray(X, dtype=object)
        return np.column_stack(
            [[m.get(v, u) for v in X[:, j]] for j, (m, u) in enumerate(zip(self.maps, self.unseen, strict=True))]
        )


def grouped_one_hot(encoder: Any) -> Any:
    """A fitted OneHotEncoder with infrequent categories as a Pipeline skl2onnx converts, answering the same: the
    grouper, then an encoder of each column's frequent categories and (where it has any) the infrequent group, in
    scikit-learn's output order. An unseen category joins the group under handle_unknown="infrequent_if_exist"
    (and "warn"), and is all zeros under "ignore" or in a column without one."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    maps, unseen, categories = [], [], []
    for j, cats in enumerate(encoder.categories_):
        infrequent = set(encoder.infrequent_categories_[j] if encoder.infrequent_categories_[j] is not None else [])
        maps.append({str(c): INFREQUENT if c in infrequent else str(c) for c in cats})
        grouped = bool(infrequent) and encoder.handle_unknown != "ignore"
        unseen.append(INFREQUENT if grouped else UNSEEN)
        frequent = [str(c) for c in cats if c not in infrequent]
        categories.append(np.asarray(frequent + ([INFREQUENT] if infrequent else []), dtype=object))
    longest = max(len(c) for c in categories)
    sample = np.column_stack([[c[i % len(c)] for i in range(longest)] for c in categories])
    plain = OneHotEncoder(categories=categories, handle_unknown="ignore", sparse_output=False, dtype=encoder.dtype)
    return Pipeline([("group", InfrequentGrouper(maps, unseen)), ("onehot", plain.fit(sample))])


_LABELLED: list = []


def labelled_booster_class() -> type:
    """XGBClassifier whose `classes_` are the user's labels (XGBoost's own are always 0..K-1), so onnxmltools
    writes them into the graph."""
    if not _LABELLED:
        from xgboost import XGBClassifier

        _LABELLED.append(type("LabelledXGBClassifier", (XGBClassifier,), {"classes_": None}))
    return _LABELLED[0]


_REGISTERED = False


def register_converters() -> None:
    """Once per process (registering replaces skl2onnx's entry for the same class)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    try:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        from xgboost import XGBClassifier, XGBRegressor

        update_registered_converter(XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes,
                                    convert_xgboost, options=options)  # fmt: skip
        update_registered_converter(labelled_booster_class(), "TabtrackLabelledXGBClassifier",
                                    calculate_linear_classifier_output_shapes, convert_xgboost, options=options)  # fmt: skip
        update_registered_converter(XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes,
                                    convert_xgboost)  # fmt: skip
    except ImportError:
        pass
    _register_trees_in_double(update_registered_converter)
    _register_number_imputer(update_registered_converter)
    _register_infrequent_grouper(update_registered_converter)
    _REGISTERED = True


DOUBLE_TREE_ATTRIBUTES = ("nodes_values", "base_values", "class_weights", "target_weights", "nodes_hitrates")


class _TreesInDouble:
    """A converter's container that adds its tree ensembles as ai.onnx.ml 3 nodes with double thresholds and
    weights (as tensors: attributes hold float32 only), and Python bools in node attributes as the integers ONNX
    wants."""

    def __init__(self, container: Any):
        self._container = container

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def add_node(self, op_type, inputs, outputs, *args, **attrs):
        attrs = {k: [int(v) if isinstance(v, bool | np.bool_) else v for v in value] if isinstance(value, list) else value
                 for k, value in attrs.items()}  # fmt: skip
        if op_type.startswith("TreeEnsemble"):
            from onnx import numpy_helper

            attrs["op_version"] = 3
            for name in DOUBLE_TREE_ATTRIBUTES:
                if attrs.get(name) is not None:
                    values = np.asarray(attrs.pop(name), dtype=np.float64)
                    attrs[f"{name}_as_tensor"] = numpy_helper.from_array(values, name=f"{name}_as_tensor")
        return self._container.add_node(op_type, inputs, outputs, *args, **attrs)


def _float_output(shape_calculator):
    """ONNX Runtime's tree ensembles answer in float32, whatever their input: the declared outputs say so."""

    def shape(operator):
        from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

        shape_calculator(operator)
        for output in operator.outputs:  # a classifier's label keeps its type, its probabilities are float
            if isinstance(output.type, DoubleTensorType):
                output.type = FloatTensorType(output.type.shape)

    return shape


def _in_double(convert, **keywords):
    def converter(scope, operator, container):
        convert(scope, operator, _TreesInDouble(container), **keywords)

    return converter


def _register_trees_in_double(register) -> None:
    """HistGradientBoosting and LightGBM compare float64 features with float64 thresholds; a test value can sit
    exactly on one (HistGradientBoosting's bin edges are data values), so their graphs keep both in double."""
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from skl2onnx.operator_converters.random_forest import (
        convert_sklearn_random_forest_classifier,
        convert_sklearn_random_forest_regressor_converter,
    )
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    options = {"zipmap": [True, False, "columns"], "raw_scores": [True, False], "output_class_labels": [False, True],
               "nocl": [True, False]}  # fmt: skip
    # op_version=3: skl2onnx keeps the thresholds' float64 values for the container to write
    register(HistGradientBoostingClassifier, "SklearnHistGradientBoostingClassifier",
             _float_output(calculate_linear_classifier_output_shapes), _in_double(convert_sklearn_random_forest_classifier, op_version=3),
             options=options)  # fmt: skip
    register(HistGradientBoostingRegressor, "SklearnHistGradientBoostingRegressor",
             _float_output(calculate_linear_regressor_output_shapes),
             _in_double(convert_sklearn_random_forest_regressor_converter, op_version=3))  # fmt: skip
    try:
        from lightgbm import LGBMClassifier, LGBMRegressor
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    except ImportError:
        return
    register(LGBMClassifier, "LightGbmLGBMClassifier", _float_output(calculate_linear_classifier_output_shapes),
             _in_double(convert_lightgbm), options={"nocl": [True, False], "zipmap": [True, False, "columns"]})  # fmt: skip
    register(LGBMRegressor, "LightGbmLGBMRegressor", _float_output(calculate_linear_regressor_output_shapes),
             _in_double(convert_lightgbm))  # fmt: skip


def _register_number_imputer(register) -> None:
    from skl2onnx.common.data_types import guess_numpy_type
    from skl2onnx.common.utils import check_input_and_output_numbers
    from skl2onnx.proto import onnx_proto

    def shape(operator):
        check_input_and_output_numbers(operator, output_count_range=1)
        width = sum(i.type.shape[1] for i in operator.inputs)
        operator.outputs[0].type = operator.inputs[0].type.__class__([None, width])

    def converter(scope, operator, container):
        from skl2onnx.common._apply_operation import apply_concat

        dtype = guess_numpy_type(operator.inputs[0].type)
        names = [i.full_name for i in operator.inputs]
        joined = names[0]
        if len(names) > 1:
            joined = scope.get_unique_variable_name("numbers")
            apply_concat(scope, names, joined, container, axis=1)
        fill = scope.get_unique_variable_name("fill")
        container.add_initializer(fill, onnx_proto.TensorProto.DOUBLE if dtype == np.float64 else onnx_proto.TensorProto.FLOAT,
                                  [1, operator.raw_operator.fill.size], operator.raw_operator.fill.astype(dtype).tolist())  # fmt: skip
        gap = scope.get_unique_variable_name("gap")
        container.add_node("IsNaN", [joined], [gap], name=scope.get_unique_operator_name("IsNaN"))
        container.add_node("Where", [gap, fill, joined], [operator.outputs[0].full_name],
                           name=scope.get_unique_operator_name("Where"))  # fmt: skip

    register(NumberImputer, "TabtrackNumberImputer", shape, converter)


def _register_infrequent_grouper(register) -> None:
    from skl2onnx.common.data_types import StringTensorType
    from skl2onnx.common.utils import check_input_and_output_numbers
    from skl2onnx.proto import onnx_proto

    def shape(operator):
        check_input_and_output_numbers(operator, output_count_range=1)
        operator.outputs[0].type = StringTensorType([None, len(operator.raw_operator.maps)])

    def converter(scope, operator, container):
        from skl2onnx.common._apply_operation import apply_concat

        names = [i.full_name for i in operator.inputs]
        joined = names[0]
        if len(names) > 1:
            joined = scope.get_unique_variable_name("texts")
            apply_concat(scope, names, joined, container, axis=1)
        grouped = []
        grouper = operator.raw_operator
        for j, (mapping, unseen) in enumerate(zip(grouper.maps, grouper.unseen, strict=True)):
            index, column, out = (scope.get_unique_variable_name(n) for n in ("index", "column", "grouped"))
            container.add_initializer(index, onnx_proto.TensorProto.INT64, [1], [j])
            container.add_node(
                "Gather", [joined, index], [column], axis=1, name=scope.get_unique_operator_name("Gather")
            )
            container.add_node("LabelEncoder", [column], [out], op_domain="ai.onnx.ml", op_version=2,
                               keys_strings=list(mapping), values_strings=list(mapping.values()), default_string=unseen,
                               name=scope.get_unique_operator_name("LabelEncoder"))  # fmt: skip
            grouped.append(out)
        apply_concat(scope, grouped, operator.outputs[0].full_name, container, axis=1)

    register(InfrequentGrouper, "TabtrackInfrequentGrouper", shape, converter)
