"""The layout, checked so that a change that breaks it fails here:

- no import circles anywhere in the package (imports at module level or inside functions; `if TYPE_CHECKING:`
  blocks excepted, they never run);
- tabtrack_runtime, what a logged model ships and imports, imports neither MLflow nor the rest of tabtrack;
- no two modules share a name, and none is much over 400 lines;
- environment variables are named in tabtrack/settings.py only, and install hints name extras pyproject.toml has.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import tabtrack
import tabtrack_runtime

SRC = Path(tabtrack.__file__).parent.parent
PACKAGES = (Path(tabtrack.__file__).parent, Path(tabtrack_runtime.__file__).parent)
MODULES = sorted(path for package in PACKAGES for path in package.rglob("*.py"))
MAX_LINES = 400


def _name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: Path) -> set[str]:
    """The modules `path` imports when it runs (absolute imports; TYPE_CHECKING blocks left out)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for child in block.body
        for node in ast.walk(child)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from package import module`
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found


def test_no_import_circles_anywhere_in_the_package():
    modules = {_name(path): path for path in MODULES}
    graph = {name: {m for m in _runtime_imports(path) if m in modules and m != name} for name, path in modules.items()}

    def circle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return [*trail, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
        return None

    circles = [circle for name in graph if (circle := circle_from(name))]
    assert circles == [], circles[:5]
    # what the MLflow adapter, offline bundles and `sync` share lives in mlflow_io, which imports none of them
    adapter = "tabtrack.tracking.mlflow_tracker"
    assert adapter not in graph["tabtrack.tracking.offline"] | graph["tabtrack.tracking.sync"]
    assert adapter not in graph["tabtrack.tracking.mlflow_io"]


def test_every_module_imports():
    names = [_name(path) for path in MODULES if path.stem != "__main__"]
    done = subprocess.run([sys.executable, "-c", "; ".join(f"import {name}" for name in names)], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_runtime_package_imports_neither_mlflow_nor_tabtrack():
    for path in Path(tabtrack_runtime.__file__).parent.glob("*.py"):
        imported = {name.split(".")[0] for name in _runtime_imports(path)}
        # interval_pyfunc.py is the "model from code" file MLflow itself runs to load model_intervals
        allowed = {"mlflow"} if path.name == "interval_pyfunc.py" else set()
        assert not imported & ({"mlflow", "tabtrack"} - allowed), (path.name, imported)
    # and, run, it pulls in neither (a fresh, isolated interpreter; the source folder on its path)
    code = (
        f"import sys; sys.path.insert(0, {str(SRC)!r}); "
        "import tabtrack_runtime.raw_input, tabtrack_runtime.label_encoded, tabtrack_runtime.torch_mlp, "
        "tabtrack_runtime.adapters, tabtrack_runtime.intervals; print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'tabtrack')))"
    )
    done = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_no_two_modules_share_a_name_and_none_is_much_over_400_lines():
    names: dict[str, list[str]] = {}
    for path in MODULES:
        if path.stem != "__init__":
            names.setdefault(path.stem, []).append(_name(path))
    assert {stem: where for stem, where in names.items() if len(where) > 1} == {}
    long = {_name(path): n for path in MODULES if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


ENV_NAME = re.compile(r"^(TABTRACK|MLFLOW|AWS|RAY|DVC|OMP|OPENBLAS|MKL)_[A-Z0-9_]+$")


def test_environment_variables_are_named_in_settings_only():
    settings = Path(tabtrack.__file__).parent / "settings.py"
    named = {}
    for path in MODULES:
        if path == settings:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and ENV_NAME.match(node.value):
                named.setdefault(_name(path), []).append(node.value)
    assert named == {}


def test_install_hints_name_extras_that_exist():
    from tabtrack.extras import EXTRAS, install_hint

    pyproject = tomllib.loads((SRC.parent / "pyproject.toml").read_text())
    extras = set(pyproject["project"]["optional-dependencies"])
    assert set(EXTRAS.values()) <= extras
    for module in EXTRAS:
        assert re.fullmatch(r"pip install 'tabtrack\[[a-z0-9]+\]'", install_hint(module))
    # every hint in the package comes from extras.py
    # (ci_workflows.py: the workflows' own install line, which no error prints)
    hinted = [
        _name(p) for p in MODULES if "tabtrack[" in p.read_text() and p.name not in ("extras.py", "ci_workflows.py")
    ]
    assert hinted == []
