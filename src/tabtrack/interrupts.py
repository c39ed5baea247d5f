"""SIGTERM ends a command or a run as Ctrl-C does: the exception unwinds through the Tracker, which marks the run
KILLED, and the process exits 143. One helper for the CLI, `tabtrack.start_run` and the Ray commands."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator


def exit_on_sigterm(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def sigterm_raises(exception: Callable[[int], BaseException] | None = None) -> Iterator[None]:
    """Within: SIGTERM raises `exception(signum)` (default SystemExit(128 + signum)); the previous handler is back
    after. Only the main thread may set a handler, so elsewhere (a notebook's worker thread) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, frame) -> None:
        raise exception(signum) if exception is not None else SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
