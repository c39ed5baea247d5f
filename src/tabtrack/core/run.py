"""The own-code door: the standard run around the user's own training code.

    with tabtrack.start_run(experiment="heart-disease", data="data/heart.csv", params={"n_estimators": 200},
                            seed=42, code_paths=["src/"]) as run:
        model = my_pipeline().fit(X_train, y_train)
        result = run.evaluate(model, X_test, y_test, X_train=X_train, y_train=y_train)

`Run` is a small facade over the Recorder `tabtrack train` records through (core/recorder.py), so a run looks
the same whichever door made it. The lifecycle (FINISHED, FAILED with the traceback, KILLED) is the Tracker's.
Inside the block the run is MLflow's active run, so the user's own `mlflow.log_*` calls land in it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tabtrack.errors import TabtrackError

# The `start_run` blocks open in each thread, innermost last (MLflow's own active run is per thread too).
_open = threading.local()


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
    """The innermost `start_run` block this thread runs in (None outside one)."""
    runs = getattr(_open, "runs", [])
    return runs[-1] if runs else None


def track(fn: Callable | None = None, *, experiment: str | None = None, **start_run_kwargs: Any) -> Callable:
    """Run the decorated function inside `start_run`, its scalar arguments logged as params (secret-looking
    names masked); the body reaches the run through `tabtrack.active_run()`.

    Example:
        >>> @tabtrack.track(experiment="churn")
        ... def main(n_estimators: int = 200, learning_rate: float = 0.1): ...
    """
    fixed_params = dict(start_run_kwargs.pop("params", None) or {})

    def decorate(function: Callable) -> Callable:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            scalars = {k: v for k, v in bound.arguments.items() if isinstance(v, str | int | float | bool | Path)}
            with start_run(experiment=experiment, params={**fixed_params, **scalars}, **start_run_kwargs):
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
        self._recorder = None  # a core.recorder.Recorder while the block runs
        self._stack = contextlib.ExitStack()
        self._epochs: list[dict[str, float]] = []
        self._logged: dict[str, float] = {}  # the latest value of each metric logged with log_metrics
        self._files: list[tuple[Path, Any]] = []  # the data files and their fingerprints
        self.run_name: str = ""
        self.experiment: str = ""

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> Run:
        from tabtrack.core.recorder import Recorder, apply_seed
        from tabtrack.core.run_tags import standard_tags
        from tabtrack.data.fingerprint import fingerprint
        from tabtrack.interrupts import sigterm_raises
        from tabtrack.lineage import entrypoint_tags
        from tabtrack.tracking import make_tracker

        s = self._settings
        self._check_paths()
        self._files = [(path, fingerprint(path)) for path in s["data"]]
        self.experiment = s["experiment"] or (Path(s["data"][0]).stem if s["data"] else _script_stem())
        self.run_name = s["run_name"] or f"{_script_stem()}_{datetime.now():%Y%m%d_%H%M%S}"
        tags = standard_tags(
            kind="own_code", files=[fp for _, fp in self._files], user_tags=s["tags"],
            entrypoint=entrypoint_tags(sys.argv),
        )  # fmt: skip
        self._tracker = make_tracker(track=s["track"], tracking_uri=s["tracking_uri"], offline=s["offline"])
        run = self._stack.enter_context(
            self._tracker.run(experiment=self.experiment, run_name=self.run_name, tags=tags)
        )
        try:
            self._recorder = Recorder(run, run_name=self.run_name, experiment=self.experiment, tags=tags)
            runs = _open.__dict__.setdefault("runs", [])
            runs.append(self)
            self._stack.callback(runs.remove, self)
            self._stack.enter_context(sigterm_raises())
            self.log_params(s["params"])
            if self.seed is not None:
                apply_seed(self.seed)
                self._recorder.add_params({"random_state": self.seed})
            self._recorder.record_settings(self._recorded_settings())
            self._recorder.record_files(self._files)
        except BaseException:  # the run exists: end it (FAILED) before the error leaves `with`
            if not self._stack.__exit__(*sys.exc_info()):
                raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc is None and "test" in self._recorder.metrics:
                self._recorder.add_params({"cv_folds": 0})  # no cross_validate: CV off, as `train` records it
            if exc is None and self._epochs and self._recorder.stores_artifacts:
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
        return {split: dict(values) for split, values in self._recorder.metrics.items()} if self._recorder else {}

    def _repr_html_(self) -> str:
        """Jupyter: the metrics so far (by split, then the ones logged by hand) and the main plots, inline."""
        from tabtrack.evaluate.metrics import flatten
        from tabtrack.pages.run_page import notebook_html

        images = self._recorder.images if self._recorder else {}
        return notebook_html(
            title=f"{self.run_name} · {self.experiment}", run_id=self.run_id, ui_url=self.ui_url,
            metrics={**self._logged, **flatten(self.metrics)}, images=images,
        )  # fmt: skip

    # -- values ------------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        self._open_recorder().log_params(params)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        values = {k: float(v) for k, v in metrics.items()}
        self._open_recorder().log_metrics(values, step=step)
        self._logged.update(values)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._open_recorder().set_tags(tags)

    def log_epoch(self, epoch: int, **metrics: float) -> None:
        """One epoch's values (e.g. `train_loss`, `val_loss`), logged with `step=epoch`, buffered and sent in
        batches; the losses are drawn as `plots/loss_curve.png` when the run ends."""
        values = {k: float(v) for k, v in metrics.items()}
        self._epochs.append({"epoch": epoch, **values})
        self._open_recorder().log_metrics(values, step=epoch)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """A file, or a folder with everything in it, under `artifact_path` in the run's artifacts."""
        path = Path(path)
        if not path.exists():
            raise TabtrackError(f"log_artifact: '{path}' does not exist.")
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        base = path.parent if path.is_file() else path
        prefix = f"{artifact_path.strip('/')}/" if artifact_path else ("" if path.is_file() else f"{path.name}/")
        for file in files:
            self._open_recorder().run.log_bytes(file.read_bytes(), prefix + file.relative_to(base).as_posix())

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """A matplotlib figure as a PNG at `artifact_file` (e.g. `plots/residuals_by_region.png`)."""
        from tabtrack.evaluate.plots import render_png

        recorder = self._open_recorder()
        png = render_png(figure)
        recorder.images[artifact_file] = png
        recorder.run.log_bytes(png, artifact_file)

    # -- the standard ------------------------------------------------------------------------------
    def cross_validate(
        self, estimator: Any, X: Any, y: Any, *, cv: int = 5, task: str | None = None
    ) -> dict[str, float]:
        """K-fold CV of an unfitted estimator (stratified for classification, shuffled with the run's seed):
        one child run `fold_k` per fold, `cv_{metric}_mean` / `_std` on this run, as `tabtrack train --cv`."""
        from sklearn.base import clone

        from tabtrack.core.checks import check_rows, model_task

        if not hasattr(estimator, "fit"):
            raise TabtrackError(f"cross_validate needs an estimator with fit(); got {type(estimator).__name__}.")
        if cv < 2:
            raise TabtrackError(f"cross_validate needs cv of 2 or more folds, got {cv}.")
        X, y = check_rows(X, y, "cross_validate")
        task = model_task(estimator, task)
        classes = sorted(y.unique().tolist()) if task == "classification" else None
        scores, _ = self._open_recorder().cross_validate(
            lambda: clone(estimator), X, y, task=task, classes=classes, folds=cv,
            random_state=self.seed if self.seed is not None else 0,
        )  # fmt: skip
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
        intervals: float | None = None,
        calibration: tuple[Any, Any] | None = None,
        onnx: bool = False,
    ) -> EvaluationResult:
        """Record a fitted model as `tabtrack train` records its own: `{train,test}_*` metrics (threshold metrics
        for binary classifiers), the standard plots, the classification report, feature importance per input
        column, the data checks on the rows, `report.html`, and the model (signature, input example, pinned
        requirements, `code_paths`). `slices` names columns of X_test whose values get their own test metrics
        (`reports/slices.csv`); `explain` adds SHAP values per input column (`plots/shap_summary.png`, extra
        `shap`). `intervals=0.9` with `calibration=(X_cal, y_cal)`, rows the model was not fitted on, calibrates
        conformal intervals (regression) or sets (classification) as `tabtrack train --intervals` does: coverage
        and width on the test rows, and `model_intervals`. `onnx` adds `model_onnx` as `train --onnx` does (a step
        no converter handles is one warning). The model is fed the rows as given. Returns the metrics and model URI."""
        from tabtrack.config import RunConfig
        from tabtrack.core.checks import check_evaluation, require_onnx, require_shap
        from tabtrack.core.packaging import Packaging

        recorder = self._open_recorder()
        inputs = check_evaluation(
            model, X_test, y_test, X_train=X_train, y_train=y_train, task=task, slices=slices
        )  # fmt: skip
        if explain:
            require_shap()
        if onnx:
            require_onnx()
        name = inputs.y_test.name
        target = str(name) if name is not None and name not in getattr(inputs.X_test, "columns", ()) else None
        recorder.record_row_checks(inputs.train_rows, (inputs.X_test, inputs.y_test), target=target)
        if inputs.train_rows is not None:  # the share held out, as `tabtrack train` records test_size
            recorder.add_params(
                {"test_size": round(len(inputs.X_test) / (len(inputs.X_test) + len(inputs.train_rows[0])), 4)}
            )
        settings = self._settings
        packaging = Packaging(
            code_paths=tuple(self.code_paths), trusted_extra=tuple(settings["trusted_types"]),
            extra_requirements=tuple(settings["extra_pip_requirements"]),
        )  # fmt: skip
        defaults = RunConfig.model_fields  # the same defaults `tabtrack train` uses
        calibrated = None
        if intervals is not None or calibration is not None:
            from tabtrack.evaluate.conformal import calibrate_on

            calibrated = calibrate_on(model, calibration, level=intervals, task=inputs.task, classes=inputs.classes)
        _, model_uri = recorder.evaluate(
            model, inputs.X_test, inputs.y_test, packaging=packaging, task=inputs.task, classes=inputs.classes,
            model_name=model_name or _model_name(model), train_rows=inputs.train_rows,
            random_state=self.seed if self.seed is not None else 0, thresholds=defaults["thresholds"].default,
            train_metrics_rows=defaults["train_metrics_rows"].default, target=target, slices=slices, explain=explain,
            calibration=calibrated, onnx=onnx,
        )  # fmt: skip
        recorder.record_splits(
            inputs.train_rows, (inputs.X_test, inputs.y_test), target=target,
            data_file=self._files[0][1] if self._files else None,
        )  # fmt: skip
        trusted = recorder.tags.get("tabtrack.trusted_types", "")
        return EvaluationResult(
            metrics=self.metrics,
            model_uri=model_uri,
            run_id=self.run_id,
            trusted_types=trusted.split(",") if trusted else [],
        )

    # -- internals ---------------------------------------------------------------------------------
    def _open_recorder(self):
        if self._recorder is None or self not in getattr(_open, "runs", []):
            raise TabtrackError("the run is not open; use it inside `with tabtrack.start_run(...) as run:`.")
        return self._recorder

    def _recorded_settings(self) -> dict[str, Any]:
        """What `config/resolved.yaml` holds for an own-code run: the arguments of `start_run`."""
        s = self._settings
        return {
            "experiment": self.experiment, "run_name": self.run_name, "data": [str(p) for p in s["data"]],
            "params": s["params"], "seed": s["seed"], "tags": s["tags"], "code_paths": s["code_paths"],
            "trusted_types": s["trusted_types"], "extra_pip_requirements": s["extra_pip_requirements"],
        }  # fmt: skip

    def _log_loss_curve(self) -> None:
        from tabtrack.evaluate.plots import loss_curve_plot, render_png

        history = [{k: v for k, v in epoch.items() if k != "epoch"} for epoch in self._epochs]
        if not any("loss" in key for record in history for key in record):
            return
        png = render_png(loss_curve_plot(history, best_epoch=0, model=self.run_name))
        self._recorder.run.log_bytes(png, "plots/loss_curve.png")

    def _check_paths(self) -> None:
        for path in self._settings["data"]:
            if not path.is_file():
                raise TabtrackError(
                    f"start_run(data=...): '{path}' is not a file; pass the data file(s) your code reads."
                )
        for path in self.code_paths:
            if not Path(path).exists():
                raise TabtrackError(f"start_run(code_paths=...): '{path}' does not exist.")


def _model_name(model: Any) -> str:
    steps = getattr(model, "steps", None)
    final = steps[-1][1] if steps else model
    return type(getattr(final, "module", final)).__name__


def _script_stem() -> str:
    from tabtrack.lineage import interactive

    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    return script.stem if script is not None and script.suffix == ".py" and not interactive() else "run"
