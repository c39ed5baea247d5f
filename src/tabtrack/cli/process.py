"""What the `tabtrack` command sets for the whole process it runs in (and library use never does): logging on
stderr, MLflow's environment defaults and quieter warnings, SIGTERM ending runs KILLED, and a fast exit."""

from __future__ import annotations

import atexit
import gc
import logging
import signal
import sys
import warnings

from tabtrack import settings
from tabtrack.interrupts import exit_on_sigterm


def set_up(*, verbose: bool) -> None:
    """Before any command runs (and before MLflow is imported)."""
    settings.defaults(settings.MLFLOW_CLI_DEFAULTS)
    if not verbose:
        settings.defaults(settings.MLFLOW_QUIET_DEFAULTS)
    _configure_logging(verbose)


def install() -> None:
    """Once per process, as the command starts."""
    signal.signal(signal.SIGTERM, exit_on_sigterm)  # SystemExit unwinds through the tracker: the run ends KILLED
    # At exit, what the command wrote is written and flushed. The interpreter's last full garbage collection
    # walks every object of every imported module (MLflow, scikit-learn, skops, torch: ~1.5 s after a tracked
    # run on a 2-core machine) only to free memory the process is about to give back: skip it.
    atexit.register(gc.freeze)


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s: %(name)s: %(message)s"
    )
    # tabtrack's own messages: "warning: ..." on stderr, one handler however often main() runs in a process
    ours = logging.getLogger("tabtrack")
    for handler in [h for h in ours.handlers if getattr(h, "tabtrack_cli", False)]:
        ours.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    handler.tabtrack_cli = True
    ours.addHandler(handler)
    ours.setLevel(logging.INFO if verbose else logging.WARNING)
    ours.propagate = False
    if not verbose:
        # MLflow narrates every run ("View run ...", schema hints); the result table says what matters.
        for noisy in ("mlflow", "alembic", "skops", "ray"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=r"mlflow(\..*)?")
        warnings.filterwarnings("ignore", category=FutureWarning)
