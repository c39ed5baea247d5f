"""Issue 5 benchmark: trials per minute with 1 vs 2 worker processes sharing one PostgreSQL study
(random forest with n_jobs=1 on breast_cancer, 3-fold CV per trial). Target: >= 1.8x on 2 cores.

    TABTRACK_TEST_POSTGRES_URL=$(bash scripts/postgres.sh) python -m benchmarks.tune [--trials 16]

Rate = finished trials / (last trial end - first trial start), read from the study itself, so the
fixed cost of loading data and refitting the best model is not counted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import uuid
from pathlib import Path

from benchmarks.common import bundled_csv, print_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=16)
    args = parser.parse_args()
    import optuna

    from tabtrack.commands.tune import tune
    from tabtrack.core.training import build_config

    storage = os.environ.get(
        "TABTRACK_TEST_POSTGRES_URL", "postgresql://tabtrack:tabtrack@127.0.0.1:5432/tabtrack_test"
    )
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        csv = bundled_csv("breast_cancer", work)
        uri = f"sqlite:///{work / 'mlflow.db'}"
        os.chdir(work)
        for jobs in (1, 2):
            name = f"bench-{jobs}-{uuid.uuid4().hex[:6]}"
            config = build_config(csv, target="target", model="random_forest", overrides=["model.params.n_jobs=1"])
            tune(config, trials=args.trials, jobs=jobs, storage=storage, study_name=name, tracking_uri=uri)
            trials = [t for t in optuna.load_study(study_name=name, storage=storage).trials if t.datetime_complete]
            span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
            rates[jobs] = len(trials) / span * 60
            print(f"{jobs} worker(s): {len(trials)} trials in {span:.1f} s = {rates[jobs]:.1f} trials/min")
    ratio = rates[2] / rates[1]
    print_table([("trials/min, 2 workers vs 1", f"{ratio:.2f}x", ">= 1.8x", "yes" if ratio >= 1.8 else "NO")])


if __name__ == "__main__":
    main()
