"""How far current rows have moved from a model's reference profile (data/profile.py), column by column.

- Population stability index (PSI) on the reference's bins: deciles for numbers, categories (the reference's
  most frequent ones, everything else pooled, unseen categories in a bin of their own) for text. PSI below 0.1
  is usually read as stable, 0.1-0.2 as a shift worth a look, above 0.2 as drift.
- A test suited to the column: numbers, Kolmogorov-Smirnov against the reference's distribution (its percentiles:
  the statistic at 101 points, a lower bound of the exact one); text, a chi-square test of the category counts.
  With thousands of rows every test finds something: they are reported beside PSI, the thresholds are on PSI.
- The share of missing values, and categories the reference never saw.
Pure: numpy and scipy.stats on one frame of current rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tabtrack.data.profile import OTHER

EPSILON = 1e-4  # a bin's share is at least this, so an empty bin does not make PSI infinite
NEW = "__new__"
GRID_CELLS = 8192  # bin_counts' lookup grid


@dataclass
class ColumnDrift:
    column: str
    kind: str  # numeric | categorical
    rows: int
    psi: float
    test: str  # ks | chi2
    statistic: float
    p_value: float
    null_share_reference: float
    null_share: float
    new_categories: list[str] = field(default_factory=list)
    new_share: float = 0.0  # of the present values: those in categories the reference never saw
    bins: list[str] = field(default_factory=list)  # what the page draws: bin labels, reference and current shares
    reference_shares: list[float] = field(default_factory=list)
    current_shares: list[float] = field(default_factory=list)

    @property
    def null_jump(self) -> float:
        return self.null_share - self.null_share_reference


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI of two distributions over the same bins (counts or shares)."""
    ref = np.maximum(np.asarray(reference, dtype=float) / max(np.sum(reference), 1), EPSILON)
    cur = np.maximum(np.asarray(current, dtype=float) / max(np.sum(current), 1), EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def column_drift(
    name: str, reference: Mapping[str, Any], values: pd.Series, *, reference_rows: int | None = None
) -> ColumnDrift:
    """Drift of one column's current `values` from its reference profile (made from `reference_rows` rows: the
    KS test then counts the reference's own sampling noise, as a two-sample test does)."""
    null_share = float(values.isna().mean()) if len(values) else 0.0
    common = {"column": name, "rows": len(values), "null_share_reference": reference["null_share"],
              "null_share": null_share}  # fmt: skip
    if reference["kind"] == "numeric":
        if values.dtype != "float64":  # numbers logged as text, by a model that took any value
            values = pd.to_numeric(values.astype(object), errors="coerce")
        numbers = values.to_numpy("float64", na_value=np.nan)
        return _numeric(reference, numbers[~np.isnan(numbers)], common, reference_rows)
    return _categorical(reference, _text_counts(values), common)


def _text_counts(values: pd.Series) -> pd.Series:
    """How often each present value occurs, by its text, most frequent first (counted before converting to text:
    a categorical's codes, not a million strings)."""
    counts = values.value_counts(sort=False)
    counts = counts[counts > 0]
    counts.index = counts.index.astype(str)
    if not counts.index.is_unique:  # 1 and "1"
        counts = counts.groupby(level=0).sum()
    return counts.sort_values(ascending=False, kind="stable")


def _numeric(
    reference: Mapping[str, Any], numbers: np.ndarray, common: dict, reference_rows: int | None
) -> ColumnDrift:
    quantiles = np.asarray(reference.get("quantiles") or [], dtype=float)
    n = len(numbers)
    if not len(quantiles) or not n:  # nothing to compare: no reference values, or no current ones
        return ColumnDrift(**common, kind="numeric", psi=0.0, test="ks", statistic=0.0, p_value=1.0)
    # Bins [edge, next edge) at the reference's distinct percentiles, the last one open above: a value repeated
    # over many percentiles (a 0/1 column, a mass of zeros) is one bin, and shares come from where it starts.
    edges = np.append(np.unique(quantiles), np.inf)
    below = np.searchsorted(quantiles, edges, side="left") / (len(quantiles) - 1)  # the reference's P(X < edge)
    below[-1] = 1.0
    reference_shares = np.diff(below)
    # by the inner edges: below the second edge is the first bin, values under the reference's minimum included
    counts = bin_counts(edges[1:-1], numbers).astype(float)
    ks = float(np.max(np.abs(np.cumsum(counts) / n - np.cumsum(reference_shares))))
    decile_ref, decile_cur, labels = _deciles(edges, reference_shares, counts)
    return ColumnDrift(
        **common, kind="numeric", psi=psi(decile_ref, decile_cur), test="ks", statistic=ks,
        p_value=_ks_p_value(ks, n * reference_rows / (n + reference_rows) if reference_rows else n), bins=labels, reference_shares=_shares(decile_ref),
        current_shares=_shares(decile_cur),
    )  # fmt: skip


def bin_counts(inner: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """How many `numbers` fall in each bin the sorted `inner` edges make: `np.searchsorted(inner, numbers, "right")`
    counted, by a lookup on a fine grid instead of a binary search per number (5x faster on a million): a grid
    cell without an edge in it names its bin; the numbers in the few cells that hold an edge are searched."""
    bins = len(inner) + 1
    if len(numbers) < 50_000 or len(inner) < 2 or not inner[-1] > inner[0]:
        return np.bincount(np.searchsorted(inner, numbers, side="right"), minlength=bins)
    low, width = inner[0], (inner[-1] - inner[0]) / GRID_CELLS
    starts = low + width * np.arange(GRID_CELLS)
    # each cell's bin where no edge comes within a millionth of a cell of it (rounding moves a number far less)
    first = np.searchsorted(inner, starts - width * 1e-6, side="right")
    last = np.searchsorted(inner, starts + width * (1 + 1e-6), side="right")
    # below the grid: bin 0, exactly (x - low < 0 exactly when x < low); at or above its top: searched
    table = np.concatenate([[0], np.where(first == last, first, -1), [-1]])
    cells = numbers - low
    cells /= width
    np.floor(cells, out=cells)
    np.clip(cells, -1, GRID_CELLS, out=cells)
    found = table[cells.astype(np.intp) + 1]
    unsure = found < 0
    found[unsure] = np.searchsorted(inner, numbers[unsure], side="right")
    return np.bincount(found, minlength=bins)


def _ks_p_value(statistic: float, n: float) -> float:
    """Exact below 10,000 (effective) rows; above, Kolmogorov's limit, which agrees there to three digits while
    the exact distribution takes a second per column at a million rows."""
    from scipy import stats

    if n < 10_000:
        return float(stats.kstwo.sf(statistic, max(round(n), 1)))
    return float(stats.kstwobign.sf(statistic * np.sqrt(n)))


def _deciles(edges: np.ndarray, shares: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The percentile bins merged into (at most) ten bins of about a tenth of the reference each."""
    groups = np.minimum((np.cumsum(shares) - shares / 2) * 10, 9.999).astype(int)
    reference = np.bincount(groups, weights=shares, minlength=10)
    current = np.bincount(groups, weights=counts, minlength=10)
    kept = [g for g in range(10) if np.any(groups == g)]
    labels = []
    for group in kept:
        members = np.flatnonzero(groups == group)
        low, high = edges[members[0]], edges[members[-1] + 1]
        labels.append(f">= {low:.4g}" if np.isinf(high) else f"[{low:.4g}, {high:.4g})")
    return reference[kept], current[kept], labels


def _categorical(reference: Mapping[str, Any], counts: pd.Series, common: dict) -> ColumnDrift:
    from scipy import stats

    categories: dict[str, int] = dict(reference.get("categories", {}))
    known = set(reference.get("known", [])) | set(categories)
    named = [c for c in categories if c != OTHER]
    current = {c: int(counts.get(c, 0)) for c in named}
    unseen = [c for c in counts.index if c not in known] if reference.get("known_complete", True) else []
    new_count = int(counts[unseen].sum()) if unseen else 0
    current[OTHER] = int(counts.sum()) - sum(current.values()) - new_count
    ref = {**{c: categories[c] for c in named}, OTHER: categories.get(OTHER, 0)}
    if new_count:
        current[NEW], ref[NEW] = new_count, 0
    bins = [b for b in ref if ref[b] or current.get(b)]
    ref_counts = np.array([ref[b] for b in bins], dtype=float)
    cur_counts = np.array([current.get(b, 0) for b in bins], dtype=float)
    n = int(cur_counts.sum())
    statistic, p_value = 0.0, 1.0
    if n and len(bins) > 1:
        expected = np.maximum(ref_counts / ref_counts.sum(), EPSILON)
        statistic, p_value = stats.chisquare(cur_counts, expected / expected.sum() * n)
    return ColumnDrift(
        **common, kind="categorical", psi=psi(ref_counts, cur_counts) if n else 0.0, test="chi2",
        statistic=float(statistic), p_value=float(p_value), new_categories=[str(c) for c in unseen[:20]],
        new_share=new_count / n if n else 0.0, bins=bins, reference_shares=_shares(ref_counts),
        current_shares=_shares(cur_counts),
    )  # fmt: skip


def _shares(counts: np.ndarray) -> list[float]:
    total = float(np.sum(counts))
    return [float(c) / total if total else 0.0 for c in counts]
