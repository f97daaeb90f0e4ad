"""The shape of `core/`, checked: no import cycle (lazy and type-only imports included) and no module,
class or function past the size a reader can hold at once."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "core"
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for path in CORE.rglob("*.py"):
        parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every core module `name` imports, wherever the import statement stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import core.x.y` names a module; `from m import f` names m
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_core_has_no_import_cycle():
    mods = _modules()
    known = set(mods)
    graph = {name: _imports(name, path, known) for name, path in mods.items()}
    # a package re-exporting its own submodules is not a cycle; a submodule importing its package is
    for name in graph:
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")}
    cycles = _cycles(graph)
    assert cycles == [], f"import cycles among core modules (move what both need into a third): {cycles}"


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_core_modules_classes_and_functions_stay_small():
    too_big = []
    for name, path in sorted(_modules().items()):
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n") + (not text.endswith("\n"))
        if lines > MAX_MODULE_LINES:
            too_big.append(f"module {name}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            size = (node.end_lineno or node.lineno) - node.lineno + 1 if hasattr(node, "lineno") else 0
            if isinstance(node, ast.ClassDef) and size > MAX_CLASS_LINES:
                too_big.append(f"class {name}.{node.name}: {size} lines")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and size > MAX_FUNCTION_LINES:
                too_big.append(f"function {name}.{node.name}: {size} lines")
    assert too_big == [], "split these (module ≤ 400 lines, class ≤ 300, function ≤ 60):\n" + "\n".join(too_big)


# (importing modules, imported modules, why): arrows that run the wrong way. A prefix ending in "." names a
# package's modules; one without names that module and its submodules.
WRONG_WAY = [
    (
        "core.ports",
        "core.retrieval",
        "the ports define what engines implement; the types they share live in the domain",
    ),
    ("core.models", "core.retrieval", "the domain leans on no engine"),
    ("core.chunks", "core.retrieval", "the domain leans on no engine"),
    ("core.logs", "core.guardrails", "logging masks PII with the neutral core.redaction, not the policy checks"),
    ("core.classify", "core.providers", "error classification needs ProviderError from core.errors, not a provider"),
    ("core.jobs", "core.embedded", "the service layer reaches a store through its port and its declared access"),
    ("core.workflows", "core.embedded", "the service layer reaches a store through its port and its declared access"),
    ("core.governance", "core.embedded", "governance reaches state through its port"),
    ("core.bootstrap", "core.entrypoints", "the composition root is called by entry points, never the reverse"),
]
ADAPTERS = CORE.parent / "adapters"


def _all_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_arrows_run_one_way():
    wrong = []
    for name, path in sorted(_modules().items()):
        for imported in sorted(_all_imports(path)):
            for src, dst, why in WRONG_WAY:
                if _under(name, src) and _under(imported, dst):
                    wrong.append(f"{name} imports {imported}: {why}")
    for path in sorted(ADAPTERS.rglob("*.py")):
        wrong += [
            f"{path.relative_to(CORE.parent)} imports {m}: what every runtime shares lives in a neutral core "
            "module (core.secrets, core.access), not in the embedded runtime"
            for m in sorted(_all_imports(path))
            if _under(m, "core.embedded")
        ]
    assert wrong == [], "\n".join(wrong)


def test_the_service_layer_never_asks_which_store_it_holds():
    """The embedded stores' grouped commits stay behind their port (`core.ports.Access`): no isinstance check on
    a store's kind, and no embedded type named, anywhere in the service layer."""
    embedded = {"SqliteJobStore", "SqliteStateStore", "SqliteQueue", "StorageThread", "Grouped", "Remote"}
    found = []
    for name, path in sorted(_modules().items()):
        if not (_under(name, "core.jobs") or _under(name, "core.workflows")):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Name) and node.id in embedded:
                found.append(f"{name}:{node.lineno} names {node.id}")
    assert found == [], "\n".join(found)
