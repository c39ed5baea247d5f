"""Fixtures: small real datasets, a temp working directory with its own SQLite MLflow store,
git repos in temp dirs, and an in-process CLI runner that goes through `tabtrack.cli.main`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import datasets

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# The installed console script, as users run it (pip puts it next to the interpreter).
TABTRACK = str(Path(sys.executable).with_name("tabtrack"))
# Every `mlflow server` the tests start (inherited): without this, each also starts seven job-runner
# processes (GenAI jobs) that import MLflow, tens of CPU-seconds per server that tabtrack never uses.
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")


def pytest_collection_modifyitems(config, items):
    """Tests marked `multiprocess` (servers, several CLI processes) run first, so on two xdist workers
    (scripts/test.sh) the longest start early and the short in-process ones fill in around them.
    (Not an xdist_group: pytest-xdist 3.8's loadgroup does not group under pytest 9.2, measured.)"""

    def heavy(item) -> bool:
        return item.get_closest_marker("multiprocess") is not None

    items[:] = [item for item in items if heavy(item)] + [item for item in items if not heavy(item)]


def _bundled(name: str) -> pd.DataFrame:
    loader = {
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "diabetes": datasets.load_diabetes,
    }[name]
    frame = loader(as_frame=True).frame
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    return frame


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """CSV files of scikit-learn's bundled datasets plus a mixed-type one with gaps."""
    root = tmp_path_factory.mktemp("data")
    for name in ("breast_cancer", "wine", "diabetes"):
        _bundled(name).to_csv(root / f"{name}.csv", index=False)
    mixed_frame().to_csv(root / "mixed.csv", index=False)
    return root


def mixed_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Numeric and categorical features, missing values in both, a binary text target."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n).astype(float),
            "income": rng.normal(50_000, 15_000, n),
            "city": rng.choice(["paris", "lyon", "nice", "lille"], n),
            "plan": rng.choice(["basic", "pro"], n),
        }
    )
    score = (frame["age"] > 45).astype(int) + (frame["plan"] == "pro").astype(int) + rng.normal(0, 0.5, n)
    frame["churn"] = np.where(score > 1, "yes", "no")
    frame.loc[rng.choice(n, 30, replace=False), "income"] = np.nan
    frame.loc[rng.choice(n, 30, replace=False), "city"] = np.nan
    return frame


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, made once per worker by MLflow itself. A new store runs MLflow's schema
    migrations (~2 s of CPU), which each of the suite's ~150 working directories would otherwise pay."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("empty_store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def copy_empty_store(template: Path, folder: Path) -> None:
    """`template` as `folder`/mlflow.db. The Default experiment (id 0) records its artifact folder as an
    absolute path when the store is made: it is pointed at `folder`, where a store made there would point."""
    import sqlite3

    target = folder / "mlflow.db"
    shutil.copyfile(template, target)
    with sqlite3.connect(target) as db:
        db.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", [str(folder / "mlruns" / "0")]
        )
    db.close()


