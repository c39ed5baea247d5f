"""Register the experiment's best run (by cross-validated ROC AUC, not by the test split) and make it champion."""

import argparse

from mlflow import MlflowClient

import tabtrack


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--experiment", default="heart-disease")
    parser.add_argument("--name", default="heart-disease")
    args = parser.parse_args()

    client = MlflowClient()
    experiment = client.get_experiment_by_name(args.experiment)
    (best,) = client.search_runs(
        [experiment.experiment_id],
        filter_string="attributes.status = 'FINISHED' and tags.`tabtrack.kind` = 'own_code'",
        order_by=["metrics.cv_roc_auc_mean DESC"],
        max_results=1,
    )
    version = tabtrack.register(best.info.run_id, name=args.name, description=f"best of {args.experiment} by CV")
    tabtrack.promote(args.name, version=version.version, alias="champion")
    print(f"{args.name} version {version.version} <- run {best.info.run_name} ({best.info.run_id}), now champion")


if __name__ == "__main__":
    main()
