"""What a logged model carries of tabtrack: tabtrack_runtime alone, and that is enough to load it where tabtrack is
not installed (an isolated interpreter in a virtual environment that has every other package of this one)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient

import real_tables
from conftest import run_tabtrack, runs_of

RUNTIME = ["tabtrack_runtime/__init__.py", "tabtrack_runtime/adapters.py", "tabtrack_runtime/interval_pyfunc.py",
           "tabtrack_runtime/intervals.py", "tabtrack_runtime/label_encoded.py", "tabtrack_runtime/raw_input.py",
           "tabtrack_runtime/torch_mlp.py"]  # fmt: skip


def _venv_without_tabtrack(folder: Path) -> Path:
    """A virtual environment that sees this one's packages but not tabtrack: its site-packages is on the path as
    a plain folder, so the `.pth` there that puts tabtrack's sources on the path is never read."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(site, "this_projects_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_a_logged_model_ships_only_the_runtime_and_loads_without_tabtrack(workdir, store_uri):
    data = real_tables.write(real_tables.TABLES["penguins"], workdir)
    done = run_tabtrack("train", data, "--target", "species", "--set", "drop_columns=[rownames]",
                        "--model", "hist_gradient_boosting", "--experiment", "runtime", cwd=workdir)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = runs_of(MlflowClient(store_uri), "runtime")

    python = _venv_without_tabtrack(workdir / "venv")
    code = (
        "import sys, pathlib, mlflow, pandas as pd\n"
        "try:\n    import tabtrack\nexcept ImportError:\n    pass\n"
        "else:\n    sys.exit('tabtrack is importable here')\n"
        f"mlflow.set_tracking_uri({store_uri!r})\n"
        f"folder = pathlib.Path(mlflow.artifacts.download_artifacts('runs:/{run.info.run_id}/model', dst_path='m'))\n"
        "print(sorted(p.relative_to(folder / 'code').as_posix() for p in (folder / 'code').rglob('*.py')))\n"
        f"print(list(mlflow.pyfunc.load_model(str(folder)).predict(pd.read_csv({str(data)!r}))[:5]))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tabtrack'))\n"
    )
    loaded = subprocess.run([python, "-I", "-c", code], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    shipped, predictions, imported = loaded.stdout.strip().splitlines()[-3:]
    assert eval(shipped) == RUNTIME  # and nothing else of tabtrack: no CLI, commands, tracking or serving
    assert len(eval(predictions)) == 5 and imported == "[]"
    import mlflow

    mlflow.set_tracking_uri(store_uri)
    expected = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model").predict(pd.read_csv(data))[:5]
    assert eval(predictions) == list(expected)
