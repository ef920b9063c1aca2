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
    {"_lazy", "files", "params", "wrappers", "subspace"},
    {"search"},
    {"explorer"},
    {"optimizer", "audit", "checkpoint"},
    {"viz"},
    {"rl"},
    {"sb3", "landscape"},
    {""},  # the package's own __init__: its lazy exports name every layer
]
LAYER = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def module_name(path: Path) -> str:
    parts = ["explorler_optim", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """The explorler_optim modules ``name`` imports (a package's submodule where one is named)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
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


GRAPH = {name: imports_of(name) for name in MODULES}


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


def test_the_check_sees_an_upward_import():
    # the rule itself: checkpoint (layer 3) importing rl (layer 5) is upward; rl importing checkpoint is not
    assert LAYER["rl"] > LAYER["checkpoint"] > LAYER["files"]
    assert "explorler_optim.checkpoint" in GRAPH["explorler_optim.rl.harness"]
