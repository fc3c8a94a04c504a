"""The package's shape, checked from its source: the layers of docs/design.md, no import
cycles, and the few reaches that must never happen. Imports inside functions count too:
a lazy import is still a dependency."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import brainmri

PACKAGE = Path(brainmri.__file__).parent

#: The layers of docs/design.md; a module imports only from its own layer and those below.
LAYERS = {
    1: "errors labels config files rundir card netutil provenance terminal",
    2: "images dicomcheck preprocess paths models checkpoint runtime inference augment explain metrics paired "
    "hashing groups dataset data preparation splitfile splits input_check image_stats export calibration localisation "
    "leakage_splits external_analysis",
    3: "sampling optim engine run_records train",
}
LAYER_OF = {name: layer for layer, names in LAYERS.items() for name in names.split()}


def _modules() -> dict[str, set[str]]:
    """Each module of the package -> the package modules it imports, anywhere in its body."""
    names = {p.stem for p in PACKAGE.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "brainmri":
                parts = node.module.split(".")
                found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("brainmri.")}
        graph[path.stem] = {m for m in found if m in names and m != path.stem}
    return graph


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
    assert "engine" in graph["train"] and "inference" in graph["evaluate"] and "cli" in graph["__main__"]


def test_no_import_cycles():
    graph = _modules()
    cycles = sorted(m for m in graph if m in _reach(graph, m))
    assert cycles == []


def test_every_module_has_a_layer_and_imports_only_downwards():
    graph = _modules()
    layer = {m: LAYER_OF.get(m, 4) for m in graph}
    upward = [(m, d) for m in graph for d in graph[m] if layer[d] > layer[m]]
    assert upward == []
    assert set(LAYER_OF) <= set(graph), f"LAYERS names modules that do not exist: {set(LAYER_OF) - set(graph)}"


@pytest.mark.parametrize(
    ("module", "never"),
    [
        ("serve", "train"),
        ("data", "models"),
        ("data", "checkpoint"),
        ("predict", "serve"),
        ("train", "cli"),
        ("evaluate", "cli"),
        ("loadtest", "serve"),
    ],
)
def test_forbidden_reaches(module, never):
    assert never not in _reach(_modules(), module)


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_loadtest_is_a_pure_client():
    loaded = _run("import sys, brainmri.loadtest; print(sorted(m for m in sys.modules if m.split('.')[0] == 'fastapi'"
                  " or m in ('brainmri.serve', 'starlette', 'uvicorn')))")  # fmt: skip
    assert loaded == "[]"


def test_importing_report_leaves_the_matplotlib_backend_alone():
    code = (
        "import matplotlib; matplotlib.use('svg'); import brainmri.report, brainmri.figures, brainmri.gallery;"
        " print(matplotlib.get_backend())"
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
