"""What the AnyType signature costs MLflow's schema enforcement: `mlflow.pyfunc` predictions on the same
rows through the model tabtrack logs (every input column AnyType: checked value by value in Python) and
through the same model saved with the typed signature MLflow would infer (double/string: checked per
column), next to the pipeline's own predict.

    python -m benchmarks.signature [--rows 10000 100000] [--columns 20] [--repeats 5]

The typed model only takes float64 rows (an int64 column, as pandas reads an integer CSV column without
gaps, is refused), so both are timed on float64 rows.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.datasets import make_classification

    import tabtrack
    from tabtrack.core.checks import check_training
    from tabtrack.core.training import build_config
    from tabtrack.tracking.mlflow_io import model_kwargs

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        X, y = make_classification(n_samples=5_000, n_features=args.columns, random_state=0)
        frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(args.columns)]).assign(y=y)
        frame.to_csv(work / "train.csv", index=False)
        config = build_config(work / "train.csv", target="y", model="hist_gradient_boosting")
        result = tabtrack.train(config=config, track=False)
        artifact = check_training(config).packaging.artifact(result.pipeline, frame.drop(columns=["y"]))
        kwargs = model_kwargs(artifact)
        mlflow.sklearn.save_model(result.pipeline, path=str(work / "any"), **kwargs)
        typed = {**kwargs, "signature": infer_signature(artifact.input_example, artifact.output_example)}
        mlflow.sklearn.save_model(result.pipeline, path=str(work / "typed"), **typed)
        any_model = mlflow.pyfunc.load_model(str(work / "any"))
        typed_model = mlflow.pyfunc.load_model(str(work / "typed"))

        for n in args.rows:
            batch = pd.DataFrame(
                np.random.default_rng(1).normal(size=(n, args.columns)), columns=[f"x{i}" for i in range(args.columns)]
            )
            timings = {"pipeline": [], "typed": [], "any": []}
            for _ in range(args.repeats):
                for name, predict in (
                    ("pipeline", result.pipeline.predict),
                    ("typed", typed_model.predict),
                    ("any", any_model.predict),
                ):
                    start = time.perf_counter()
                    predict(batch)
                    timings[name].append(time.perf_counter() - start)
            m = {k: median(v) for k, v in timings.items()}
            rows.append(
                f"{n:>9,} x {args.columns}: pyfunc, AnyType {m['any']:.3f} s, typed {m['typed']:.3f} s "
                f"(+{(m['any'] - m['typed']) * 1e6 / (n * args.columns):.2f} us per value); "
                f"the pipeline alone {m['pipeline']:.3f} s"
            )
    print(f"median of {args.repeats}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
