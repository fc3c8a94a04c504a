"""The package's shape, checked from its source: the layers of docs/design.md at package
level, no import cycles, and the few reaches that must never happen. Imports inside functions
count too: a lazy import is still a dependency."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import brainmri

PACKAGE = Path(brainmri.__file__).parent

#: The layers of docs/design.md, bottom up. ``base`` is the modules at the top of the package
#: (errors, labels, config ...). A package imports only from packages of a lower layer: two
#: packages of one layer never import each other.
LAYERS = [
    "base",
    "io render models metrics",
    "data",
    "inference",
    "training evaluation serve",
    "reports bench",
    "experiments",
    "cli",
]
LAYER_OF = {name: layer for layer, names in enumerate(LAYERS) for name in names.split()}

#: The front door (``brainmri/__init__.py``) and ``python -m brainmri`` sit above every layer.
ENTRY = {"", "__main__"}


def _name(path: Path) -> str:
    """``data/prepared.py`` -> ``data.prepared``; a package's ``__init__.py`` -> the package."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, set[str]]:
    """Each module of the package (dotted, below ``brainmri``) -> the package modules it
    imports, anywhere in its body."""
    paths = {_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}

    def resolve(dotted: str) -> str | None:
        while dotted not in paths and "." in dotted:
            dotted = dotted.rpartition(".")[0]
        return dotted if dotted in paths else None

    for name, path in paths.items():
        found: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "brainmri":
                base = node.module.removeprefix("brainmri").lstrip(".")
                # ``from brainmri.data import prepared``: a module; ``from brainmri.data.prepared import kept_rows``:
                # a name, whose module is the nearest one up.
                found |= {resolve(f"{base}.{a.name}" if base else a.name) for a in node.names}
            elif isinstance(node, ast.Import):
                ours = [a.name for a in node.names if a.name.startswith("brainmri.")]
                found |= {resolve(name.removeprefix("brainmri.")) for name in ours}
        graph[name] = {m for m in found if m and m != name}
    return graph


def package_of(module: str) -> str:
    """``data.prepared`` -> ``data``; a module at the top of the package -> ``base``."""
    head = module.split(".")[0]
    return head if (PACKAGE / head).is_dir() else "base"


def _packages() -> dict[str, set[str]]:
    """Each package -> the other packages its modules import."""
    graph: dict[str, set[str]] = {}
    for module, imports in _modules().items():
        if module in ENTRY:
            continue
        pkg = package_of(module)
        graph.setdefault(pkg, set()).update(package_of(m) for m in imports if m not in ENTRY)
    return {pkg: deps - {pkg} for pkg, deps in graph.items()}


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        for nxt in graph[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def test_the_import_graph_is_read():
    graph = _modules()
    # A graph reader that found nothing would pass every rule below.
    assert "training.loop" in graph["training.run"] and "inference.forward" in graph["evaluation.evaluate"]
    assert "cli.command" in graph["__main__"] and "data.prepared" in graph["data.splits"]
    assert {"inference", "data", "io"} <= _packages()["training"]


def test_no_import_cycles():
    graph = _modules()
    cycles = sorted(m for m in graph if m in _reach(graph, m))
    assert cycles == []
    packages = _packages()
    assert sorted(p for p in packages if p in _reach(packages, p)) == []


def test_every_package_has_a_layer_and_imports_only_downwards():
    packages = _packages()
    assert set(packages) == set(LAYER_OF), "a package without a layer, or a layer naming no package"
    sideways_or_up = sorted((p, d) for p, deps in packages.items() for d in deps if LAYER_OF[d] >= LAYER_OF[p])
    assert sideways_or_up == []


def test_the_base_is_small():
    """The top of the package holds only the base every package may use; the rest sits in
    subpackages named for their job."""
    base = sorted(m for m in _modules() if package_of(m) == "base" and m not in ENTRY)
    assert base == sorted("config errors files labels netutil provenance rundir runtime terminal".split())


@pytest.mark.parametrize(
    ("package", "never"),
    [
        ("serve", "training"),
        ("data", "models"),
        ("inference", "serve"),
        ("inference", "training"),
        ("evaluation", "training"),
        ("training", "cli"),
        ("evaluation", "cli"),
    ],
)
def test_forbidden_reaches(package, never):
    assert never not in _reach(_packages(), package)


def test_the_load_test_never_reaches_the_server():
    assert not {m for m in _reach(_modules(), "bench.loadtest") if package_of(m) == "serve"}


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_loadtest_is_a_pure_client():
    loaded = _run("import sys, brainmri.bench.loadtest; print(sorted(m for m in sys.modules if m.split('.')[0] in"
                  " ('fastapi', 'starlette', 'uvicorn') or m.startswith('brainmri.serve')))")  # fmt: skip
    assert loaded == "[]"


def test_importing_report_leaves_the_matplotlib_backend_alone():
    code = (
        "import matplotlib; matplotlib.use('svg'); import brainmri.render.document, brainmri.render.figures,"
        " brainmri.evaluation.gallery; print(matplotlib.get_backend())"
    )
    assert _run(code) == "svg"


def test_the_readme_python_example_matches_the_api():
    """The README's notebook example names functions and arguments; each must exist and
    accept them, so that the example cannot drift from the code it shows."""
    import importlib
    import inspect
    import re

    readme = (PACKAGE.parents[1] / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Python API.*?```python\n(.*?)```", readme, re.S).group(1)
    tree = ast.parse(block)
    names: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                try:
                    names[alias.name] = importlib.import_module(f"{node.module}.{alias.name}")
                except ModuleNotFoundError:
                    names[alias.name] = getattr(importlib.import_module(node.module), alias.name)
    checked = 0
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        func, chain = call.func, []
        while isinstance(func, ast.Attribute):
            chain.insert(0, func.attr)
            func = func.value
        bound = isinstance(func, ast.Call) and isinstance(func.func, ast.Name)
        if bound:
            func = func.func  # Predictor(run).predict_sources: a method, looked up on the class
        if not isinstance(func, ast.Name) or func.id not in names:
            continue
        target = names[func.id]
        for attr in chain:
            target = getattr(target, attr)
        args = [None] * (len(call.args) + bound)
        kwargs = {k.arg: None for k in call.keywords if k.arg}
        inspect.signature(target).bind(*args, **kwargs)
        checked += 1
    assert checked >= 8
