"""`tabtrack init`: a project whose `dvc repro` validates, splits and trains into tracked MLflow runs."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from tabtrack.config import RunConfig
from tabtrack.errors import ConfigError
from tabtrack.models.families import get_spec

# The embedded store (mlflow.db, its artifacts in mlruns/), a local server's artifacts, offline bundles.
GITIGNORE_LINES = ("/mlflow.db", "/mlruns/", "/mlartifacts/", "/.tabtrack/", "/ci-report/")
PREPARED_DIR = "data/prepared"


@dataclass
class Scaffold:
    root: Path
    written: list[Path]
    data: str  # the raw data path inside the project


def init_project(
    root: str | Path,
    *,
    target: str,
    data: str | Path | None = None,
    model: str = "random_forest",
    force: bool = False,
    ci: str | None = None,
) -> Scaffold:
    """Write params.yaml, dvc.yaml and .gitignore entries into `root`; copy `data` in when it lives outside. `ci`
    ("github" or "gitlab"): also the workflow that gates every change with `tabtrack ci`."""
    from tabtrack.commands.ci_workflows import WORKFLOWS

    if ci is not None and ci not in WORKFLOWS:
        raise ConfigError(f"unknown --ci {ci!r}; use github or gitlab.")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    spec = get_spec(model)
    existing = [name for name in ("params.yaml", "dvc.yaml") if (root / name).exists()]
    if existing and not force:
        raise ConfigError(f"{', '.join(existing)} already exist in '{root}'; pass --force to overwrite them.")
    raw = _raw_data(root, data)

    config = RunConfig(
        target=target,
        model={"type": spec.name, "params": dict(spec.defaults)},
        experiment=root.resolve().name,
    )
    params = config.model_dump(mode="json", exclude={"data", "test_data"})
    written = [_write(root / "params.yaml", _PARAMS_HEADER + yaml.safe_dump(params, sort_keys=False))]
    written.append(_write(root / "dvc.yaml", yaml.safe_dump(_pipeline(raw), sort_keys=False)))
    written.append(_append_gitignore(root / ".gitignore"))
    if ci is not None:
        path, text = WORKFLOWS[ci]
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        written.append(_write(root / path, text))
    return Scaffold(root=root, written=written, data=raw)


_PARAMS_HEADER = """\
# tabtrack config, read by every stage of dvc.yaml (tabtrack ... --config params.yaml).
# Change a value and `dvc repro` re-runs what depends on it; or try one without editing:
#   dvc exp run --set-param model.params.n_estimators=300
# Every key is described in tabtrack's README (Configuration); unknown keys are errors.
"""


def _pipeline(raw: str) -> dict:
    prepared = PREPARED_DIR
    return {
        "stages": {
            "validate": {
                "cmd": f"tabtrack validate {raw} --config params.yaml --format json -o reports/validation.json",
                "deps": [raw],
                "params": ["target", "validation", "drop_columns"],
                "outs": [{"reports/validation.json": {"cache": False}}],
            },
            "prepare": {
                "cmd": f"tabtrack prepare {raw} --config params.yaml --out-dir {prepared}",
                # validation.json as a dependency orders the stages: no split of data that failed validation.
                "deps": [raw, "reports/validation.json"],
                "params": ["target", "task", "test_size", "random_state"],
                "outs": [prepared],
            },
            "train": {
                "cmd": (
                    f"tabtrack train {prepared}/train.parquet --test-data {prepared}/test.parquet "
                    "--config params.yaml --model-dir models/model --metrics-file metrics.json"
                ),
                "deps": [prepared],
                "params": [{"params.yaml": None}],  # every key: any config change re-trains
                "outs": ["models/model"],
                "metrics": [{"metrics.json": {"cache": False}}],
            },
        }
    }


def _raw_data(root: Path, data: str | Path | None) -> str:
    """The raw data path relative to the project; a file from elsewhere is copied to data/."""
    if data is None:
        return "data/raw.csv"
    source = Path(data)
    if not source.is_file():
        raise ConfigError(f"data file '{source}' not found.")
    try:
        return source.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        destination = root / "data" / source.name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
        return f"data/{source.name}"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _append_gitignore(path: Path) -> Path:
    present = set(path.read_text().splitlines()) if path.exists() else set()
    missing = [line for line in GITIGNORE_LINES if line not in present]
    if missing:
        with path.open("a") as handle:
            handle.write("# tabtrack: the embedded MLflow store and offline state stay out of git\n")
            handle.write("\n".join(missing) + "\n")
    return path
