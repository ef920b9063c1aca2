"""The package's imports run down its layers only, and no module imports itself back (issue 29).

Every ``import`` / ``from ... import`` of an ``explorler_optim`` module is read from the source with
``ast`` (those under ``if TYPE_CHECKING:`` too: mypy follows them), resolved to the module it names,
and checked against ``LAYERS``: a module may import a module of a lower layer, or one of its own
part of the package (``rl`` within ``rl``), never one above. The module graph has no cycle.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "explorler_optim"

# lowest first: each part of the package (its first dotted name after explorler_optim)
LAYERS = [
    {"_lazy", "extras", "files", "params", "wrappers", "subspace"},
    {"search"},
    {"evolution", "selection"},
    {"explorer"},
    {"optimizer", "audit", "checkpoint"},
    {"viz"},
    {"rl"},
    {"sb3", "landscape"},
    {""},  # the package's own __init__: its lazy exports name every layer
]
LAYER = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}

# The one import allowed to run up: make_search builds the steered searches by name, and their module
# subclasses search's base classes, so search imports it inside make_search, at call time. Such an
# edge is left out of the graph only while every import behind it sits in a function body.
CALL_TIME_ONLY = {("explorler_optim.search", "explorler_optim.evolution")}


def module_name(path: Path) -> str:
    parts = ["explorler_optim", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(name: str, in_functions: bool = True) -> set[str]:
    """The explorler_optim modules ``name`` imports (a package's submodule where one is named);
    with ``in_functions=False``, only the imports outside function bodies."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    if not in_functions:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                skipped |= {id(inner) for inner in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports_of(name) - {t for n, t in CALL_TIME_ONLY if n == name} for name in MODULES}


def part(name: str) -> str:
    return name.removeprefix("explorler_optim").lstrip(".").split(".")[0]


def test_every_module_has_a_layer():
    assert {part(name) for name in MODULES} <= set(LAYER), "add the new module to LAYERS"


def test_imports_run_down_the_layers():
    upward = [
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        for target in targets
        if LAYER[part(target)] > LAYER[part(name)]
        or (LAYER[part(target)] == LAYER[part(name)] and part(target) != part(name))
    ]
    assert upward == []


def test_no_import_cycle():
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return path[path.index(name) :] + [name]
        if name in done:
            return None
        for target in sorted(GRAPH[name]):
            cycle = visit(target, [*path, name])
            if cycle:
                return cycle
        done.add(name)
        return None

    cycles = [cycle for name in sorted(GRAPH) if (cycle := visit(name, []))]
    assert cycles == [], " | ".join(" -> ".join(c) for c in cycles)


def test_call_time_imports_stay_in_functions():
    for name, target in CALL_TIME_ONLY:
        assert target in imports_of(name), f"{name} no longer imports {target}: drop it from CALL_TIME_ONLY"
        assert target not in imports_of(name, in_functions=False), f"{name} imports {target} at import time"


def test_the_check_sees_an_upward_import():
    # the rule itself: checkpoint (layer 3) importing rl (layer 5) is upward; rl importing checkpoint is not
    assert LAYER["rl"] > LAYER["checkpoint"] > LAYER["files"]
    assert "explorler_optim.checkpoint" in GRAPH["explorler_optim.rl.harness"]
