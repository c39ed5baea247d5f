"""The own-code door: the standard run around the user's own training code.

    with tabtrack.start_run(experiment="heart-disease", data="data/heart.csv", params={"n_estimators": 200},
                            seed=42, code_paths=["src/"]) as run:
        model = my_pipeline().fit(X_train, y_train)
        result = run.evaluate(model, X_test, y_test, X_train=X_train, y_train=y_train)

`Run` is a small facade: lineage and tags are recorded on entry, the lifecycle (FINISHED, FAILED with the
traceback, KILLED) is the Tracker's, and `evaluate` records what `tabtrack train` records for a fitted model
(tabtrack.workflows.evaluation). Inside the block the run is MLflow's active run, so the user's own
`mlflow.log_*` calls land in it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import os
import random
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tabtrack.errors import TabtrackError

log = logging.getLogger(__name__)

# Set by `tabtrack reproduce` for the script it re-runs: the id of the run being reproduced.
REPRODUCES_ENV = "TABTRACK_REPRODUCES"
INPUT_EXAMPLE_ROWS = 5
_active: list[Run] = []


@dataclass
class EvaluationResult:
    """What `Run.evaluate` recorded: `metrics[split][name]` (train, test, and cv after `cross_validate`)."""

    metrics: dict[str, dict[str, float]]
    model_uri: str | None
    run_id: str | None
    trusted_types: list[str] = field(default_factory=list)


def start_run(
    *,
    experiment: str | None = None,
    run_name: str | None = None,
    data: str | Path | Sequence[str | Path] | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    seed: int | None = None,
    code_paths: Sequence[str | Path] = (),
    track: bool = True,
    offline: bool = False,
    tracking_uri: str | None = None,
    extra_pip_requirements: Sequence[str] = (),
    trusted_types: Sequence[str] = (),
) -> Run:
    """A standard run around your own training code; use it as `with tabtrack.start_run(...) as run:`.

    Args:
        experiment: MLflow experiment; default: the stem of the first `data` file, else of the script.
        run_name: default `{script stem}_{YYYYmmdd_HHMMSS}`.
        data: the data file(s) the code reads: their sha256, DVC md5 and an MLflow dataset input are recorded.
        params: logged as run params (secret-looking keys masked).
        tags: user tags.
        seed: logged as `random_state` and applied to `random`, numpy and (when imported) torch.
        code_paths: folders or files of your own code a logged model needs; they ship with it, and classes
            defined there are the ones skops trusts when it saves the model.
        track: False records nothing (a script's `--no-track`); metrics are still computed and returned.
        offline: record into `.tabtrack/offline/` for a later `tabtrack sync` (also when the server is down).
        tracking_uri: default: MLflow's own resolution, else `./mlflow.db`.
        extra_pip_requirements: added to the logged model's pinned requirements.
        trusted_types: further type names skops may trust when saving the model (`module.Class`).

    Example:
        >>> with tabtrack.start_run(experiment="churn", data="data/churn.csv", seed=42) as run:
        ...     model = make_pipeline(StandardScaler(), LogisticRegression()).fit(X_train, y_train)
        ...     run.evaluate(model, X_test, y_test, X_train=X_train, y_train=y_train)
    """
    files = [] if data is None else [data] if isinstance(data, str | Path) else list(data)
    return Run(
        experiment=experiment, run_name=run_name, data=[Path(f) for f in files], params=dict(params or {}),
        tags=dict(tags or {}), seed=seed, code_paths=[str(p) for p in code_paths], track=track, offline=offline,
        tracking_uri=tracking_uri, extra_pip_requirements=list(extra_pip_requirements),
        trusted_types=list(trusted_types),
    )  # fmt: skip


def active_run() -> Run | None:
    """The innermost `start_run` block this code runs in (None outside one)."""
    return _active[-1] if _active else None


def track(fn: Callable | None = None, *, experiment: str | None = None, **start_run_kwargs: Any) -> Callable:
    """Run the decorated function inside `start_run`, its scalar arguments logged as params (secret-looking
    names masked); the body reaches the run through `tabtrack.active_run()`.

    Example:
        >>> @tabtrack.track(experiment="churn")
        ... def main(n_estimators: int = 200, learning_rate: float = 0.1): ...
    """

    def decorate(function: Callable) -> Callable:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            scalars = {k: v for k, v in bound.arguments.items() if isinstance(v, str | int | float | bool | Path)}
            params = {**start_run_kwargs.pop("params", {}), **scalars}
            with start_run(experiment=experiment, params=params, **start_run_kwargs):
                return function(*args, **kwargs)

        return wrapper

    return decorate(fn) if fn is not None else decorate


class Run:
    """One standard MLflow run around user code. Create it with `tabtrack.start_run(...)`."""

    def __init__(self, **settings: Any) -> None:
        self._settings = settings
        self.seed: int | None = settings["seed"]
        self.code_paths: list[str] = settings["code_paths"]
        self._tracker = None
        self._stack = contextlib.ExitStack()
        self._epochs: list[dict[str, float]] = []
        self._metrics: dict[str, dict[str, float]] = {}
        self._images: dict[str, bytes] = {}
        self._logged: dict[str, float] = {}  # the latest value of each metric logged with log_metrics
        self._params: dict[str, Any] = {}
        self._tags: dict[str, str] = {}
        self.run_name: str = ""
        self.experiment: str = ""

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> Run:
        from tabtrack.redact import redact
        from tabtrack.tracking import make_tracker

        s = self._settings
        self._check_paths()
        fingerprints = [_fingerprint(path) for path in s["data"]]
        self.experiment = s["experiment"] or (Path(s["data"][0]).stem if s["data"] else _script_stem())
        self.run_name = s["run_name"] or f"{_script_stem()}_{datetime.now():%Y%m%d_%H%M%S}"
        self._tags = {**own_run_tags(fingerprints), **redact(s["tags"])}
        self._tracker = make_tracker(track=s["track"], tracking_uri=s["tracking_uri"], offline=s["offline"])
        run = self._stack.enter_context(
            self._tracker.run(experiment=self.experiment, run_name=self.run_name, tags=self._tags)
        )
        try:
            _active.append(self)
            self._stack.callback(_active.remove, self)
            self._stack.enter_context(_killed_on_sigterm())
            if self.seed is not None:
                apply_seed(self.seed)
                self.log_params({"random_state": self.seed})
            self.log_params(s["params"])
            for fingerprint, path in zip(fingerprints, s["data"], strict=True):
                _log_file_dataset(run, fingerprint, path)
        except BaseException:  # the run exists: end it (FAILED) before the error leaves `with`
            if not self._stack.__exit__(*sys.exc_info()):
                raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc is None and self._epochs and self._tracker.stores_artifacts:
                self._log_loss_curve()
        finally:
            self._stack.__exit__(exc_type, exc, tb)  # the Tracker ends the run: FINISHED, FAILED or KILLED
        return False  # an exception propagates unchanged

    @property
    def run_id(self) -> str | None:
        return self._tracker.run_id if self._tracker else None

    @property
    def ui_url(self) -> str | None:
        return self._tracker.ui_url if self._tracker else None

    @property
    def offline_bundle(self) -> str | None:
        return self._tracker.offline_bundle if self._tracker else None

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """What `cross_validate` and `evaluate` computed, by split."""
        return {split: dict(values) for split, values in self._metrics.items()}

    def _repr_html_(self) -> str:
        """Jupyter: the metrics so far (by split, then the ones logged by hand) and the main plots, inline."""
        from tabtrack.evaluate.html_report import notebook_html

        flat = {f"{split}_{k}": v for split, values in self._metrics.items() for k, v in values.items()}
        return notebook_html(
            title=f"{self.run_name} · {self.experiment}", run_id=self.run_id, ui_url=self.ui_url,
            metrics={**self._logged, **flat}, images=self._images,
        )  # fmt: skip

    # -- values ------------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        from tabtrack.redact import redact

        params = redact(dict(params))
        self._params.update(params)
        self._recorder().log_params(params)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        values = {k: float(v) for k, v in metrics.items()}
        self._recorder().log_metrics(values, step=step)
        self._logged.update(values)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from tabtrack.redact import redact

        tags = redact({str(k): str(v) for k, v in tags.items()})
        self._tags.update(tags)
        self._recorder().set_tags(tags)

    def log_epoch(self, epoch: int, **metrics: float) -> None:
        """One epoch's values (e.g. `train_loss`, `val_loss`), logged with `step=epoch`, buffered and sent in
        batches; the losses are drawn as `plots/loss_curve.png` when the run ends."""
        values = {k: float(v) for k, v in metrics.items()}
        self._epochs.append({"epoch": epoch, **values})
        self._recorder().log_metrics(values, step=epoch)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """A file, or a folder with everything in it, under `artifact_path` in the run's artifacts."""
        path = Path(path)
        if not path.exists():
            raise TabtrackError(f"log_artifact: '{path}' does not exist.")
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        base = path.parent if path.is_file() else path
        prefix = f"{artifact_path.strip('/')}/" if artifact_path else ("" if path.is_file() else f"{path.name}/")
        for file in files:
            self._recorder().log_bytes(file.read_bytes(), prefix + file.relative_to(base).as_posix())

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """A matplotlib figure as a PNG at `artifact_file` (e.g. `plots/residuals_by_region.png`)."""
        from tabtrack.evaluate.plots import render_png

        png = render_png(figure)
        self._images[artifact_file] = png
        self._recorder().log_bytes(png, artifact_file)

    # -- the standard ------------------------------------------------------------------------------
    def cross_validate(
        self, estimator: Any, X: Any, y: Any, *, cv: int = 5, task: str | None = None
    ) -> dict[str, float]:
        """K-fold CV of an unfitted estimator (stratified for classification, shuffled with the run's seed):
        one child run `fold_k` per fold, `cv_{metric}_mean` / `_std` on this run, as `tabtrack train --cv`."""
        from sklearn.base import clone

        from tabtrack.evaluate.metrics import prefixed
        from tabtrack.models.own import check_rows, model_task
        from tabtrack.workflows.evaluation import cross_validate

        if not hasattr(estimator, "fit"):
            raise TabtrackError(f"cross_validate needs an estimator with fit(); got {type(estimator).__name__}.")
        if cv < 2:
            raise TabtrackError(f"cross_validate needs cv of 2 or more folds, got {cv}.")
        X, y = check_rows(X, y, "cross_validate")
        task = model_task(estimator, task)
        X = X if hasattr(X, "iloc") else _as_frame(X)
        classes = sorted(y.unique().tolist()) if task == "classification" else None
        scores, _ = cross_validate(
            self._recorder(), lambda: clone(estimator), X, y, task=task, classes=classes, folds=cv,
            random_state=self.seed if self.seed is not None else 0,
        )  # fmt: skip
        self._metrics["cv"] = scores
        self._recorder().log_params({"cv_folds": cv})
        self._recorder().log_metrics(prefixed("cv", scores))
        return scores

    def evaluate(
        self,
        model: Any,
        X_test: Any,
        y_test: Any,
        *,
        X_train: Any = None,
        y_train: Any = None,
        task: str | None = None,
        model_name: str | None = None,
        slices: Sequence[str] = (),
        explain: bool = False,
    ) -> EvaluationResult:
        """Record a fitted model as `tabtrack train` records its own: `{train,test}_*` metrics (threshold metrics
        for binary classifiers), the standard plots, the classification report, feature importance per input
        column, `report.html`, and the model (signature, input example, pinned requirements, `code_paths`).
        `slices` names columns of X_test whose values get their own test metrics (`reports/slices.csv`);
        `explain` adds SHAP values per input column (`plots/shap_summary.png`, extra `shap`).
        The model is fed the rows as given. Returns the metrics by split and the model URI."""
        from tabtrack.evaluate.slices import SLICES_FILE
        from tabtrack.models.own import check_labels, check_model, check_rows, model_task
        from tabtrack.workflows.evaluation import evaluate_fitted, log_evaluation, log_report, scoring_rows

        check_model(model)
        X_test, y_test = check_rows(X_test, y_test, "evaluate(X_test, y_test)")
        train_rows = None
        if X_train is not None or y_train is not None:
            train_rows = check_rows(X_train, y_train, "evaluate(X_train=..., y_train=...)")
        task = model_task(model, task)
        classes = None
        if task == "classification":
            classes = check_labels(model, y_test, "y_test")
            if train_rows is not None:
                check_labels(model, train_rows[1], "y_train")
        unknown = [c for c in slices if c not in X_test.columns]
        if unknown:
            raise TabtrackError(f"evaluate(slices=...) names column(s) {unknown} that X_test does not have.")
        if explain:
            from tabtrack.workflows.checks import require_shap

            require_shap()
        name = model_name or _model_name(model)
        recorder = self._recorder()
        seed = self.seed if self.seed is not None else 0
        limit = _train_default("train_metrics_rows")
        scored = None if train_rows is None else scoring_rows(*train_rows, limit=limit, random_state=seed)
        artifact = self._model_artifact(model, example=(train_rows[0] if train_rows else X_test))
        if artifact is not None:
            recorder.save_model_ahead(artifact)  # while the model is evaluated
        evaluation = evaluate_fitted(
            model, X_test, y_test, task=task, classes=classes, model_name=name, thresholds=_train_default("thresholds"),
            random_state=seed, train_rows=scored, with_artifacts=recorder.stores_artifacts, slices=slices,
            explain=explain,
        )  # fmt: skip
        self._metrics.update(evaluation.metrics)
        recorder.log_params(
            {"model_type": name, "task": task, **_sizes(X_test, train_rows), **_estimator_params(model)}
        )
        _log_frames(recorder, X_test, y_test, train_rows)
        log_evaluation(recorder, evaluation)
        self._images.update(evaluation.images)
        model_uri = self._log_model(artifact) if artifact is not None else None
        log_report(
            recorder, run_name=self.run_name, experiment=self.experiment, params=self._params | {"model_type": name},
            metrics=self._metrics, tags=self._tags, images=self._images,
            slices=evaluation.evidence.texts.get(SLICES_FILE),
        )  # fmt: skip
        trusted = artifact.trusted_types if artifact is not None else []
        return EvaluationResult(metrics=self.metrics, model_uri=model_uri, run_id=self.run_id, trusted_types=trusted)

    # -- internals ---------------------------------------------------------------------------------
    def _recorder(self):
        if self._tracker is None or self not in _active:
            raise TabtrackError("the run is not open; use it inside `with tabtrack.start_run(...) as run:`.")
        return self._tracker

    def _model_artifact(self, model: Any, *, example: Any) -> Any:
        """The model as it will be logged (a ModelArtifact; None where nothing is stored)."""
        from tabtrack.models.own import requirements, trusted_types
        from tabtrack.tracking import ModelArtifact

        if not self._recorder().stores_artifacts:
            return None
        settings = self._settings
        trusted = trusted_types(model, code_paths=self.code_paths, extra=settings["trusted_types"])
        head = example.head(INPUT_EXAMPLE_ROWS) if hasattr(example, "head") else example[:INPUT_EXAMPLE_ROWS]
        code = list(self.code_paths)
        if any(name.startswith("tabtrack.") for name in trusted):
            import tabtrack

            code.append(str(Path(tabtrack.__file__).parent))
        return ModelArtifact(
            model=model, flavor="sklearn", input_example=head, output_example=model.predict(head),
            input_columns=[str(c) for c in head.columns] if hasattr(head, "columns") else None,
            pip_requirements=requirements(trusted, settings["extra_pip_requirements"]),
            trusted_types=trusted, code_paths=code,
        )  # fmt: skip

    def _log_model(self, artifact: Any) -> str | None:
        recorder = self._recorder()
        if artifact.trusted_types:
            recorder.set_tags({"tabtrack.trusted_types": ",".join(sorted(artifact.trusted_types))})
        uri = recorder.log_model(artifact)
        native = getattr(artifact.model, "native_artifact", None)
        if callable(native):  # adapters log the bare model under its own flavor too
            recorder.log_model(native(example=artifact.input_example, code_paths=artifact.code_paths))
        return uri

    def _log_loss_curve(self) -> None:
        from tabtrack.evaluate.plots import loss_curve_plot, render_png

        history = [{k: v for k, v in epoch.items() if k != "epoch"} for epoch in self._epochs]
        if not any("loss" in key for record in history for key in record):
            return
        png = render_png(loss_curve_plot(history, best_epoch=0, model=self.run_name))
        self._tracker.log_bytes(png, "plots/loss_curve.png")

    def _check_paths(self) -> None:
        for path in self._settings["data"]:
            if not path.is_file():
                raise TabtrackError(
                    f"start_run(data=...): '{path}' is not a file; pass the data file(s) your code reads."
                )
        for path in self.code_paths:
            if not Path(path).exists():
                raise TabtrackError(f"start_run(code_paths=...): '{path}' does not exist.")


def _train_default(key: str) -> Any:
    """What `tabtrack train` uses by default (config `thresholds`, `train_metrics_rows`): both doors agree."""
    from tabtrack.config import RunConfig

    return RunConfig.model_fields[key].default


def apply_seed(seed: int) -> None:
    """The seed for `random`, numpy's global generator and, when the code uses it, torch."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def own_run_tags(fingerprints: Sequence[Any]) -> dict[str, str]:
    """The standard tags: tabtrack version, git, environment, host/pid, the data files' lineage, and the
    entry point (the script, relative to the git root, and its arguments, secrets masked)."""
    from tabtrack import __version__
    from tabtrack.lineage import env_info, git_info

    tags = {"tabtrack.version": __version__, "tabtrack.kind": "own_code", **git_info(), **env_info()}
    for index, fp in enumerate(fingerprints):
        prefix = "data" if index == 0 else f"data.{index}"
        tags.update(
            {f"{prefix}.path": fp.path, f"{prefix}.sha256": fp.sha256, f"{prefix}.size_bytes": str(fp.size_bytes)}
        )
        if fp.dvc_md5:
            tags[f"{prefix}.dvc_md5"] = fp.dvc_md5
    tags.update(entrypoint_tags(sys.argv))
    if os.environ.get(REPRODUCES_ENV):
        tags["tabtrack.reproduces"] = os.environ[REPRODUCES_ENV]
    return tags


def entrypoint_tags(argv: Sequence[str]) -> dict[str, str]:
    """`tabtrack.entrypoint` (the script's path relative to the git root, else as run), `tabtrack.argv` (its
    arguments as JSON, secrets masked), `tabtrack.workdir` (where it ran, relative to the git root) and
    `tabtrack.argv_redacted` when something was masked. Nothing where there is no script (a notebook)."""
    from tabtrack.lineage import git_root

    script = Path(argv[0]) if argv and argv[0] else None
    if script is None or script.suffix != ".py" or not script.is_file() or _interactive():
        return {}
    arguments, masked = redact_argv(argv[1:])
    root = git_root(Path.cwd())
    absolute, cwd = script.resolve(), Path.cwd().resolve()
    tags = {
        "tabtrack.entrypoint": str(absolute.relative_to(root) if root and absolute.is_relative_to(root) else absolute),
        "tabtrack.argv": json.dumps(arguments),
        "tabtrack.workdir": str(cwd.relative_to(root) if root and cwd.is_relative_to(root) else cwd),
    }
    if masked:
        tags["tabtrack.argv_redacted"] = "true"
    return tags


def redact_argv(arguments: Iterable[str]) -> tuple[list[str], bool]:
    """Arguments with secrets masked: the value after (or `=` in) a secret-looking option, and URI credentials."""
    from tabtrack.redact import MASK, is_secret_key, redact_uri

    out: list[str] = []
    masked = False
    hide_next = False
    for argument in arguments:
        if hide_next:
            out.append(MASK)
            masked, hide_next = True, False
            continue
        option, sep, _ = argument.partition("=")
        if option.startswith("-") and is_secret_key(option.lstrip("-").replace("-", "_")):
            if sep:
                out.append(f"{option}={MASK}")
                masked = True
            else:
                out.append(argument)
                hide_next = True
            continue
        clean = redact_uri(argument)
        masked |= clean != argument
        out.append(clean)
    return out, masked


@contextlib.contextmanager
def _killed_on_sigterm():
    """SIGTERM ends the run KILLED (as Ctrl-C does), where Python lets a handler be set: the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fingerprint(path: Path):
    from tabtrack.data.fingerprint import fingerprint

    return fingerprint(path)


def _log_file_dataset(run, fingerprint, path: Path) -> None:
    """A data file as an MLflow dataset input: its schema from the first rows, its sha256 as the digest."""
    from tabtrack.data.load import read_head

    run.log_dataset(
        read_head(path), context="source", source=path.resolve().as_uri(), name=path.stem, target=None,
        digest=fingerprint.sha256[:8],
    )  # fmt: skip


def _log_frames(run, X_test, y_test, train_rows) -> None:
    """The evaluated splits as MLflow dataset inputs (their digests), as `tabtrack train` logs its own."""
    for context, rows in (("training", train_rows), ("test", (X_test, y_test))):
        if rows is None or not hasattr(rows[0], "columns"):
            continue
        X, y = rows
        target = str(y.name) if y.name is not None and y.name not in X.columns else "target"
        frame = X.assign(**{target: y.to_numpy()})
        run.log_dataset(frame, context=context, source="dataframe", name=context, target=target)


def _sizes(X_test, train_rows) -> dict[str, int]:
    sizes = {"n_test_samples": len(X_test), "n_features": X_test.shape[1] if len(X_test.shape) > 1 else 1}
    if train_rows is not None:
        sizes["n_train_samples"] = len(train_rows[0])
    return sizes


def _estimator_params(model: Any) -> dict[str, Any]:
    """The model's hyperparameters as `tabtrack train` records them (a Pipeline's steps' too), plain values only."""
    from tabtrack.models.spec import hyperparameters

    try:
        values = hyperparameters(model) if hasattr(model, "get_params") else {}
    except Exception:  # a third-party get_params that needs more: its hyperparameters stay unrecorded
        return {}
    return {k: v for k, v in values.items() if isinstance(v, str | int | float | bool | type(None) | list | tuple)}


def _model_name(model: Any) -> str:
    steps = getattr(model, "steps", None)
    final = steps[-1][1] if steps else model
    return type(getattr(final, "module", final)).__name__


def _as_frame(X: Any):
    import pandas as pd

    return pd.DataFrame(X)


def _script_stem() -> str:
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    return script.stem if script is not None and script.suffix == ".py" and not _interactive() else "run"


def _interactive() -> bool:
    """A notebook or a REPL: there is no script of the user's to record (argv[0] is the kernel's launcher)."""
    return hasattr(sys, "ps1") or "ipykernel" in sys.modules
