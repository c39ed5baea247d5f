"""`compare --ray` and `tune --ray`: each model, or each trial, one Ray task on a cluster.

Every task opens the data itself (a shared path or an s3:// URL) and logs a complete standard run as a
child of the command's parent run on the shared tracking server: MLflow stays the record, and for `tune`
the Optuna study in its shared storage does. Ray's own task retries are off: a task whose worker dies
leaves a RUNNING run (and, for tune, a RUNNING trial) that only the driver can close, so the driver marks
the run FAILED, gives the trial back to the study and goes on. A command that ends early (Ctrl-C, SIGTERM,
an error) stops its tasks, and the driver ends the runs they had open (and FAILs their trials)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabtrack.config import ModelConfig, RunConfig
from tabtrack.data.remote import is_remote
from tabtrack.errors import ConfigError, TabtrackError
from tabtrack.models import get_spec
from tabtrack.workflows.tune import WORKER_ATTR, _optuna, _storage

log = logging.getLogger(__name__)

# What a task on another node needs from the driver's environment: the tracking server, its credentials,
# the object store's.
FORWARDED_ENV_PREFIXES = ("MLFLOW_", "AWS_", "TABTRACK_")
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
WORKER_DIED = "the Ray worker running it died"
STOPPED = "stopped with the command, which failed"


@dataclass(frozen=True)
class RaySettings:
    address: str | None = None  # None: $RAY_ADDRESS, else a new local Ray; "auto": the running cluster
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0

    @property
    def threads(self) -> int:
        """Native threads each task's model may use: its CPUs, so tasks do not oversubscribe a node."""
        return max(1, int(self.cpus_per_task))


def ray_settings(address: str | None, cpus_per_task: float, gpus_per_task: float) -> RaySettings | None:
    """The CLI's --ray [ADDRESS] (LOCAL_RAY when given bare), or None without it."""
    if address is None:
        return None
    if address.lower().endswith((".csv", ".tsv", ".parquet", ".pq")):
        raise ConfigError(f"--ray took {address!r} as its address; put DATA first, or write --ray=ADDRESS.")
    if cpus_per_task <= 0 or gpus_per_task < 0:
        raise ConfigError("--cpus-per-task must be above 0 and --gpus-per-task at least 0.")
    return RaySettings(None if address == LOCAL_RAY else address, cpus_per_task, gpus_per_task)


LOCAL_RAY = "local"  # what a bare --ray stands for


