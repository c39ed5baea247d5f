"""Work done in a forked child while this process goes on.

The child inherits what it needs (a fitted model, say) without pickling it, runs on another core, and a crash
there cannot take this process down. Used for SHAP values (evaluate/explain.py) and for saving a model
(tracking/mlflow_io.py). Only for work that starts no OpenMP thread team: one hangs in a child forked after
OpenMP ran here (scikit-learn's own code runs in the calling thread under threadpoolctl's limit of one). Not
under Ray: its gRPC threads make a forked child unsafe.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
from collections.abc import Callable
from typing import Any


class ChildFailed(RuntimeError):
    """The child raised (the message names the exception) or died."""


def available() -> bool:
    return sys.platform == "linux" and "ray" not in sys.modules


class Forked:
    """`fn(*args, **kwargs)` started in a forked child; `result()` waits for it."""

    def __init__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        context = multiprocessing.get_context("fork")
        self._receive, send = context.Pipe(duplex=False)
        # daemon: a child still running when this process exits is ended with it
        self._child = context.Process(target=_child, args=(send, fn, args, kwargs), daemon=True)
        self._child.start()
        send.close()

    def result(self) -> Any:
        try:
            ok, result = self._receive.recv()
        except EOFError:
            self._child.join()
            raise ChildFailed(f"crashed (exit code {self._child.exitcode})") from None
        finally:
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


def _child(send, fn, args, kwargs) -> None:
    try:
        send.send((True, fn(*args, **kwargs)))
    except BaseException as exc:  # reported to the parent, which decides
        send.send((False, f"{type(exc).__name__}: {exc}"))
    finally:
        send.close()
