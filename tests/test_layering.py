"""The product's import graph: no cycles, and dependencies that point one way.

Walks every ``import`` statement (module level and lazy ones inside functions) of the
product packages with ``ast``, so a cycle hidden behind a function-level import is
caught too. Rules (architecture.md): ``protocol`` depends on nothing of ours;
``agents`` and ``scheduler`` on ``protocol`` at most; ``daemon`` composes them all.
Outside ``agents/local_dir/`` only the composition root's kind map (``daemon.kinds``) names the
local-directory agent.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("protocol", "agents", "scheduler", "daemon")
ALLOWED = {
    "protocol": {"protocol"},
    "agents": {"agents", "protocol"},
    "scheduler": {"scheduler", "protocol"},
    "daemon": {"daemon", "agents", "scheduler", "protocol"},
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[str]:
    """The product modules ``name`` imports (resolved to modules where possible)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            # `from pkg import mod` imports the module pkg.mod when there is one
            targets = [
                f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES else module
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


GRAPH = {name: sorted(set(_imports(name, path))) for name, path in MODULES.items()}


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in GRAPH[node]:
            # a package's __init__ re-exporting its own submodules is not a cycle of ours
            if node.startswith(nxt + ".") and MODULES[nxt].name == "__init__.py":
                continue
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(GRAPH):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_walk_sees_the_product() -> None:
    assert {"agents.pipeline", "agents.tools.toolset", "daemon.app", "protocol.frames"} <= set(
        MODULES
    )
    assert "agents.tools.entities" in GRAPH["agents.tools.toolset"]


def test_no_import_cycle_among_product_modules() -> None:
    assert _cycle() is None, " -> ".join(_cycle() or [])


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_point_one_way(package: str) -> None:
    wrong = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if name.split(".")[0] == package
        for target in targets
        if target.split(".")[0] not in ALLOWED[package]
    ]
    assert wrong == []


def test_only_the_composition_root_names_the_local_directory_agent() -> None:
    wrong = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if not name.startswith("agents.local_dir") and name != "daemon.kinds"
        for target in targets
        if target.startswith("agents.local_dir")
    ]
    assert wrong == []