@contextlib.contextmanager
def connected(settings: RaySettings):
    """ray, initialised: joined to the cluster at settings.address (a bare --ray: $RAY_ADDRESS when set),
    else a new local Ray on this machine, even where one already runs (joining that is what `auto` does).
    After: disconnected, and a local Ray started here stopped (here rather than by Ray's exit hook, which
    first waits half a second for worker logs that log_to_driver=False never prints). A Ray the caller
    initialised is left as it was."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("--ray needs Ray: pip install 'tabtrack[ray]'.") from exc
    if ray.is_initialized():
        yield ray
        return
    address = settings.address or os.environ.get("RAY_ADDRESS") or None
    threads = {name: str(settings.threads) for name in THREAD_ENV}
    on_sigterm = signal.getsignal(signal.SIGTERM)
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        if address is None:
            # The new local Ray's workers are children of the raylet started here, so they inherit this
            # environment. A runtime_env would give them a worker pool of their own, started only when the
            # first task arrives, next to the workers Ray starts ahead for the default one.
            with _environment(threads):
                ray.init(address="local", **options)
        else:
            _answers(address)
            env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
            ray.init(address=address, runtime_env={"env_vars": {**env, **threads}}, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"cannot join the Ray cluster at {address!r}: {str(exc).splitlines()[0]}; "
            "start it with `ray start --head` (or pass --ray without an address for a local one)."
        ) from exc
    with _sigterm_through_ray(on_sigterm):
        try:
            yield ray
        finally:
            ray.shutdown()


def _answers(address: str) -> None:
    """A HOST:PORT (or ray://HOST:PORT) address accepts a connection within TABTRACK_CONNECT_TIMEOUT:
    ray.init retries one where nothing listens for minutes before it gives up."""
    from tabtrack.tracking.store import connect_error

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # `auto`, or a form Ray resolves itself
    if (why := connect_error(host.strip("[]"), int(port))) is not None:
        raise ConnectionError(f"cannot connect to it ({why})")


@contextlib.contextmanager
def _sigterm_through_ray(caller_handler):
    """SIGTERM ends the command as it ends any other (runs KILLED, exit 143), not as Ray would.

    ray.init replaces the caller's SIGTERM handler with Ray's own (its core's prints a stack dump, then exit
    1), and an exception a handler raises while ray.get or ray.wait blocks comes out of them as Ray's
    SystemExit(1), except KeyboardInterrupt. So here SIGTERM raises KeyboardInterrupt, and once the tasks
    are stopped that becomes SIGTERM's SystemExit again. The caller's handler is back after."""
    if caller_handler is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def on_sigterm(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except KeyboardInterrupt:
        if received:
            raise SystemExit(128 + received[0]) from None
        raise
    finally:
        signal.signal(signal.SIGTERM, caller_handler)


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    """os.environ with `values` set, for the processes started inside; as it was after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def shareable(config: RunConfig) -> RunConfig:
    """The config with local data paths made absolute: a task's working directory is not the caller's."""
    updates = {
        key: str(Path(value).resolve())
        for key in ("data", "test_data")
        if (value := getattr(config, key)) and not is_remote(value)
    }
    return config.model_copy(update=updates)


def with_threads(config: RunConfig, threads: int) -> RunConfig:
    """Families that take a thread count (n_jobs) get the task's, unless the user set one."""
    params = dict(config.model.params)
    if "n_jobs" in get_spec(config.model.type).defaults and "n_jobs" not in params:
        params["n_jobs"] = threads
    return config.model_copy(update={"model": ModelConfig(type=config.model.type, params=params)})


def _options(settings: RaySettings) -> dict[str, Any]:
    # max_retries=0: a retried task would start a second run and a second trial, and leave the first open.
    return {"num_cpus": settings.cpus_per_task, "num_gpus": settings.gpus_per_task, "max_retries": 0}


def _died(ray, exc: BaseException) -> bool:
    """The task's process or node is gone (as opposed to an exception the task raised)."""
    return isinstance(exc, ray.exceptions.RayError) and not isinstance(exc, ray.exceptions.RayTaskError)


def _reason(ray, exc: BaseException) -> str:
    if _died(ray, exc):
        return f"{WORKER_DIED} ({type(exc).__name__})"
    cause = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause else exc
    return f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"


# -- compare --------------------------------------------------------------------------------------------------
def _train_model(config_json: dict, parent_run_id: str, tracking_uri: str, threads: int):
    """One model of a comparison, on a Ray worker: check its inputs there, then one standard child run."""
    from tabtrack.tracking.mlflow_tracker import MlflowTracker
    from tabtrack.workflows.checks import check_training
    from tabtrack.workflows.train import run_training

    started = time.perf_counter()
    config = with_threads(RunConfig.model_validate(config_json), threads)
    checked = check_training(config)
    parent = MlflowTracker.attach(parent_run_id, tracking_uri=tracking_uri)
    result = run_training(checked.config, tracker=parent.nested(), checked=checked)
    return result, time.perf_counter() - started


def compare_on_ray(
    settings: RaySettings, configs: dict[str, RunConfig], *, parent_run_id: str, tracking_uri: str
) -> tuple[dict[str, Any], dict[str, str], dict[str, float]]:
    """Each model a Ray task; results, failures and seconds by model name, as the in-process loop gives them."""
    results: dict[str, Any] = {}
    failures: dict[str, str] = {}
    seconds: dict[str, float] = {}
    pending: dict[str, Any] = {}

    def close(status: str, error: str | None) -> None:
        if pending:  # else no task started (Ray could not be joined, say): no run to look for
            end_open_runs(tracking_uri, parent_run_id, status=status, error=error)

    with _runs_ended_if_stopped(close), connected(settings) as ray:
        task = ray.remote(_train_model).options(**_options(settings))
        for name, config in configs.items():
            config_json = shareable(config).model_dump(mode="json")
            pending[name] = task.remote(config_json, parent_run_id, tracking_uri, settings.threads)
        for name, ref in pending.items():
            try:
                results[name], seconds[name] = ray.get(ref)
            except Exception as exc:
                failures[name] = _reason(ray, exc)
                log.warning("model %s failed: %s", name, failures[name])
                if _died(ray, exc):
                    end_open_runs(tracking_uri, parent_run_id, model=name, status="FAILED", error=WORKER_DIED)
    return results, failures, seconds


@contextlib.contextmanager
def _runs_ended_if_stopped(close):
    """Whatever ends the command while its tasks run (Ctrl-C, SIGTERM, an error) ends them too: Ray stops
    the tasks of a driver that disconnects. `close(status, error)` then ends the runs they had open: KILLED
    when the command was interrupted (as its parent run is), else FAILED."""
    try:
        yield
    except BaseException as exc:
        interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
        try:
            close("KILLED" if interrupted else "FAILED", None if interrupted else STOPPED)
        except Exception:  # the original exception is what the user must see
            log.warning("could not end the runs of the stopped tasks", exc_info=True)
        raise


def end_open_runs(
    tracking_uri: str, root_run_id: str, *, status: str, error: str | None = None, model: str | None = None
) -> None:
    """End as `status` the runs below `root_run_id` that are still RUNNING (with `model`: only that model's
    run and the runs below it). A task that died or was stopped cannot end the runs it had open."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_run(root_run_id).info.experiment_id
    running = {
        run.info.run_id: run
        for run in client.search_runs([experiment], "attributes.status = 'RUNNING'", max_results=10_000)
    }

    def below_root(run_id: str) -> bool:
        run = running[run_id]
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent == root_run_id:
            return model is None or run.data.params.get("model_type") == model
        return parent in running and below_root(parent)

    for run_id in [run_id for run_id in running if run_id != root_run_id and below_root(run_id)]:
        _terminate(client, run_id, status, error)


def _terminate(client, run_id: str, status: str, error: str | None) -> None:
    if error:
        client.set_tag(run_id, "error", error)
    client.set_terminated(run_id, status=status)


# -- tune -----------------------------------------------------------------------------------------------------
def _one_trial(study_name: str, storage: str, tracking_uri: str, threads: int, worker: str) -> int:
    from tabtrack.workflows.tune import run_worker

    return run_worker(
        study_name=study_name, storage=storage, total=None, trials=1, timeout=None, tracking_uri=tracking_uri,
        threads=threads, worker=worker,
    )  # fmt: skip


def tune_on_ray(settings: RaySettings, *, storage: str, study_name: str, trials: int, tracking_uri: str) -> int:
    """`trials` Ray tasks of one trial each on the study. A task whose worker died is replaced by one more
    task, and its trial given back (see _end_trials). Returns the number of tasks whose worker died."""
    if storage.startswith("journal:"):  # a task's working directory is not the caller's
        storage = "journal:" + str(Path(storage.removeprefix("journal:")).resolve())
    pending: dict[str, Any] = {}

    def close(status: str, error: str | None) -> None:
        if pending:  # else no task is left to stop: no trial to look for
            _end_trials(storage, study_name, set(pending), tracking_uri, status=status, error=error)

    with _runs_ended_if_stopped(close), connected(settings) as ray:
        task = ray.remote(_one_trial).options(**_options(settings))

        def submit(worker: str):
            return task.remote(study_name, storage, tracking_uri, settings.threads, worker)

        pending.update({(worker := uuid.uuid4().hex[:12]): submit(worker) for _ in range(trials)})
        replacements: set[str] = set()
        died = 0
        while pending:
            ready, _ = ray.wait(list(pending.values()), num_returns=1)
            worker = next(w for w, ref in pending.items() if ref == ready[0])
            try:
                ray.get(ready[0])
            except Exception as exc:
                if not _died(ray, exc):
                    raise TabtrackError(f"a tune task failed: {_reason(ray, exc)}") from exc
                died += 1
                _end_trials(storage, study_name, {worker}, tracking_uri, status="FAILED", error=WORKER_DIED, retry=True)
                if worker not in replacements:  # one replacement task per task that died, not a chain of them
                    replacement = uuid.uuid4().hex[:12]
                    replacements.add(replacement)
                    pending[replacement] = submit(replacement)
            del pending[worker]
    return died


def _end_trials(
    storage: str,
    study_name: str,
    workers: set[str],
    tracking_uri: str,
    *,
    status: str,
    error: str | None,
    retry: bool = False,
) -> None:
    """The trials the tasks `workers` left RUNNING: FAIL in the study, their runs ended as `status`. With
    `retry` (a task's worker died), a trial's parameters are enqueued so that a replacement task tries them."""
    from mlflow import MlflowClient

    optuna = _optuna()
    client = MlflowClient(tracking_uri)
    study = optuna.load_study(study_name=study_name, storage=_storage(optuna, storage))
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if trial.user_attrs.get(WORKER_ATTR) not in workers:
            continue
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        if retry:
            log.warning("trial %d: %s; given back to the study", trial.number, WORKER_DIED)
            study.enqueue_trial(trial.params, skip_if_exists=False)
        if (run_id := trial.user_attrs.get("run_id")) and client.get_run(run_id).info.status == "RUNNING":
            _terminate(client, run_id, status, error)
