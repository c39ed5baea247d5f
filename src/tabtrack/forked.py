"""One bounded job done in a forked child while this process goes on: saving a model beside its evaluation, SHAP
values beside the rest (and a crash in shap's C code costs only the explanation).

The child inherits what it needs (a fitted model, say) without pickling it and runs on another core. A fork is
safe only where nothing another thread holds (a lock, a half-written buffer) is copied into the child mid-use:
so only on Linux, without Ray (its gRPC threads), and with no other Python thread alive; a process with threads
(a Jupyter kernel, a web server, a program calling tabtrack from a worker thread) does the job in-process.
Every child has a timeout (TABTRACK_FORK_TIMEOUT, 120 s), after which it is killed and the job is done here.
Only for work that starts no OpenMP thread team: one hangs in a child forked after OpenMP ran here (the jobs
run scikit-learn's code under threadpoolctl's limit of one).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from tabtrack import settings

log = logging.getLogger(__name__)


class ChildFailed(RuntimeError):
    """The child raised (the message names the exception) or died."""


class ChildTimedOut(ChildFailed):
    """The child ran past its timeout and was killed."""


def fork_safe() -> bool:
    """Whether this process may fork now: Linux, no Ray, no other Python thread alive."""
    return sys.platform == "linux" and "ray" not in sys.modules and threading.active_count() == 1


class Forked:
    """`fn(*args, **kwargs)` started in a forked child; `result()` waits for it, up to the timeout."""

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.timeout = settings.seconds(settings.FORK_TIMEOUT)
        context = multiprocessing.get_context("fork")
        self._receive, send = context.Pipe(duplex=False)
        # daemon: a child still running when this process exits is ended with it
        self._child = context.Process(target=_child, args=(send, fn, args, kwargs), daemon=True)
        self._started = time.monotonic()
        self._child.start()
        send.close()

    def result(self) -> Any:
        """The child's result; ChildTimedOut once it ran TABTRACK_FORK_TIMEOUT seconds (it is killed), ChildFailed
        when it raised or died."""
        try:
            if not self._receive.poll(max(0.0, self._started + self.timeout - time.monotonic())):
                self.cancel()
                raise ChildTimedOut(f"still running after {self.timeout:g} s (TABTRACK_FORK_TIMEOUT); killed")
            ok, result = self._receive.recv()
        except EOFError:
            self._child.join()
            raise ChildFailed(f"crashed (exit code {self._child.exitcode})") from None
        finally:
            with contextlib.suppress(OSError):
                self._receive.close()
        self._child.join()
        if not ok:
            raise ChildFailed(result)
        return result

    def cancel(self) -> None:
        """Stop the child if it still runs (its result is no longer wanted)."""
        if self._child.is_alive():
            self._child.kill()
        self._child.join()
        with contextlib.suppress(OSError):
            self._receive.close()


class Beside:
    """`fn(*args, **kwargs)` started in a forked child where that is safe; `result()` gives its result. The job is
    done in-process instead: where forking is not safe (when the result is asked for), after the child timed out,
    and after it crashed or raised if `redo_after_crash` (else ChildFailed is raised: the crash was the risk)."""

    def __init__(self, what: str, fn: Callable[..., Any], *args: Any, redo_after_crash: bool = True, **kwargs: Any):
        self.what, self.redo_after_crash = what, redo_after_crash
        self._job = (fn, args, kwargs)
        self.child = Forked(fn, *args, **kwargs) if fork_safe() else None

    def result(self) -> Any:
        fn, args, kwargs = self._job
        if self.child is not None:
            try:
                return self.child.result()
            except ChildTimedOut as exc:
                log.warning("%s in a child process: %s; doing it in this process", self.what, exc)
            except ChildFailed as exc:
                if not self.redo_after_crash:
                    raise
                log.debug("%s failed in its child process (%s); doing it in this process", self.what, exc)
        return fn(*args, **kwargs)

    def cancel(self) -> None:
        if self.child is not None:
            self.child.cancel()


def _child(send, fn, args, kwargs) -> None:
    try:
        send.send((True, fn(*args, **kwargs)))
    except BaseException as exc:  # reported to the parent, which decides
        send.send((False, f"{type(exc).__name__}: {exc}"))
    finally:
        send.close()
