"""Issue 9, target 4b: what the caller's peak memory would be if HGB were trained differently.

    python -m benchmarks.memory_floor [--rows 1000000]

Each variant runs in a fresh process that checks the data as `tabtrack train` does (load, validate,
split), then fits hist_gradient_boosting. It prints the process's peak RSS (VmHWM) against the
in-memory dataset size:
  pipeline      what tabtrack trains today: imputer + scaler + HGB (HGB splits off its own validation rows)
  raw           HGB on the raw features, no imputer or scaler (it handles missing values itself)
  raw-own-val   raw features, with the validation rows HGB would pick split off beforehand, column by
                column, and passed as X_val, so the matrix is never copied whole inside the fit
Only the caller is measured; a tracked run adds its worker and helper. "raw" and "raw-own-val" are
what-ifs for a product decision, not what tabtrack does.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

VARIANTS = ("pipeline", "raw", "raw-own-val")


def fit_variant(data: str, variant: str) -> None:
    """Runs in the measured process: check the data as train does, fit one variant, print VmHWM."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state

    import tabtrack.cli  # noqa: F401  (the imports a real run has)
    from benchmarks.common import vm_hwm_mib
    from tabtrack.config import resolve_config
    from tabtrack.data.load import release_freed_memory
    from tabtrack.workflows.checks import check_training
    from tabtrack.workflows.train import new_pipeline

    options = {"data": data, "target": "y", "model": {"type": "hist_gradient_boosting"}}
    checked = check_training(resolve_config(file=None, options=options, overrides=()))
    split = checked.split
    y = split.y_train.to_numpy()
    if variant == "pipeline":
        model = new_pipeline(checked).fit(split.X_train, split.y_train)
    elif variant == "raw":
        model = HistGradientBoostingClassifier(random_state=checked.config.random_state).fit(split.X_train, y)
    else:
        # HGB draws its split seed first from random_state: the same rows it would hold out itself.
        seed = check_random_state(checked.config.random_state).randint(np.iinfo(np.uint32).max, dtype="u8")
        fit_rows, val_rows = train_test_split(np.arange(len(y)), test_size=0.1, stratify=y, random_state=seed)
        X, split.X_train = split.X_train, None
        # C order: given an F-ordered matrix, HGB's fit makes a C-ordered copy of it (218 vs 66 MiB of
        # its own allocations on 720k x 30).
        X_fit, X_val = np.empty((len(fit_rows), X.shape[1])), np.empty((len(val_rows), X.shape[1]))
        for j, name in enumerate(list(X.columns)):
            column = X.pop(name).to_numpy()
            X_fit[:, j], X_val[:, j] = column[fit_rows], column[val_rows]
            del column
            release_freed_memory()  # the popped columns came from glibc's heap, which keeps them otherwise
        del X
        model = HistGradientBoostingClassifier(random_state=checked.config.random_state)
        model.fit(X_fit, y[fit_rows], X_val=X_val, y_val=y[val_rows])
    peak = vm_hwm_mib(os.getpid())  # this process's own peak, whatever started it
    X_test = split.X_test.to_numpy() if variant == "raw-own-val" else split.X_test  # as it was fitted
    accuracy = float(np.mean(model.predict(X_test) == split.y_test.to_numpy()))
    print(f"{peak:.0f} {accuracy:.5f}")


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--fit":
        fit_variant(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    from benchmarks.common import big_parquet

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "big.parquet"
        dataset_mib = big_parquet(data, rows=args.rows)
        rows = []
        for variant in VARIANTS:
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.memory_floor", "--fit", str(data), variant],
                check=True, capture_output=True, text=True,
            ).stdout.split()  # fmt: skip
            peak, accuracy = float(out[0]), out[1]
            rows.append((variant, f"{peak:.0f} MiB", f"{peak / dataset_mib:.1f}x", accuracy))
    print(f"{args.rows:,} x 30, dataset {dataset_mib:.0f} MiB; the caller only (a tracked run adds its worker)")
    header = ("variant", "peak RSS", "/ dataset", "test accuracy")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(4)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
