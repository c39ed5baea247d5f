"""Tracking in a worker process: the MLflow adapter runs in a worker forked by the tracking agent
(`tabtrack.tracking.agent`) while the main process loads data, trains and draws plots.

The main process holds a WorkerTracker that forwards each Tracker call over a socket without waiting,
except where it needs an answer (run ids, the model URI, the end of the top-level run). Nothing is
lost by not waiting: the worker runs the calls in order, its log records are re-emitted in the main
process, and an error it meets is raised in the main process at the next call that waits, where the
usual lifecycle marks the run FAILED. If the main process dies without ending its runs (killed), the
worker sees the socket close and ends them as FAILED.

A second process forked the same way, the compute helper, runs pure functions the run hands it
(`Tracker.compute_later`: drawing the plots) on another core, with matplotlib and its fonts already
loaded in the agent, while the main process scores the training split and the worker logs the model.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import mmap
import os
import pickle
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any

from tabtrack.tracking.base import PLOT_MODULES, FrameSummary, ModelArtifact, T, Tracker, preload_in_background

ROOT = 0
EXIT_TIMEOUT_S = 120
WORKER_NICENESS = 10

log = logging.getLogger(__name__)


# -- the main process's side -------------------------------------------------------------------
class WorkerDied(RuntimeError):
    """The tracking worker process exited before answering."""


class TrackingWorker:
    """The caller's end of the socket to its worker: carries calls there and answers back."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        # Written by a thread: a 20 MB model fills the socket while the worker is still busy with the calls
        # before it, and the run goes on evaluating instead of waiting for it to read.
        self._outbox: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self._answers: dict[int, tuple[bool, Any]] = {}
        self._answered = threading.Condition()
        self._requests = itertools.count(1)
        self._handles = itertools.count(ROOT + 1)
        self._dead = False
        self._helper: ComputeHelper | bool | None = False  # False: not asked for yet
        self.send(_hello("track"))
        threading.Thread(target=self._write, name="tabtrack-tracking-writer", daemon=True).start()
        threading.Thread(target=self._read, name="tabtrack-tracking-reader", daemon=True).start()

    @classmethod
    def connect(cls) -> TrackingWorker | None:
        conn = _connect_to_agent()
        return cls(conn) if conn is not None else None

    def helper(self) -> ComputeHelper | None:
        """This run's compute helper, forked by the agent on first use; None where none can be had."""
        if self._helper is False:
            self._helper = ComputeHelper.connect()
        return self._helper

    def new_handle(self) -> int:
        return next(self._handles)

    def send(self, message: tuple) -> None:
        if not self._dead:  # else the next call that waits reports it
            self._outbox.put(_dumps(message))  # pickled now: the arguments as they are at the call

    def _write(self) -> None:
        while (data := self._outbox.get()) is not None:
            if self._dead:
                continue
            try:
                _send(self._conn, data)
            except (OSError, EOFError):
                self._mark_dead()

    def ask(self, kind: str, handle: int, *args: Any) -> int:
        """Send a call whose answer `wait` collects; returns the request's number."""
        request = next(self._requests)
        self.send((kind, request, handle, *args))
        return request

    def wait(self, request: int) -> Any:
        with self._answered:
            while request not in self._answers:
                if self._dead:
                    raise WorkerDied("the tabtrack tracking worker exited before answering")
                self._answered.wait(0.5)
            ok, value = self._answers.pop(request)
        if not ok:
            raise value
        return value

    def close(self) -> None:
        """Let the worker go once it has run every call sent (it closes the socket as it exits)."""
        self.send(("exit",))
        deadline = time.monotonic() + EXIT_TIMEOUT_S
        with self._answered:
            while not self._dead and time.monotonic() < deadline:
                self._answered.wait(0.5)
        if not self._dead:
            log.warning("the tracking worker did not finish within %d s", EXIT_TIMEOUT_S)
        self._outbox.put(None)
        self._conn.close()
        if self._helper:
            self._helper.close()

    def _read(self) -> None:
        for message in _received(self._conn):
            if message[0] == "log":
                _emit(message[1])
            else:  # ("answer", request, ok, value)
                with self._answered:
                    self._answers[message[1]] = (message[2], message[3])
                    self._answered.notify_all()
        self._mark_dead()

    def _mark_dead(self) -> None:
        with self._answered:
            self._dead = True
            self._answered.notify_all()


