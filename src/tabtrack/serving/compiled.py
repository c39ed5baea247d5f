"""The fitted pipeline re-done in numpy for serving, where scikit-learn's per-call overhead dominates
single-row latency: the preprocessing (ColumnTransformer: 3.8 ms for one row, the model itself 1.1 ms)
and random forests (one Python call per tree: 8 ms for one row through a 100-tree forest, 0.15-0.3 ms
here).

Only the structures tabtrack builds are compiled (numeric: median imputer + standard scaler, the
categorical branch still runs through scikit-learn; single-output random forests), and only after they
reproduce scikit-learn's output exactly on probe rows at load time; anything else keeps scikit-learn.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class CompiledPreprocessor:
    numeric: list[str]
    fill: np.ndarray  # the imputer's medians
    mean: np.ndarray | None
    scale: np.ndarray | None
    categorical: list[str]
    categorical_pipeline: Any  # scikit-learn: impute + one-hot

    def transform(self, numeric_block: np.ndarray | None, categorical_frame: pd.DataFrame | None) -> np.ndarray:
        parts = []
        if self.numeric:
            x = np.where(np.isnan(numeric_block), self.fill, numeric_block)
            if self.mean is not None:
                x = x - self.mean
            if self.scale is not None:
                x = x / self.scale
            parts.append(x)
        if self.categorical:
            parts.append(np.asarray(self.categorical_pipeline.transform(categorical_frame), dtype="float64"))
        return parts[0] if len(parts) == 1 else np.hstack(parts)


def compile_preprocessor(preprocess: Any) -> CompiledPreprocessor | None:
    """A CompiledPreprocessor for tabtrack's ColumnTransformer, or None for anything else."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    if not isinstance(preprocess, ColumnTransformer) or getattr(preprocess, "sparse_output_", False):
        return None
    numeric: list[str] = []
    categorical: list[str] = []
    fill = mean = scale = cat_pipeline = None
    names = []
    for name, transformer, columns in preprocess.transformers_:
        if name == "remainder":
            if transformer != "drop" and len(columns):
                return None
            continue
        names.append(name)
        if name == "num":
            steps = dict(getattr(transformer, "steps", []))
            imputer, scaler = steps.get("impute"), steps.get("scale")
            if not (isinstance(imputer, SimpleImputer) and isinstance(scaler, StandardScaler)):
                return None
            if imputer.statistics_.shape[0] != len(columns) or np.isnan(imputer.statistics_).any():
                return None  # an imputer that drops all-empty columns changes the width
            if getattr(imputer, "add_indicator", False):
                return None
            numeric, fill = list(columns), np.asarray(imputer.statistics_, dtype="float64")
            mean = None if scaler.mean_ is None or not scaler.with_mean else np.asarray(scaler.mean_)
            scale = None if scaler.scale_ is None or not scaler.with_std else np.asarray(scaler.scale_)
        elif name == "cat":
            categorical, cat_pipeline = list(columns), transformer
        else:
            return None
    if names not in (["num"], ["cat"], ["num", "cat"]):
        return None
    return CompiledPreprocessor(numeric, fill, mean, scale, categorical, cat_pipeline)


def verified(
    compiled: CompiledPreprocessor | None, preprocess: Any, probe: pd.DataFrame
) -> CompiledPreprocessor | None:
    """`compiled` when it gives exactly scikit-learn's output on `probe` (prepared rows), else None."""
    if compiled is None:
        return None
    try:
        expected = np.asarray(preprocess.transform(probe), dtype="float64")
        block = probe[compiled.numeric].to_numpy(dtype="float64") if compiled.numeric else None
        cats = probe[compiled.categorical] if compiled.categorical else None
        ok = np.array_equal(compiled.transform(block, cats), expected, equal_nan=True)
    except Exception:  # any mismatch in shape or type: keep scikit-learn
        log.debug("compiled preprocessing failed its check", exc_info=True)
        return None
    if not ok:
        log.debug("compiled preprocessing differs from scikit-learn's; not used")
    return compiled if ok else None


