"""Write scikit-learn's bundled datasets as CSV files beside this script (no download needed).

    python examples/make_datasets.py
"""

from __future__ import annotations

from pathlib import Path

from sklearn import datasets

HERE = Path(__file__).parent


def main() -> None:
    for name, loader in (
        ("breast_cancer", datasets.load_breast_cancer),  # binary classification
        ("wine", datasets.load_wine),  # 3-class classification
        ("diabetes", datasets.load_diabetes),  # regression
    ):
        frame = loader(as_frame=True).frame
        frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
        path = HERE / f"{name}.csv"
        frame.to_csv(path, index=False)
        print(f"wrote {path} ({len(frame)} rows, {frame.shape[1] - 1} features)")


if __name__ == "__main__":
    main()
