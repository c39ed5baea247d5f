"""The tracking agent: one long-lived process per installation that has already imported MLflow and
prepared model logging, and forks a fresh worker for each tracked run.

Why: a tracked run's own process would pay ~3.5 s to import MLflow and open its SQLAlchemy store and
~1.5 s of one-off skops and requirement work before logging anything, more than the whole untracked
run of a 20k-row random forest. Forked from the warm agent, a worker starts with all of that done and
records the run on another core while the main process trains and evaluates, and a compute helper
forked the same way draws the plots (the protocol is in `tabtrack.tracking.worker`). Each run gets its
own forked processes, so runs share no state and a crash ends only its own run; the worker takes the
caller's working directory, environment and `sys.path`, so it resolves the store and any credentials
exactly as the caller would.

The agent starts on the first tracked run (that run waits for it only while it imports, as it would
have imported MLflow itself), listens on a Unix socket in a private directory, and exits after
TABTRACK_AGENT_IDLE_S seconds (900) without a run. There is one per Python environment; installing or
upgrading packages, or editing tabtrack, changes the code signature, and the next run replaces an
agent started before that, so a stale agent is never used. `TABTRACK_AGENT=0` tracks in the
calling process, as does a process that has imported MLflow already and elsewhere than Linux (the
agent relies on fork).
`tabtrack agent status|stop` shows or stops it.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

AGENT_ENV = "TABTRACK_AGENT"
DIR_ENV = "TABTRACK_AGENT_DIR"
IDLE_ENV = "TABTRACK_AGENT_IDLE_S"
DEFAULT_IDLE_S = 900.0
# How long a caller waits for a starting agent to listen (it binds before its slow imports).
START_TIMEOUT_S = 15.0
STOP_CHECK_S = 0.2  # how often a serving agent looks for a stop request or its idle time

log = logging.getLogger(__name__)


def agent_enabled() -> bool:
    return os.environ.get(AGENT_ENV, "1") != "0" and sys.platform == "linux" and hasattr(os, "fork")


@dataclass(frozen=True)
class AgentPaths:
    key: str
    socket: Path
    lock: Path
    pid: Path
    log: Path

    @classmethod
    def for_key(cls, directory: Path, key: str) -> AgentPaths:
        stem = directory / f"agent-{key}"
        return cls(key, Path(f"{stem}.sock"), Path(f"{stem}.lock"), Path(f"{stem}.pid"), Path(f"{stem}.log"))


def agent_dir() -> Path:
    """A directory only this user can enter: the socket's permissions are the agent's access control."""
    configured = os.environ.get(DIR_ENV)
    if configured:
        directory = Path(configured)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        directory = Path(os.environ["XDG_RUNTIME_DIR"]) / "tabtrack"
    else:
        directory = Path(tempfile.gettempdir()) / f"tabtrack-{os.getuid()}"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{directory} must belong to this user and be private (mode 700)")
    return directory


def installation_key() -> str:
    """Names the installation the agent serves: this interpreter in this environment."""
    parts = [os.path.realpath(sys.executable), sys.prefix]
    return hashlib.sha1("\0".join(parts).encode(), usedforsecurity=False).hexdigest()[:12]


def code_signature() -> str:
    """Changes when packages are installed (pip changes site-packages' modification time) or tabtrack's
    files are edited: an agent started before then runs other code and is replaced."""
    import sysconfig

    package = Path(__file__).resolve().parents[1]
    parts = [str(max((p.stat().st_mtime_ns for p in package.rglob("*.py")), default=0))]
    for site in sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}):
        with contextlib.suppress(OSError):
            parts.append(f"{site}:{os.stat(site).st_mtime_ns}")
    return hashlib.sha1("\0".join(parts).encode(), usedforsecurity=False).hexdigest()[:12]


def agent_paths() -> AgentPaths:
    return AgentPaths.for_key(agent_dir(), installation_key())


def _agent_record(paths: AgentPaths) -> tuple[int, str] | None:
    """(pid, code signature) that the running agent wrote, if any."""
    try:
        pid, signature = paths.pid.read_text().split()
        return int(pid), signature
    except (OSError, ValueError):
        return None


# -- the caller's side -----------------------------------------------------------------------------
def connect() -> Connection | None:
    """A connection to a worker forked by the agent, starting the agent if none listens; None when no
    agent can be had (the caller then tracks in its own process)."""
    try:
        paths, signature = agent_paths(), code_signature()
        record = _agent_record(paths)
        if record is not None and record[1] != signature:
            _stop(record[0])  # started before an install or an edit: it would run the old code
        conn = _try_connect(paths.socket)
        if conn is not None:
            return conn
        _start_agent(paths, signature)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            time.sleep(0.02)
            conn = _try_connect(paths.socket)
            if conn is not None:
                return conn
        log.warning("the tabtrack tracking agent did not start (see %s); tracking in this process", paths.log)
    except OSError as exc:
        log.warning("the tabtrack tracking agent is unavailable (%s); tracking in this process", exc)
    return None


def _try_connect(path: Path) -> Connection | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    return Connection(sock.detach())


def _start_agent(paths: AgentPaths, signature: str) -> None:
    """Run the agent's starter, which forks the agent off and returns at once (nothing to reap later)."""
    package_root = str(Path(__file__).resolve().parents[2])  # importable there as here
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    with open(paths.log, "ab") as out:
        subprocess.run(
            [sys.executable, "-m", "tabtrack.tracking.agent", str(paths.socket.parent), paths.key, signature],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd="/", check=True,
            timeout=START_TIMEOUT_S,
        )  # fmt: skip


def running_agent() -> int | None:
    """The pid of this installation's agent when it is alive (asked of /proc, not of the agent: a
    connection would make it fork a worker just to say so)."""
    record = _agent_record(agent_paths())
    return record[0] if record and _is_agent(record[0]) else None


def stop_agent() -> int | None:
    """Stop this installation's agent (runs in progress carry on in their own workers)."""
    pid = running_agent()
    if pid is not None:
        _stop(pid)
    return pid


def _stop(pid: int, wait_s: float = 5.0) -> None:
    """SIGTERM the agent and wait for it to go, so that its lock and socket are free for the next."""
    if not _is_agent(pid):
        return  # the pid file outlived its agent (killed) and the number may belong to another process
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while _is_agent(pid) and time.monotonic() < deadline:  # (a zombie has no command line)
        time.sleep(0.02)


def _is_agent(pid: int) -> bool:
    try:
        return b"tabtrack.tracking.agent" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


# -- the agent -------------------------------------------------------------------------------------
def _serve_forever(paths: AgentPaths, signature: str, idle_s: float) -> None:
    import fcntl

    lock = open(paths.lock, "w")  # noqa: SIM115 - held for the agent's lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another agent for this installation is starting or running
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with contextlib.suppress(FileNotFoundError):
        paths.socket.unlink()  # left by an agent that was killed
    listener.bind(str(paths.socket))
    bound = os.stat(paths.socket).st_ino  # the file this agent made, to remove only that one at exit
    listener.listen(64)  # callers connect now and wait in the backlog while the imports below run
    paths.pid.write_text(f"{os.getpid()} {signature}")
    log.info("agent %d listening on %s", os.getpid(), paths.socket)

    serving, stopping = False, False

    def stop(*_: object) -> None:
        nonlocal stopping
        if not serving:
            raise SystemExit(0)  # still importing: nothing to finish
        # Serving: only a flag. An exception raised here could land in os.fork()'s at-fork hooks,
        # where Python ignores it, and the agent would not stop.
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _warm_up()
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
        serving = True
        listener.settimeout(STOP_CHECK_S)
        idle_since = time.monotonic()
        while not stopping:
            try:
                conn_sock, _ = listener.accept()
            except TimeoutError:
                if time.monotonic() - idle_since >= idle_s:
                    log.info("agent %d idle for %.0f s; exiting", os.getpid(), idle_s)
                    return
                continue
            idle_since = time.monotonic()
            if os.fork() == 0:
                listener.close()
                lock.close()  # the next agent may start while this run is still being recorded
                _worker_main(conn_sock)  # never returns
            conn_sock.close()
        log.info("agent %d stopped", os.getpid())
    finally:
        with contextlib.suppress(OSError):
            if os.stat(paths.socket).st_ino == bound:
                paths.socket.unlink()
        with contextlib.suppress(OSError):
            paths.pid.unlink()


def _warm_up() -> None:
    """Everything a worker would otherwise pay for on each run, done once, before any fork (and in
    this thread: a process must not fork while another thread holds an import lock)."""
    from tabtrack.tracking.worker import import_tracking

    started = time.perf_counter()
    import_tracking()
    # What is loaded now lasts the agent's life: frozen, it is out of every later collection. A worker's
    # full collections otherwise walk (and copy-on-write) the whole inherited heap: measured 0.3 s of a
    # 0.9 s log_model, and the worker's own pages grow with every page a collection touches.
    gc.collect()
    gc.freeze()
    log.info("agent %d warm in %.1f s", os.getpid(), time.perf_counter() - started)


def _worker_main(conn_sock: socket.socket) -> None:
    def serve() -> None:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # its own subprocesses are waited for as usual
        from tabtrack.tracking.worker import serve_caller

        serve_caller(Connection(conn_sock.detach()))

    _run_then_exit(serve, "tracking worker")


def main(argv: list[str]) -> None:
    """`python -m tabtrack.tracking.agent DIR KEY SIGNATURE`: fork the agent off and return at once."""
    directory, key, signature = Path(argv[0]), argv[1], argv[2]
    if os.fork() != 0:
        return
    os.setsid()
    paths = AgentPaths.for_key(directory, key)
    logging.basicConfig(
        filename=paths.log, level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
    )
    idle_s = float(os.environ.get(IDLE_ENV) or DEFAULT_IDLE_S)
    _run_then_exit(lambda: _serve_forever(paths, signature, idle_s), "agent")


def _run_then_exit(body: Callable[[], None], what: str) -> None:
    """A forked process never returns into its parent's code: it runs `body` and exits (failures logged)."""
    code = 0
    try:
        body()
    except SystemExit:
        pass
    except BaseException:
        log.exception("%s failed", what)
        code = 1
    finally:
        logging.shutdown()
        os._exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
