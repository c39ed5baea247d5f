"""What `compare --ray` and `tune --ray` share: joining (or starting) Ray, the settings of a task, and closing
what tasks that died or were stopped left open. Each model (commands/compare.py), or each trial
(commands/study.py), is one Ray task on the cluster.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabtrack import settings as env
from tabtrack.config import ModelConfig, RunConfig
from tabtrack.data.remote import is_remote
from tabtrack.errors import ConfigError
from tabtrack.models.families import get_spec

log = logging.getLogger(__name__)

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


@contextlib.contextmanager
def connected(settings: RaySettings):
    """ray, initialised: joined to the cluster at settings.address (a bare --ray: $RAY_ADDRESS when set),
    else a new local Ray on this machine, even where one already runs (joining that is what `auto` does).
    After: disconnected, and a local Ray started here stopped (here rather than by Ray's exit hook, which
    first waits half a second for worker logs that log_to_driver=False never prints). A Ray the caller
    initialised is left as it was."""
    from tabtrack.extras import require

    ray = require("ray", purpose="--ray")
    if ray.is_initialized():
        yield ray
        return
    address = settings.address or os.environ.get(env.RAY_ADDRESS) or None
    threads = {name: str(settings.threads) for name in env.THREAD_COUNTS}
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
            forwarded = {k: v for k, v in os.environ.items() if k.startswith(env.FORWARDED_PREFIXES)}
            ray.init(address=address, runtime_env={"env_vars": {**forwarded, **threads}}, **options)
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
    from tabtrack.interrupts import sigterm_raises

    received: list[int] = []

    def interrupt(signum: int) -> BaseException:
        received.append(signum)
        return KeyboardInterrupt()

    if caller_handler is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.signal(signal.SIGTERM, caller_handler)  # so that the caller's, not Ray's, is back after
    try:
        with sigterm_raises(interrupt):
            yield
    except KeyboardInterrupt:
        if received:
            raise SystemExit(128 + received[0]) from None
        raise


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


def task_options(settings: RaySettings) -> dict[str, Any]:
    # max_retries=0: a retried task would start a second run and a second trial, and leave the first open.
    return {"num_cpus": settings.cpus_per_task, "num_gpus": settings.gpus_per_task, "max_retries": 0}


def worker_died(ray, exc: BaseException) -> bool:
    """The task's process or node is gone (as opposed to an exception the task raised)."""
    return isinstance(exc, ray.exceptions.RayError) and not isinstance(exc, ray.exceptions.RayTaskError)


def reason(ray, exc: BaseException) -> str:
    if worker_died(ray, exc):
        return f"{WORKER_DIED} ({type(exc).__name__})"
    cause = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) and exc.cause else exc
    return f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"


@contextlib.contextmanager
def runs_ended_if_stopped(close):
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
        terminate(client, run_id, status, error)


def terminate(client, run_id: str, status: str, error: str | None) -> None:
    if error:
        client.set_tag(run_id, "error", error)
    client.set_terminated(run_id, status=status)