# The compiled forest walks every tree one level per numpy step, for all rows at once: far faster than
# scikit-learn for a few rows, slower for many (its trees are walked in compiled code). Measured, 100
# trees of depth 27-39: 0.3 against 8-9 ms for one row, 3-5 against 10-13 ms for 64 rows.
FOREST_MAX_ROWS = 64
# Forests with more nodes keep scikit-learn's path: the flat copy costs ~48 bytes a node (~100 MiB here).
FOREST_MAX_NODES = 2_000_000


@dataclass
class CompiledForest:
    """A fitted single-output random forest as flat node arrays (every tree's nodes end to end; a leaf's
    children are itself, so walking `depth` levels lands every row on its leaf in every tree)."""

    roots: np.ndarray  # each tree's first node
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray  # per node: class fractions (classifier) or the mean target (regressor)
    depth: int
    classes_: np.ndarray | None

    def _averaged(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)  # what scikit-learn's trees compare against their thresholds
        rows = np.arange(X.shape[0])[:, None]
        nodes = np.repeat(self.roots[None, :], X.shape[0], axis=0)
        for _ in range(self.depth):
            go_left = X[rows, self.feature[nodes]] <= self.threshold[nodes]
            nodes = np.where(go_left, self.left[nodes], self.right[nodes])
        leaves = self.value[nodes]  # (rows, trees[, classes])
        # Summed tree by tree, in order, and then divided: the forest's own arithmetic, so the same bits.
        total = np.zeros(leaves.shape[:1] + leaves.shape[2:])
        for tree in range(leaves.shape[1]):
            total += leaves[:, tree]
        total /= leaves.shape[1]
        return total

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self._averaged(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        averaged = self._averaged(X)
        return averaged if self.classes_ is None else self.classes_[np.argmax(averaged, axis=1)]


def compile_forest(estimator: Any) -> CompiledForest | None:
    """A CompiledForest for a fitted single-output random forest, or None for any other estimator (and for
    forests over FOREST_MAX_NODES nodes)."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    if type(estimator) not in (RandomForestClassifier, RandomForestRegressor) or estimator.n_outputs_ != 1:
        return None
    trees = [tree.tree_ for tree in estimator.estimators_]
    if sum(tree.node_count for tree in trees) > FOREST_MAX_NODES:
        return None
    offsets = np.cumsum([0] + [tree.node_count for tree in trees[:-1]])

    def children(links: str) -> np.ndarray:
        parts = []
        for tree, offset in zip(trees, offsets, strict=True):
            child = getattr(tree, links)
            parts.append(np.where(child < 0, np.arange(tree.node_count), child) + offset)
        return np.concatenate(parts).astype(np.intp)

    feature = np.concatenate([tree.feature for tree in trees]).astype(np.intp)
    feature[feature < 0] = 0  # leaves: any column, both children are the leaf itself
    classifier = isinstance(estimator, RandomForestClassifier)
    value = np.concatenate(
        [tree.value[:, 0, : estimator.n_classes_] if classifier else tree.value[:, 0, 0] for tree in trees]
    )
    return CompiledForest(
        roots=offsets.astype(np.intp),
        feature=feature,
        threshold=np.concatenate([tree.threshold for tree in trees]),
        left=children("children_left"),
        right=children("children_right"),
        value=np.asarray(value, dtype="float64"),
        depth=max(tree.max_depth for tree in trees),
        classes_=np.asarray(estimator.classes_) if classifier else None,
    )


def verified_forest(compiled: CompiledForest | None, estimator: Any, probe: np.ndarray) -> CompiledForest | None:
    """`compiled` when it gives exactly the forest's own output on `probe` (preprocessed rows), else None."""
    if compiled is None:
        return None
    import joblib

    try:
        with joblib.parallel_config(backend="sequential"):  # the forest's sums in tree order, as compiled
            if compiled.classes_ is None:
                ok = np.array_equal(compiled.predict(probe), estimator.predict(probe))
            else:
                ok = np.array_equal(compiled.predict_proba(probe), estimator.predict_proba(probe))
    except Exception:
        log.debug("compiled forest failed its check", exc_info=True)
        return None
    if not ok:
        log.debug("compiled forest differs from scikit-learn's; not used")
    return compiled if ok else None
