"""`tabtrack ui`: the MLflow UI on the store that `train` writes to."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from tabtrack import settings
from tabtrack.redact import redact_uri
from tabtrack.tracking.store import is_local_store, resolve_tracking_uri


def ui_command(*, tracking_uri: str, host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", tracking_uri,
        "--default-artifact-root", (Path.cwd() / "mlruns").as_uri(),
        "--host", host, "--port", str(port),
        "--workers", "1",  # one person browsing: starts in a few seconds instead of forking four
    ]  # fmt: skip


def ui_env() -> dict[str, str]:
    """The server's environment. MLflow 3's server also starts its job runners (GenAI jobs: scorers,
    trace roll-ups), seven extra processes that each import MLflow (~250 MB and seconds of CPU apiece);
    browsing runs never uses them, so they stay off unless the user turned them on."""
    return {**settings.MLFLOW_UI_DEFAULTS, **os.environ}


def serve_ui(*, tracking_uri: str | None, host: str, port: int) -> int:
    """Run the UI in the foreground until Ctrl-C; a remote tracking server already is one."""
    uri = resolve_tracking_uri(tracking_uri)
    if not is_local_store(uri):
        print(f"{redact_uri(uri)} is a tracking server: open it in a browser.")
        return 0
    print(f"MLflow UI for {uri} at http://{host}:{port}  (Ctrl-C to stop)", flush=True)
    # Its own process group: the server forks workers, and stopping the UI must stop them all.
    server = subprocess.Popen(ui_command(tracking_uri=uri, host=host, port=port), env=ui_env(), start_new_session=True)
    try:
        return server.wait()
    except (KeyboardInterrupt, SystemExit):
        return 0
    finally:
        _stop_group(server)


def _stop_group(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
