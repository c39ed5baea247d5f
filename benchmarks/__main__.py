"""The performance suite (issue 9): one table of ratios, each measured side by side in this run.

    python -m benchmarks [--repeats 5] [--scale-rows 1000000] [--skip scale,throughput]

1. tracked / untracked `tabtrack train` (RF, generated 20,000 x 8), fresh processes, the
   tracking agent warm as after a session's first run (cold and in-process shown too).    target <= 1.15x
2. tabtrack's tracking overhead / MLflow autolog + evaluate's overhead on the same work.   target <= 0.1
3. 1,000 epochs x 4 metrics to an `mlflow server` on 127.0.0.1: one log_metric call per
   value vs tabtrack's buffered logging (median of --repeats pairs).                         target >= 50x
4. 1M x 30 rows, hist_gradient_boosting: tracked run vs bare scikit-learn; peak memory
   against the in-memory dataset size.                                                      targets <= 1.3x, <= 3x
5. `tabtrack --help` and `--version`.                                                        target <= 0.3 s
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    big_parquet,
    generated_classification,
    median,
    print_table,
    tabtrack_cmd,
    time_command,
    vm_hwm_mib,
)

Row = tuple[str, str, str, str]


def _ok(passed: bool) -> str:
    return "yes" if passed else "NO"


def overhead(work: Path, repeats: int) -> list[Row]:
    """Tracked runs as a user makes them one after another: the tracking agent is warm (the first run of
    a session starts it; that cold run and in-process tracking are measured too, for reference)."""
    data = generated_classification(work / "rf20k.csv", rows=20_000, features=8)
    train = tabtrack_cmd("train", str(data), "--target", "y", "--model", "random_forest")
    workload = [sys.executable, "-m", "benchmarks.workloads"]
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    # Warm-ups: SQLite schema creation and first-import disk reads are not charged to the first timed run.
    time_command(train, cwd=work, repeats=1)
    time_command([*workload, "autolog", str(data)], cwd=work, repeats=1, env=env)
    timings: dict[str, list[float]] = {k: [] for k in ("tracked", "untracked", "bare", "autolog", "cold", "inproc")}
    for _ in range(repeats):  # interleaved, so drift in machine load hits all alike
        timings["untracked"] += time_command([*train, "--no-track"], cwd=work, repeats=1)
        timings["tracked"] += time_command(train, cwd=work, repeats=1)
        timings["bare"] += time_command([*workload, "bare", str(data)], cwd=work, repeats=1, env=env)
        timings["autolog"] += time_command([*workload, "autolog", str(data)], cwd=work, repeats=1, env=env)
        timings["inproc"] += time_command(train, cwd=work, repeats=1, env={"TABTRACK_AGENT": "0"})
        time_command(tabtrack_cmd("agent", "stop"), cwd=work, repeats=1)
        timings["cold"] += time_command(train, cwd=work, repeats=1)  # starts the agent again
    m = {k: median(v) for k, v in timings.items()}
    ratio = m["tracked"] / m["untracked"]
    ours, theirs = m["tracked"] - m["untracked"], m["autolog"] - m["bare"]
    print(
        f"[1-2] RF 20k x 8, median of {repeats}: tabtrack tracked {m['tracked']:.2f} s (agent warm; first run with "
        f"the agent cold {m['cold']:.2f} s; tracked in-process {m['inproc']:.2f} s), --no-track {m['untracked']:.2f} s; "
        f"autolog+evaluate {m['autolog']:.2f} s, bare scikit-learn {m['bare']:.2f} s"
    )
    return [
        ("1. tracked / untracked train (RF 20k x 8)", f"{ratio:.2f}x", "<= 1.15x", _ok(ratio <= 1.15)),
        ("   ref: first run, agent cold / untracked", f"{m['cold'] / m['untracked']:.2f}x", "", ""),
        ("   ref: tracked in-process (TABTRACK_AGENT=0) / untracked", f"{m['inproc'] / m['untracked']:.2f}x", "", ""),
        (
            "2. tabtrack overhead / autolog+evaluate overhead",
            f"{ours / theirs:.3f} ({ours:.1f} s / {theirs:.1f} s)",
            "<= 0.1",
            _ok(ours / theirs <= 0.1),
        ),
    ]


def throughput(work: Path, repeats: int, epochs: int = 1000, metrics: int = 4) -> list[Row]:
    """Both loggers write the same values to the same server; only the call pattern differs. Each repeat
    is one fresh run per pattern, one after the other, so drift in the machine's disk and CPU speed (the
    per-value pattern waits on one SQLite commit per call) hits both alike."""
    import mlflow
    from mlflow import MlflowClient

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from tabtrack.tracking.mlflow_tracker import MlflowTracker
    from tabtrack.workflows.ui import ui_env

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{work / 'server.db'}", "--workers", "1"],
        cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env=ui_env(),  # as `tabtrack ui` starts it: no GenAI job-runner processes
    )  # fmt: skip
    per_call: list[float] = []
    buffered: list[float] = []
    try:
        uri = f"http://127.0.0.1:{port}"
        _wait_http(f"{uri}/health", server)
        names = [f"m{i}" for i in range(metrics)]
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("throughput")
        tracker, reader = MlflowTracker(uri), MlflowClient(uri)
        for _ in range(repeats):
            with mlflow.start_run(run_name="per_value"):
                start = time.perf_counter()
                for epoch in range(epochs):
                    for name in names:
                        mlflow.log_metric(name, epoch * 0.001, step=epoch)
                per_call.append(time.perf_counter() - start)
            with tracker.run(experiment="throughput", run_name="buffered", tags={}) as run:
                start = time.perf_counter()
                for epoch in range(epochs):
                    run.log_metrics({name: epoch * 0.001 for name in names}, step=epoch)
                run.flush()
                buffered.append(time.perf_counter() - start)
            history = reader.get_metric_history(run.run_id, "m0")
            assert len(history) == epochs, len(history)  # every value arrived
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    ratio = median(per_call) / median(buffered)
    print(
        f"[3] {epochs} epochs x {metrics} metrics, median of {repeats}: log_metric per value {median(per_call):.2f} s "
        f"({min(per_call):.1f}-{max(per_call):.1f}), buffered {median(buffered):.3f} s "
        f"({min(buffered):.2f}-{max(buffered):.2f})"
    )
    return [("3. buffered vs per-value logging to a server", f"{ratio:.0f}x faster", ">= 50x", _ok(ratio >= 50))]


def scale(work: Path, rows: int, repeats: int) -> list[Row]:
    data = work / "big.parquet"
    dataset_mb = big_parquet(data, rows=rows)  # in another process: see big_parquet
    train = tabtrack_cmd("train", str(data), "--target", "y", "--model", "hist_gradient_boosting")
    bare = [sys.executable, "-m", "benchmarks.workloads", "bare", str(data), "hist_gradient_boosting"]
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    tracked_t, bare_t, tracked_mem, bare_mem, worker_mem, worker_own = [], [], [], [], [], []
    tiny = generated_classification(work / "tiny.csv", rows=200, features=8)
    time_command(tabtrack_cmd("train", str(tiny), "--target", "y"), cwd=work, repeats=1)  # the agent is warm after it
    for _ in range(repeats):
        seconds, peak, _ = _timed_peak(bare, work, env)
        bare_t.append(seconds)
        bare_mem.append(peak)
        seconds, peak, worker_peak = _timed_peak(train, work, {}, watch_agent=True)
        tracked_t.append(seconds)
        tracked_mem.append(peak)
        worker_mem.append(worker_peak[0])
        worker_own.append(worker_peak[1])
    ratio = median(tracked_t) / median(bare_t)
    # The run's worker and helper (forked from the agent) are counted in full, pages shared with the agent included.
    tracked_total = max(t + w for t, w in zip(tracked_mem, worker_mem, strict=True))
    memory = tracked_total / dataset_mb
    tracked_own = max(t + w for t, w in zip(tracked_mem, worker_own, strict=True))
    print(
        f"[4] {rows:,} x 30 HGB, median of {repeats}: tracked {median(tracked_t):.1f} s, bare {median(bare_t):.1f} s; "
        f"peak RSS tracked {tracked_total:.0f} MiB (caller {max(tracked_mem):.0f} + its tracking worker and "
        f"compute helper {max(worker_mem):.0f}, of which their own pages {max(worker_own):.0f}), "
        f"bare {max(bare_mem):.0f} MiB, "
        f"dataset {dataset_mb:.0f} MiB"
    )
    return [
        (f"4a. tracked / bare, HGB {rows:,} x 30", f"{ratio:.2f}x", "<= 1.3x", _ok(ratio <= 1.3)),
        (
            "4b. peak memory / dataset size",
            f"{memory:.1f}x ({tracked_total:.0f} / {dataset_mb:.0f} MiB)",
            "<= 3x",
            _ok(memory <= 3),
        ),
        (
            "   ref: counting only the worker's and helper's own pages",
            f"{tracked_own / dataset_mb:.1f}x ({tracked_own:.0f} / {dataset_mb:.0f} MiB)",
            "",
            "",
        ),
        ("   ref: bare scikit-learn", f"{max(bare_mem) / dataset_mb:.1f}x", "", ""),
    ]


def startup(work: Path, repeats: int) -> list[Row]:
    help_t = median(time_command(tabtrack_cmd("--help"), cwd=work, repeats=repeats))
    version_t = median(time_command(tabtrack_cmd("--version"), cwd=work, repeats=repeats))
    return [
        ("5a. tabtrack --help", f"{help_t:.3f} s", "<= 0.3 s", _ok(help_t <= 0.3)),
        ("5b. tabtrack --version", f"{version_t:.3f} s", "<= 0.3 s", _ok(version_t <= 0.3)),
    ]


def _timed_peak(
    args: list[str], cwd: Path, env: dict, *, watch_agent: bool = False
) -> tuple[float, float, list[float]]:
    """Wall seconds and peak RSS (MiB) of one fresh process (wait4 reports the child's own maximum), and
    with `watch_agent` the processes the agent forked for it (tracking worker, compute helper): the sum of
    their peak RSS (VmHWM, read every 50 ms) and of the most pages of their own (not shared with the agent,
    read every second) seen while it runs."""
    import threading

    peaks: dict[int, list[float]] = {}  # forked pid -> [VmHWM, most pages of its own seen]
    done = threading.Event()

    def watch() -> None:
        from tabtrack.tracking.agent import _agent_record, agent_paths

        record = _agent_record(agent_paths())
        ticks = 0
        while record and not done.is_set():
            for child in _children(record[0]):
                peak = peaks.setdefault(child, [0.0, 0.0])
                peak[0] = max(peak[0], vm_hwm_mib(child))
                if ticks % 20 == 0:  # smaps_rollup walks the page tables: ~18 ms a read, so once a second
                    peak[1] = max(peak[1], _private_mib(child))
            ticks += 1
            done.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if watch_agent:
        watcher.start()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    done.set()
    if watch_agent:
        watcher.join()
    if status != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.read().decode()[-2000:]}")
    forked = [sum(peak[i] for peak in peaks.values()) for i in (0, 1)]
    return seconds, usage.ru_maxrss / 1024, forked


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _private_mib(pid: int) -> float:
    """Pages the process does not share (with the agent it was forked from): its own cost to the machine."""
    try:
        fields = dict(line.split(":") for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
        return sum(int(fields[key].split()[0]) for key in ("Private_Clean", "Private_Dirty")) / 1024
    except (OSError, KeyError, ValueError):
        return 0.0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("mlflow server exited")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scale-repeats", type=int, default=5)
    parser.add_argument("--scale-rows", type=int, default=1_000_000)
    parser.add_argument("--skip", default="", help="comma-separated: overhead, throughput, scale, startup")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "overhead" not in skip:
            rows += overhead(work, args.repeats)
        if "throughput" not in skip:
            rows += throughput(work, args.repeats)
        if "scale" not in skip:
            rows += scale(work, args.scale_rows, args.scale_repeats)
        if "startup" not in skip:
            rows += startup(work, args.repeats)
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
