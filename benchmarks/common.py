"""Helpers shared by the benchmark scripts: generated data, timing of fresh processes, tables."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd


def generated_classification(path: Path, *, rows: int, features: int, seed: int = 0) -> Path:
    """A binary classification CSV from scikit-learn's generator (no download)."""
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=rows, n_features=features, n_informative=max(2, features // 2), random_state=seed
    )
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(features)])
    frame["y"] = y
    frame.to_csv(path, index=False)
    return path


def big_parquet(path: Path, *, rows: int, features: int = 30) -> float:
    """A generated classification Parquet file; returns its in-memory size (MiB) as a frame.

    Generated in a child process: Linux carries the peak RSS of a process that starts another into the
    started one's (`ru_maxrss` after exec), so a suite that generated 1M x 30 rows itself (931 MiB peak)
    would read every child it times afterwards as at least that big."""
    code = (
        "import sys, pandas as pd\n"
        "from sklearn.datasets import make_classification\n"
        "path, rows, width = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n"
        "X, y = make_classification(n_samples=rows, n_features=width, n_informative=width // 2, random_state=0)\n"
        "frame = pd.DataFrame(X, columns=[f'x{i}' for i in range(width)]).assign(y=y)\n"
        "frame.to_parquet(path, index=False)\n"
        "print(frame.memory_usage(deep=True).sum() / 2**20)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path), str(rows), str(features)], check=True, capture_output=True, text=True
    )
    return float(result.stdout.split()[-1])


def timed_peak(args: Sequence[str], *, cwd: Path, env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one fresh process, from wait4 (the child's own maximum, though at
    least what this process had when it started the child: keep the measuring process small)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(args), cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


def time_command(args: Sequence[str], *, cwd: Path, repeats: int, env: dict | None = None) -> list[float]:
    """Wall seconds of `args` run `repeats` times as fresh processes."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed (exit {done.returncode}): {done.stderr[-3000:]}")
        times.append(time.perf_counter() - start)
    return times


def tabtrack_cmd(*args: str) -> list[str]:
    bin_dir = Path(sys.executable).parent
    exe = bin_dir / "tabtrack"
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "tabtrack", *args]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def print_table(rows: Sequence[tuple[str, str, str, str]]) -> None:
    header = ("measure", "value", "target", "ok")
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(4)]
    for row in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def bundled_csv(name: str, folder: Path) -> Path:
    """One of scikit-learn's bundled datasets (breast_cancer, wine, diabetes) as a CSV in `folder`."""
    from sklearn import datasets

    frame = getattr(datasets, f"load_{name}")(as_frame=True).frame
    frame.columns = [str(c).replace(" ", "_") for c in frame.columns]
    path = folder / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Until `url` answers 200; an error when `proc` (the server) exits first or time runs out."""
    import urllib.error
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"{' '.join(map(str, proc.args))} exited: {output}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (OSError, urllib.error.URLError):
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer in {timeout} s")
