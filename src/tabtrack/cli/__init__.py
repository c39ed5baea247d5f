"""The command line: `app` and `main` (cli/app.py), the options commands share (options), what the command sets
for its process (process), what the terminal shows (output), and the commands, by group: training (train_cli),
data stages (data_cli), registered models and serving (registry_cli), recorded runs (runs_cli), and after
deployment (deployment_cli). Each command parses its options and calls the package; none records a run its
own way."""

from tabtrack.cli import (  # noqa: F401  - they add their commands to app
    data_cli,
    deployment_cli,
    registry_cli,
    runs_cli,
    train_cli,
)
from tabtrack.cli.app import app, main

__all__ = ["app", "main"]
