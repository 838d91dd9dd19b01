"""The layer map of ../shared/DESIGN.md §1 holds: the import-linter contracts in pyproject.toml pass, the
file-level import graph has no cycle, library modules import fakelite at module top, and nobody imports another
module's private names."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "fakelite"


def _module(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in PKG.rglob("*.py")}


def _internal_imports(path: Path):
    """(imported module, in_function, imported name) for every fakelite-internal import in `path`."""
    tree = ast.parse(path.read_text())
    me = _module(path)
    in_func = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
               for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("fakelite"):
                    yield a.name, id(node) in in_func, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("fakelite"):
                continue
            for a in node.names:
                full = f"{mod}.{a.name}"
                yield (full if full in MODULES else mod), id(node) in in_func, a.name


def test_import_linter_contracts_pass() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports not installed: `pip install -e '.[dev]'` installs import-linter")
    r = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_file_level_import_graph_has_no_cycle() -> None:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m, p in MODULES.items():
        for target, _, _ in _internal_imports(p):
            while target not in MODULES and "." in target:
                target = target.rsplit(".", 1)[0]
            # a package's __init__ importing its own submodules (a composition root) is not a cycle of files
            if target != m and not target.startswith(m + "."):
                graph[m].add(target)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for t in sorted(graph[n]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (c := visit(t)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            cycle = visit(n)
            assert cycle is None, " -> ".join(cycle)


def test_library_modules_import_fakelite_at_module_top() -> None:
    """Outside cli.py and commands/ (where lazy imports keep --help fast), fewer than 10 % of internal imports sit
    inside functions."""
    total = inside = 0
    where: list[str] = []
    for m, p in MODULES.items():
        if m == "fakelite.cli" or m.startswith("fakelite.commands"):
            continue
        for target, in_func, _ in _internal_imports(p):
            total += 1
            if in_func:
                inside += 1
                where.append(f"{m} -> {target}")
    assert total > 300
    assert inside / total < 0.10, f"{inside}/{total} internal imports inside functions: {where}"


def test_no_cross_module_private_imports() -> None:
    bad = [f"{m}: from {t} import {name}" for m, p in MODULES.items() for t, _, name in _internal_imports(p)
           if name and name.startswith("_") and not name.startswith("__") and t != m]
    assert not bad, bad