class ComputeHelper:
    """The caller's end of the socket to its compute helper: sends functions, returns their values in
    the order they were sent."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._sent = 0
        self._answers: list[tuple[bool, Any]] = []
        self._gone = False
        self._messages = _received(conn)
        _send(conn, _dumps(_hello("compute")))

    @classmethod
    def connect(cls) -> ComputeHelper | None:
        conn = _connect_to_agent()
        try:
            return cls(conn) if conn is not None else None
        except OSError:  # the forked helper went at once: the caller computes
            return None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
        """Send `fn(*args)`; the function returned waits for its value (WorkerDied: the helper is gone)."""
        try:
            _send(self._conn, _dumps((fn, args)))
        except OSError:
            self._gone = True
        number, self._sent = self._sent, self._sent + 1

        def value() -> Any:
            while len(self._answers) <= number:
                message = None if self._gone else next(self._messages, None)
                if message is None:
                    self._gone = True
                    raise WorkerDied("the tabtrack compute helper exited before answering")
                if message[0] == "log":
                    _emit(message[1])
                else:  # ("answer", ok, value)
                    self._answers.append(message[1:])
            ok, result = self._answers[number]
            if not ok:
                raise result
            return result

        return value

    def close(self) -> None:
        self._conn.close()  # the helper sees the socket close and exits


def _connect_to_agent() -> Connection | None:
    from tabtrack.tracking.agent import agent_enabled, connect

    # The agent spares a process importing MLflow; one that has imported it already (a notebook, a
    # test) tracks in-process, so MLflow's own global state (the tracking URI) ends as it expects.
    return connect() if agent_enabled() and "mlflow" not in sys.modules else None


def _hello(role: str) -> tuple:
    """The first message: what the forked process is for ("track", "compute"), and this process's
    place (directory, environment, import path, argv) for it to take."""
    verbose = logging.getLogger("tabtrack").getEffectiveLevel() <= logging.INFO
    return (role, os.getcwd(), dict(os.environ), list(sys.path), list(sys.argv), verbose)


def _dumps(message: Any) -> memoryview:
    # Protocol 5 pickles the model's arrays without an extra copy of each.
    return ForkingPickler.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def _emit(fields: dict[str, Any]) -> None:
    """Re-emit a log record a forked process sent, as this process's own."""
    record = logging.makeLogRecord(fields)
    logging.getLogger(record.name).handle(record)


