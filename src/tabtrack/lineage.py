"""Where a run came from: git state, Python, OS and the versions of the packages that matter."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

# Distributions whose versions decide a run's numbers; recorded when installed.
KEY_PACKAGES = (
    "tabtrack",
    "mlflow",
    "scikit-learn",
    "numpy",
    "pandas",
    "scipy",
    "pyarrow",
    "skops",
    "xgboost",
    "lightgbm",
    "torch",
    "optuna",
)


def git_info(cwd: str | Path | None = None) -> dict[str, str]:
    """`git.commit`, `git.branch` and `git.dirty` when `cwd` is inside a git work tree with a commit."""
    cwd = str(cwd or Path.cwd())

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "git.commit": commit,
        "git.branch": git("rev-parse", "--abbrev-ref", "HEAD") or "",
        "git.dirty": str(bool(status)).lower(),
    }


def git_root(cwd: str | Path | None = None) -> Path | None:
    """The top of the git work tree holding `cwd`, or None outside one."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=str(cwd or Path.cwd()),
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return Path(done.stdout.strip()).resolve() if done.returncode == 0 and done.stdout.strip() else None


def env_info() -> dict[str, str]:
    return {
        "env.python": platform.python_version(),
        "env.os": platform.platform(),
        "tabtrack.host": socket.gethostname(),
        "tabtrack.pid": str(os.getpid()),
    }


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (a run's `tabtrack.pid` tag, a bundle's writer)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def package_versions(names: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str]:
    return {name: version for name in names if (version := installed_version(name))}


def pinned(names: tuple[str, ...]) -> list[str]:
    """`name==installed_version` for each installed distribution in `names`."""
    return [f"{name}=={version}" for name, version in package_versions(names).items()]


def requirements_txt() -> str:
    lines = [f"# python {platform.python_version()}"]
    lines += [f"{name}=={version}" for name, version in package_versions().items()]
    return "\n".join(lines) + "\n"


def entrypoint_tags(argv: Sequence[str]) -> dict[str, str]:
    """`tabtrack.entrypoint` (the script's path relative to the git root, else as run), `tabtrack.argv` (its
    arguments as JSON, secrets masked), `tabtrack.workdir` (where it ran, relative to the git root) and
    `tabtrack.argv_redacted` when something was masked. Nothing where there is no script (a notebook)."""
    from tabtrack.redact import redact_argv

    script = Path(argv[0]) if argv and argv[0] else None
    if script is None or script.suffix != ".py" or not script.is_file() or interactive():
        return {}
    arguments, masked = redact_argv(argv[1:])
    root = git_root(Path.cwd())
    absolute, cwd = script.resolve(), Path.cwd().resolve()
    tags = {
        "tabtrack.entrypoint": str(absolute.relative_to(root) if root and absolute.is_relative_to(root) else absolute),
        "tabtrack.argv": json.dumps(arguments),
        "tabtrack.workdir": str(cwd.relative_to(root) if root and cwd.is_relative_to(root) else cwd),
    }
    if masked:
        tags["tabtrack.argv_redacted"] = "true"
    return tags


def interactive() -> bool:
    """A notebook or a REPL: there is no script of the user's to record (argv[0] is the kernel's launcher)."""
    return hasattr(sys, "ps1") or "ipykernel" in sys.modules
