"""Imports point one way: run.py → stream.cli → web → app/commands/cluster → pipeline → outputs/identity/sources/
store/integrations → faces → types/config/logs/errors → trackers. No cycles, TYPE_CHECKING and function-level imports
included; the tracker library never imports the app.

Read from the source with ``ast`` (nothing is imported), so the test is fast and sees every import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO

# Highest layer first; a module may import its own layer and the layers after it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("run", "bench", "scripts"),
    ("stream.cli",),
    ("stream.web",),
    ("stream.app", "stream.commands", "stream.cluster"),
    ("stream.pipeline",),
    ("stream.outputs", "stream.identity", "stream.sources", "stream.demo", "stream.store", "stream.integrations"),
    ("stream.faces",),
    ("stream.types", "stream.config", "stream.logs", "stream.errors", "stream.closing"),
    ("trackers",),
)
ROOTS = ("stream", "trackers", "bench", "scripts")


def module_files() -> dict[str, Path]:
    files = {"run": REPO / "run.py"}
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path
    return files


def imported_names(path: Path, module: str) -> Iterator[str]:
    """Every module name an ``import`` statement anywhere in the file refers to (absolute)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            yield source
            yield from (f"{source}.{alias.name}" for alias in node.names)  # submodules imported by name


def import_graph() -> dict[str, set[str]]:
    """Module → the modules of ours it imports (a name resolves to the longest module it names)."""
    files = module_files()
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets = set()
        for name in imported_names(path, module):
            parts = name.split(".")
            while parts and ".".join(parts) not in files:
                parts.pop()
            if parts:
                targets.add(".".join(parts))
        targets.discard(module)
        graph[module] = {t for t in targets if not module.startswith(f"{t}.")}  # a package's own __init__
    return graph


def layer_of(module: str) -> int:
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(f"{p}.") for p in prefixes):
            return index
    raise AssertionError(f"{module}: in no layer; add it to LAYERS")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a list of modules, first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in sorted(import_graph().items())
        for target in sorted(targets)
        if layer_of(target) < layer_of(module)
    ]
    assert not upward, "\n".join(upward)


def test_the_web_layer_reads_the_pipeline_only_through_the_view() -> None:
    """stream.web never imports a pipeline stage (stream.pipeline): it reads the LiveView, the stored events
    and the metrics registry (stream.outputs), and builds the app through stream.app."""
    graph = import_graph()
    web = {m: ts for m, ts in graph.items() if m.startswith("stream.web")}
    assert web, "no stream.web modules found"
    reaching = sorted(f"{m} imports {t}" for m, ts in web.items() for t in ts if t.startswith("stream.pipeline"))
    assert not reaching, "\n".join(reaching)


def test_trackers_never_import_the_app() -> None:
    graph = import_graph()
    assert all(not t.startswith("stream") for m, ts in graph.items() if m.startswith("trackers") for t in ts)


def test_the_checks_catch_a_cycle_and_an_upward_import() -> None:
    """The checker itself: a made-up graph with a cycle and an upward edge is caught."""
    graph = {"stream.faces.a": {"stream.faces.b"}, "stream.faces.b": {"stream.faces.a"}, "trackers.x": set()}
    assert find_cycle(graph) == ["stream.faces.a", "stream.faces.b", "stream.faces.a"]
    assert layer_of("trackers.x") > layer_of("stream.pipeline.graph") > layer_of("stream.cli")
    assert find_cycle({"trackers.x": {"stream.types"}, "stream.types": set()}) is None
