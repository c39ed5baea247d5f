"""The default install (`pip install tabtrack`, no extras) runs the default path: train, predict and serve (which
log what they score) and monitor. The extras are all installed where the suite runs, so a module only an extra brings
could hide in it; here every module outside the core dependencies' closure is hidden from the import system."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from functools import cache
from importlib import metadata

import pandas as pd
import pytest

import real_tables
from conftest import free_port, wait_for_http

pytestmark = pytest.mark.multiprocess


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def core_distributions() -> set[str]:
    """tabtrack's core requirements and theirs, all the way down (extras only where a requirement names them)."""
    from packaging.requirements import Requirement

    seen: set[tuple[str, str]] = set()
    names: set[str] = set()
    todo = [("tabtrack", "")]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        names.add(name)
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requirements:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
                continue
            todo += [(_canonical(requirement.name), wanted) for wanted in ("", *requirement.extras)]
    return names


@cache
def hidden_modules() -> list[str]:
    """Top-level modules that only distributions outside the core closure provide."""
    core = core_distributions()
    return sorted(module for module, providers in metadata.packages_distributions().items()
                  if module.isidentifier() and not any(_canonical(d) in core for d in providers))  # fmt: skip


HIDING = """
import sys

class Hidden:
    \"\"\"Each finder, blind to the hidden modules: importing one fails, and find_spec says it is absent.\"\"\"
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, attribute):
        return getattr(self.finder, attribute)

sys.meta_path[:] = [Hidden(finder) for finder in sys.meta_path]
from tabtrack.cli import main
sys.argv[0] = "tabtrack"
main()
"""


def _core_only_command(*args) -> list[str]:
    """The console script's main, with every module outside the core closure out of reach (not merely set to None
    in sys.modules: libraries that look there for torch would find None and fail where a core install would not)."""
    return [sys.executable, "-c", f"HIDDEN = set({json.dumps(hidden_modules())})\n{HIDING}", *map(str, args)]


def _tabtrack_core_only(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(_core_only_command(*args), cwd=cwd, capture_output=True, text=True, timeout=600)


def test_the_extras_are_hidden_and_the_core_is_not():
    hidden = set(hidden_modules())
    assert {"s3fs", "xgboost", "torch", "skl2onnx", "onnxruntime", "shap", "ray", "pytest"} <= hidden
    assert not {"mlflow", "sklearn", "pandas", "pyarrow", "fsspec", "tabtrack"} & hidden


def test_train_predict_and_monitor_on_the_core_install(workdir):
    path = real_tables.write(real_tables.TABLES["titanicsurvival"], workdir)
    done = _tabtrack_core_only("train", path, "-t", "survived", "--register", "titanic",
                               "--set", "drop_columns=[rownames]", cwd=workdir)  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = _tabtrack_core_only("predict", "titanic/1", path, "-o", "scored.csv", cwd=workdir)
    assert done.returncode == 0 and "cannot write" not in done.stdout + done.stderr, done.stdout + done.stderr
    logged = pd.read_parquet(workdir / ".tabtrack" / "predictions")
    assert len(logged) == len(pd.read_csv(path)) == len(pd.read_csv(workdir / "scored.csv"))
    port = free_port()
    server = subprocess.Popen(_core_only_command("serve", "titanic/1", "--port", port, "--log-predictions", "served"),
                              cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", server)
        records = json.loads(pd.read_csv(path).head(5).drop(columns=["survived"]).to_json(orient="records"))
        request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", json.dumps({"records": records}).encode(),
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:
            assert len(json.loads(response.read())["predictions"]) == 5
    finally:
        server.terminate()
        output = server.communicate(timeout=60)[0]
    assert "cannot write" not in output and len(pd.read_parquet(workdir / "served")) == 5, output
    done = _tabtrack_core_only("monitor", "titanic/1", "--no-track", cwd=workdir)
    assert done.returncode in (0, 1), done.stderr
    assert f"{len(logged)} rows from the prediction log" in done.stdout, done.stdout


def test_compare_on_the_core_install_names_the_families_it_leaves_out(workdir):
    path = real_tables.write(real_tables.TABLES["penguins"], workdir)
    done = _tabtrack_core_only("compare", path, "-t", "species", "--cv", "2", "--set", "drop_columns=[rownames]",
                               cwd=workdir)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert ("WARNING: compare leaves out lightgbm, mlp, xgboost (not installed): pip install 'tabtrack[lightgbm]'; "
            "pip install 'tabtrack[mlp]'; pip install 'tabtrack[xgboost]'") in done.stderr  # fmt: skip
    ranked = [line.split("|")[2].strip()[:10] for line in done.stdout.splitlines() if line.startswith("|    ")]
    assert sorted(ranked) == ["hist_gradi", "logistic_r", "random_for"], done.stdout  # (names cut to the width)