@pytest.fixture
def workdir(tmp_path, monkeypatch, request, empty_store) -> Path:
    """A fresh working directory holding an empty default store (./mlflow.db). Tests marked `fresh_store`
    start with no store at all, as a new user does: those check that a first run makes one, or that a
    refused command makes none."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if request.node.get_closest_marker("fresh_store") is None:
        copy_empty_store(empty_store, tmp_path)
    return tmp_path


@pytest.fixture
def store_uri(workdir) -> str:
    return f"sqlite:///{workdir / 'mlflow.db'}"


@pytest.fixture
def client(store_uri):
    from mlflow import MlflowClient

    return MlflowClient(store_uri)


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        cwd=repo, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.fixture
def git_repo(workdir) -> Path:
    if shutil.which("git") is None:
        pytest.fail("git is required for these tests (.ci/run installs it)")
    git(workdir, "init", "-q", "-b", "main")
    (workdir / ".gitignore").write_text("mlflow.db\nmlruns/\n")
    return workdir


@pytest.fixture
def cli(capsys):
    """Run `tabtrack ARGS` in-process through the real entry point; returns (exit code, stdout, stderr)."""
    from tabtrack.cli import main

    def invoke(*args: str) -> tuple[int, str, str]:
        argv = sys.argv
        sys.argv = ["tabtrack", *map(str, args)]
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.argv = argv
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


def runs_of(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def parent_run(client, experiment: str):
    parents = [r for r in runs_of(client, experiment) if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    return parents[0]


def run_tabtrack(*args, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """The installed `tabtrack` console script in a subprocess, as a user runs it; MLFLOW_TRACKING_URI unset
    unless `env` sets it, so the embedded store in `cwd` is used."""
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [TABTRACK, *map(str, args)], cwd=cwd, env={**environment, **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def require(module: str):
    """Import an optional dependency, skipping the test where it is absent, except in CI, which installs all."""
    import importlib
    import os

    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is not installed; CI installs tabtrack[all]")
        pytest.skip(f"{module} not installed (pip install 'tabtrack[all]')")


@pytest.fixture
def ray_to_itself(tmp_path_factory):
    """Held by a test that runs Ray on this machine, one such test at a time across xdist workers:
    `ray stop` ends every Ray on the machine, another test's included. Skipped without Ray."""
    import fcntl
    import importlib.util

    if importlib.util.find_spec("ray") is None:  # not imported here: in-process tests in this worker run without it
        require("ray")

    # The parent of the base temp directory is shared by the xdist workers of one run.
    with open(tmp_path_factory.getbasetemp().parent / "ray.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, proc, *, timeout: float = 120, what: str = "server") -> None:
    """Poll `url` until it answers 200; fail early if `proc` exits, and after `timeout` seconds."""
    import time
    import urllib.request

    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert proc.poll() is None, f"{what} exited"
        assert time.time() < deadline, f"{what} did not start within {timeout:.0f} s"
        time.sleep(0.3)


SLOW_FOREST = ("--model", "random_forest", "--set", "model.params.n_estimators=400", "--cv", "10")


def start_long_training(
    workdir: Path, data_dir: Path, client, experiment: str, env: dict | None = None, *, model=SLOW_FOREST
):
    """A `tabtrack train` subprocess slow enough to interrupt, returned once its run exists in ./mlflow.db.
    `env` adds to the environment; `model` gives the model and CV options."""
    import os
    import subprocess
    import time

    big = workdir / "big.csv"
    frame = pd.read_csv(data_dir / "diabetes.csv")
    pd.concat([frame] * 40, ignore_index=True).to_csv(big, index=False)
    env = {
        **{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    proc = subprocess.Popen(
        [TABTRACK, "train", str(big), "--target", "target", *model, "--experiment", experiment],
        cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_as_in_a_terminal,
    )  # fmt: skip
    deadline = time.time() + 90
    while time.time() < deadline:
        exp = client.get_experiment_by_name(experiment) if (workdir / "mlflow.db").exists() else None
        if exp and client.search_runs([exp.experiment_id]):
            return proc
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.3)
    proc.kill()
    pytest.fail("the training run did not appear within 90 s")


def _as_in_a_terminal() -> None:
    """Ctrl-C's default disposition, as a command typed in a terminal has it. A suite started in the
    background (`bash .ci/run &`) inherits SIGINT ignored, and Python then leaves it ignored: the run never
    sees the signal. (That, not a lost KeyboardInterrupt, was the intermittent SIGINT failure.)"""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_mlflow_server(cwd: Path, port: int, *, backend: str, artifacts: Path, app: str | None = None, env=None):
    """A real `mlflow server` on 127.0.0.1:port (artifacts proxied), returned once /health answers.
    Stop it with stop_server(proc)."""
    import os
    import subprocess

    args = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", backend, "--artifacts-destination", str(artifacts), "--workers", "1"]  # fmt: skip
    if app:
        args += ["--app-name", app]
    proc = subprocess.Popen(
        args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    wait_for_http(f"http://127.0.0.1:{port}/health", proc, what="mlflow server")
    return proc


def stop_server(proc) -> None:
    import os
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # abrupt, like a crash: nothing is flushed gracefully
    proc.wait(timeout=30)