class WorkerTracker(Tracker):
    """A Tracker whose calls run in the worker, on the adapter `make_tracker` picks there."""

    def __init__(self, worker: TrackingWorker, handle: int = ROOT, *, store: tuple = (None, False)) -> None:
        self._worker = worker
        self._handle = handle
        self._store = store  # (tracking_uri, offline) for the top-level run
        self._state: dict[str, Any] = {}

    @classmethod
    def start(cls, *, tracking_uri: str | None = None, offline: bool = False) -> WorkerTracker | None:
        """A tracker on a worker forked by the agent, or None when there is no agent (track in-process).
        Nothing touches the store before the run starts."""
        worker = TrackingWorker.connect()
        return cls(worker, store=(tracking_uri, offline)) if worker is not None else None

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        self._worker.send(("call", None, self._handle, method, args, kwargs))

    def _ask(self, method: str, *args: Any, **kwargs: Any) -> int:
        return self._worker.ask("call", self._handle, method, args, kwargs)

    # -- lifecycle --------------------------------------------------------------------
    def _start(self, *, experiment: str, run_name: str, tags: dict[str, str]) -> None:
        if self._handle == ROOT:
            self._worker.send(("open", *self._store))
        self._call("_start", experiment=experiment, run_name=run_name, tags=tags)

    def _child(self, method: str, *args: Any) -> WorkerTracker:
        child = WorkerTracker(self._worker, self._worker.new_handle())
        self._worker.send(("child", child._handle, self._handle, method, args))
        return child

    def _new_child(self, run_name: str, tags: dict[str, str]) -> Tracker:
        return self._child("_new_child", run_name, tags)

    def nested(self) -> Tracker:
        return self._child("nested")

    def _end(self, status: str) -> None:
        if self._handle != ROOT:
            self._call("_end", status)
            return
        try:  # the top-level run: wait until the worker has recorded everything, then let it go
            self._worker.wait(self._ask("_end", status))
            self._state = self._worker.wait(self._worker.ask("state", self._handle))
        finally:
            self.close()

    def close(self) -> None:
        """Stop the worker (after the run ended, or when a run never started)."""
        if self._handle == ROOT:
            self._worker.close()

    # -- values and artifacts: sent without waiting -----------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        self._call("log_params", dict(params))

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        self._call("log_metrics", {k: float(v) for k, v in metrics.items()}, step=step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._call("set_tags", dict(tags))

    def log_text(self, text: str, artifact_file: str) -> None:
        self._call("log_text", text, artifact_file)

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        self._call("log_bytes", data, artifact_file)

    def log_dataset(self, frame: Any, *, context: str, source: str, name: str, target: str | None) -> None:
        # A summary, not the frame: the worker needs a sample and the digest, however big the data.
        self._call("log_dataset", FrameSummary.of(frame), context=context, source=source, name=name, target=target)

    def log_model(self, artifact: ModelArtifact) -> str | None:
        return self.log_model_later(artifact)()

    def log_model_later(self, artifact: ModelArtifact) -> Callable[[], str | None]:
        request = self._ask("log_model", artifact)
        return lambda: self._worker.wait(request)

    def flush(self) -> None:
        self._call("flush")

    def warm_up(self) -> None:
        # The worker was forked ready to log the model; the agent forks the helper that will draw the
        # plots while this process trains. Without one, this process draws them: import what that needs.
        if self._worker.helper() is None:
            preload_in_background(PLOT_MODULES)

    def compute_later(self, fn: Callable[..., T], *args: Any) -> Callable[[], T]:
        helper = self._worker.helper()
        if helper is None:
            return super().compute_later(fn, *args)
        value = helper.submit(fn, *args)

        def result() -> T:
            try:
                return value()
            except WorkerDied:  # killed (out of memory?): nothing is lost, this process computes it
                log.warning("the tabtrack compute helper exited; computing %s in this process", fn.__name__)
                return fn(*args)

        return result

    # -- what only the worker knows ---------------------------------------------------
    def _known(self, key: str) -> Any:
        if self._state.get(key) is None and not (self._handle == ROOT and "ended" in self._state):
            try:
                self._state = self._worker.wait(self._worker.ask("state", self._handle))
            except WorkerDied:
                return None
        return self._state.get(key)

    @property
    def run_id(self) -> str | None:  # type: ignore[override]
        return self._known("run_id")

    @property
    def experiment_id(self) -> str | None:  # type: ignore[override]
        return self._known("experiment_id")

    @property
    def ui_url(self) -> str | None:
        return self._known("ui_url")

    @property
    def offline_bundle(self) -> str | None:
        return self._known("offline_bundle")


def _received(conn: Connection):
    """The messages from the other end of the socket, until it closes."""
    while True:
        try:
            data = conn.recv_bytes()
            if data == _IN_MEMORY_FILE:
                data = _read_memory_file(conn)
        except (EOFError, OSError):
            return
        yield ForkingPickler.loads(data)


# Messages from this size on cross in a memory file whose descriptor goes over the socket. Through the
# socket itself, an 18 MB forest took 0.11 s, on the run's critical path: ~100 buffer-sized writes, each
# waiting for the caller's busy main thread to hand back the GIL. A memory file takes one write.
BIG_MESSAGE_BYTES = 1 << 20
_IN_MEMORY_FILE = b"tabtrack:memfd"  # never a pickle: those start with the PROTO opcode, 0x80


_send_locks: dict[int, threading.Lock] = {}


def _send(conn: Connection, data: memoryview | bytes) -> None:
    """Send one pickled message; the receiving end reads it with `_received`. One sender at a time per
    connection: a forked process's log records go out from whichever thread logged, and a message sent
    in two writes (a big one, or the memory-file notice and its descriptor) must not be split by another."""
    with _send_locks.setdefault(conn.fileno(), threading.Lock()):
        if len(data) < BIG_MESSAGE_BYTES:
            conn.send_bytes(data)
            return
        try:
            fd = os.memfd_create("tabtrack-message", os.MFD_CLOEXEC)
        except (AttributeError, OSError):  # no memory files here: the socket, slower, does the same
            conn.send_bytes(data)
            return
        try:
            view = memoryview(data).cast("B")
            while view:  # one write, unless the message is over write()'s 2 GiB
                view = view[os.write(fd, view) :]
            conn.send_bytes(_IN_MEMORY_FILE)
            with socket.socket(fileno=os.dup(conn.fileno())) as sock:
                socket.send_fds(sock, [b"\0"], [fd])
        finally:
            os.close(fd)


def _read_memory_file(conn: Connection) -> mmap.mmap | bytes:
    """The message `_send` put in a memory file: its descriptor is the next thing on the socket."""
    with socket.socket(fileno=os.dup(conn.fileno())) as sock:
        _, fds, _, _ = socket.recv_fds(sock, 1, 1)
    if not fds:
        raise EOFError("the sender went before passing its message")
    try:
        size = os.fstat(fds[0]).st_size
        return mmap.mmap(fds[0], size, access=mmap.ACCESS_READ) if size else b""
    finally:
        os.close(fds[0])


# -- the worker's side --------------------------------------------------------------------------
class _Server:
    """Runs the calls on real trackers, in the order they were sent."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.trackers: dict[int, Tracker] = {}
        self.open: list[int] = []  # started and not yet ended, oldest first
        self.broken: set[int] = set()  # never started: later calls on them are skipped
        self.error: BaseException | None = None  # not yet reported to the main process

    def serve(self) -> None:
        for message in _received(self.conn):
            if message[0] == "exit":
                return
            self.handle(message)
        self.abandon()  # the caller closed the connection without saying it was done

    def handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "open":
            self.run(ROOT, lambda: self.trackers.__setitem__(ROOT, _make_tracker(*message[1:])), starts=ROOT)
        elif kind == "child":
            new, parent, method, args = message[1:]
            if parent in self.broken:
                self.broken.add(new)
                return
            child = self.run(new, lambda: getattr(self.trackers[parent], method)(*args), starts=new)
            if child is not None:
                self.trackers[new] = child
                if method == "_new_child":
                    self.open.append(new)
        elif kind == "state":
            request, handle = message[1:]
            self.answer(request, True, self.state(handle))
        else:  # ("call", request or None, handle, method, args, kwargs)
            request, handle, method, args, kwargs = message[1:]
            if handle in self.broken:
                if request is not None:
                    self.answer(request, True, None)
                return
            if method == "_end" and args == ("FINISHED",) and self.error is not None:
                # A call the main process did not wait for failed: the run is not complete.
                args = ("FAILED",)
                self.run(handle, lambda: self.trackers[handle].set_tags({"error": _one_line(self.error)}), starts=None)
            value = self.run(handle, lambda: getattr(self.trackers[handle], method)(*args, **kwargs),
                             starts=handle if method == "_start" else None, request=request)  # fmt: skip
            if method == "_start" and handle not in self.broken:
                self.open.append(handle)
            elif method == "_end" and handle in self.open:
                self.open.remove(handle)  # ended, or failed to: either way not ours to end again
            if request is not None and value is not _FAILED:
                self.answer(request, True, value)

    def run(self, handle: int, call: Callable[[], Any], *, starts: int | None, request: int | None = None) -> Any:
        try:
            return call()
        except BaseException as exc:
            exc.add_note("(raised in the tabtrack tracking worker)\n" + "".join(traceback.format_exception(exc)))
            if starts is not None:
                self.broken.add(starts)
            if request is not None:
                self.answer(request, False, exc)
            elif self.error is None:
                self.error = exc
            return _FAILED

    def answer(self, request: int, ok: bool, value: Any) -> None:
        if self.error is not None:  # an earlier call without an answer failed: report that first
            ok, value, self.error = False, self.error, None
        _send(self.conn, _dumps(("answer", request, ok, _picklable(value) if not ok else value)))

    def state(self, handle: int) -> dict[str, Any]:
        tracker = self.trackers.get(handle)
        if tracker is None:
            return {"ended": True}
        return {
            "run_id": tracker.run_id,
            "experiment_id": tracker.experiment_id,
            "ui_url": tracker.ui_url,
            "offline_bundle": tracker.offline_bundle,
            "ended": handle not in self.open,
        }

    def abandon(self) -> None:
        """The main process is gone: end what it left open, innermost first."""
        for handle in reversed(self.open):
            tracker = self.trackers[handle]
            try:
                tracker.set_tags({"error": "the tabtrack process ended before the run did (killed?)"})
                tracker._end("FAILED")
            except Exception:
                pass


_FAILED = object()


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:4000]


def _make_tracker(tracking_uri: str | None, offline: bool) -> Tracker:
    from tabtrack.tracking import make_tracker

    return make_tracker(track=True, tracking_uri=tracking_uri, offline=offline)


def import_tracking() -> None:
    """What the agent does once, before it forks workers: import the MLflow adapter and the default
    store's modules (~3.5 s), the one-off work of a first log_model (skops, the package map), and of
    a first plot (matplotlib, its fonts)."""
    from mlflow.store.tracking import sqlalchemy_store  # noqa: F401 - the default store's ~1.6 s of imports

    import tabtrack.tracking.mlflow_tracker  # noqa: F401 - imports mlflow
    from tabtrack.evaluate.plots import warm_up_drawing
    from tabtrack.tracking.mlflow_tracker import prepare_forked_runs, prepare_model_logging

    prepare_model_logging()
    prepare_forked_runs()
    warm_up_drawing()  # for the compute helpers that draw the plots


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        copy = RuntimeError(f"{type(exc).__name__}: {exc}")
        for note in getattr(exc, "__notes__", []):
            copy.add_note(note)
        return copy


class _Forward(logging.Handler):
    """Log records go to the main process, which shows them as its own."""

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self.conn = conn

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + "".join(traceback.format_exception(*record.exc_info))
            fields = {"name": record.name, "levelno": record.levelno, "levelname": record.levelname,
                      "msg": message, "args": None, "created": record.created}  # fmt: skip
            _send(self.conn, _dumps(("log", fields)))
        except Exception:
            self.handleError(record)


def _configure_forked(conn: Connection, verbose: bool, *, niceness: int) -> None:
    with contextlib.suppress(OSError):
        os.nice(niceness)
    # The caller decides how its runs end (Ctrl-C there ends them KILLED); signals here would cut that short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    root = logging.getLogger()
    root.handlers[:] = [_Forward(conn)]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("tabtrack").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.captureWarnings(True)
    if not verbose:
        import warnings

        for noisy in ("mlflow", "alembic", "skops"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=r"mlflow(\..*)?")
        warnings.filterwarnings("ignore", category=FutureWarning)


def serve_caller(conn: Connection) -> None:
    """A forked process's life: take the caller's place (directory, environment, import path, argv:
    MLflow records the run's source from it), then run its calls as a tracking worker or a helper."""
    hello = next(_received(conn), None)
    if hello is None:
        return  # the caller went away before saying anything
    role, cwd, environ, path, argv, verbose = hello
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(environ)
    time.tzset()
    sys.path[:] = path
    sys.argv[:] = argv
    # Meant to put the run's own work first. The agent runs in a session of its own, though, and where the
    # kernel schedules sessions as groups (autogroup), niceness only orders processes within the agent's
    # group: measured, a nice-10 busy loop in another session still took a core from two busy processes.
    # Raising the group's niceness too (/proc/self/autogroup, in a session per worker) made the worker's
    # calls wait for the end of training instead, and the run got no faster (1.236x vs 1.221x over
    # untracked, RF 20k), so it is not done. Here niceness lets the helper and the worker share evenly.
    _configure_forked(conn, verbose=verbose, niceness=WORKER_NICENESS)
    if role == "compute":
        _serve_computations(conn)
    else:
        _Server(conn).serve()


def _serve_computations(conn: Connection) -> None:
    for fn, args in _received(conn):
        try:
            answer = ("answer", True, fn(*args))
        except Exception as exc:
            exc.add_note("(raised in the tabtrack compute helper)\n" + "".join(traceback.format_exception(exc)))
            answer = ("answer", False, _picklable(exc))
        _send(conn, _dumps(answer))
