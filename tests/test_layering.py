"""The package's layers hold: no module imports from a layer above its own, and no import cycle.

Layers, lowest first (docs/architecture.md says the same). A module may import
from its own layer or below. Imports are read from the source with `ast`, so this costs
milliseconds and imports nothing. Module-level imports are checked for both rules;
function-local imports (how optional GPU extras and heavy libraries load lazily) are
checked for the upward rule only, since they cannot make an import-time cycle.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "spotlib"

# (layer, module prefixes); a module belongs to the layer of its longest matching prefix.
LAYERS = [
    ("config/io", ["config", "config_checks", "io", "progress", "precision", "shared_lock", "live_bytes", "formatting",
                   "engine_settings"]),
    ("world/models/tokens/sampling/grading", ["world", "models", "tokens", "sampling", "engine_pool",
                                             "engine_standin", "vllm_weights", "grading", "problems",
                                             "model_paths"]),
    ("oracle/proximity/losses/train/evals/rl", [
        "oracle", "proximity", "losses", "tether", "train", "evals", "rl", "rl_engine", "grpo_math",
        "frontier", "mechanism", "claims", "rehearsal", "memory_plan", "memory_terms", "tables", "model_card"]),
    ("stages", ["stages", "workers", "plots", "launch", "nodes"]),
    ("reproduce/report/notebooks", ["reproduce", "report", "report_html", "notebook", "preflight", "calibrate",
                                    "validate", "name_checks", "job_control", "output_lock", "cli", "report_lessons",
                                    "docs_pages"]),
]


def module_name(path: Path) -> str:
    parts = ["spotlib", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    best, best_len = None, -1
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            full = f"spotlib.{prefix}"
            if (module == full or module.startswith(full + ".")) and len(full) > best_len:
                best, best_len = rank, len(full)
    return best


def _targets(module: str, path: Path, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The spotlib modules an import statement loads (a name imported from a package that is
    itself a module counts as that module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "spotlib"]
    if node.level:
        package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if base.split(".")[0] != "spotlib":
        return []
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported spotlib module, line, function-local?) for each import in the module."""
    found = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend((t, child.lineno, local) for t in _targets(module, path, child))
            visit(child, inner)

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return found


GRAPH = {m: imports(m, p) for m, p in MODULES.items()}


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return cycles


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in MODULES if m != "spotlib" and layer_of(m) is None)
    assert not unplaced, f"modules in no layer (add them to LAYERS in {Path(__file__).name}): {unplaced}"


def test_no_upward_import():
    upward = []
    for module, found in GRAPH.items():
        mine = layer_of(module)
        for target, line, _ in found:
            theirs = layer_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{MODULES[module].relative_to(PACKAGE.parent)}:{line}: {module} "
                              f"({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]})")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_no_import_cycle():
    edges = {m: {t for t, _, local in found if not local and t != m} for m, found in GRAPH.items()}
    cycles = find_cycles(edges)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_checker_sees_a_cycle_and_an_upward_import():
    """The checks can fail: a planted cycle is found, layers are ordered, imports are read."""
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    assert layer_of("spotlib.stages.sample") > layer_of("spotlib.world.pretrain")
    assert layer_of("spotlib.report_html") == len(LAYERS) - 1
    # relative imports resolve to their module; a function-local import is marked as such
    assert ("spotlib.world.families", False) in {(t, local) for t, _, local in GRAPH["spotlib.world.styles"]}
    assert ("spotlib.sampling", True) in {(t, local) for t, _, local in GRAPH["spotlib.world.evaluate"]}
