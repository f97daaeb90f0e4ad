"""Counts that say how the code is shaped: what a reader meets, measured the same way before and after a change.

    .venv/bin/python scripts/shape_counts.py            # a table
    .venv/bin/python scripts/shape_counts.py --json     # the same, for a diff

Constructor parameters of each lifecycle stage (self excluded, keyword-only included), definitions named
`settle*`, modules named `*ledger*`/`*budget*`, identifiers `on_terminal`, `isinstance` checks on the
embedded store's capability types under `core/jobs/`, and imports that run against the layering
(the ports or the domain importing an engine, the neutral modules importing an adapter or `core.embedded`).
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = (
    "Pipeline",
    "WorkerService",
    "ApiService",
    "Preparer",
    "Admission",
    "Attempter",
    "Finalizer",
    "Callbacks",
    "Workflows",
    "BatchLane",
    "Operator",
    "Submitter",
    "Aftermath",
)
EMBEDDED_TYPES = {
    "Grouped",
    "Remote",
    "OrderedKeys",
    "StorageRunner",
    "SqliteJobStore",
    "SqliteQueue",
    "SqliteStateStore",
}
# (importing module prefix, imported module prefix): an arrow that runs the wrong way
WRONG_WAY = [
    ("core.ports", "core.retrieval"),
    ("core.logs", "core.guardrails"),
    ("core.classify", "core.providers"),
    ("adapters.", "core.embedded"),
    ("core.jobs", "core.embedded"),
    ("core.bootstrap", "core.entrypoints"),
    ("core.workflows", "core.embedded"),
    ("core.models", "core.retrieval"),
]


def modules() -> dict[str, ast.Module]:
    found = {}
    for folder in ("core", "adapters"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = ast.parse(path.read_text(), str(path))
    return found


def constructor_params(tree: dict[str, ast.Module]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for mod in tree.values():
        for node in ast.walk(mod):
            if isinstance(node, ast.ClassDef) and node.name in STAGES:
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                        args = item.args
                        counts[node.name] = len(args.posonlyargs) + len(args.args) - 1 + len(args.kwonlyargs)
    return dict(sorted(counts.items()))


def imports(mod: ast.Module) -> list[str]:
    out = []
    for node in ast.walk(mod):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
    return out


def counts() -> dict[str, object]:
    tree = modules()
    names = [n for mod in tree.values() for n in ast.walk(mod)]
    settle = sorted(
        {
            f"{n.name}"
            for n in names
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.lstrip("_").startswith("settle")
        }
    )
    settle_defs = sum(
        1
        for n in names
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name.lstrip("_").startswith("settle")
    )
    on_terminal = sum(
        1
        for n in names
        if (isinstance(n, ast.Attribute) and n.attr == "on_terminal")
        or (isinstance(n, ast.arg) and n.arg == "on_terminal")
        or (isinstance(n, ast.keyword) and n.arg == "on_terminal")
    )
    embedded_checks = 0
    for name, mod in tree.items():
        if not name.startswith("core.jobs"):
            continue
        for n in ast.walk(mod):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "isinstance":
                kinds = n.args[1]
                elts = kinds.elts if isinstance(kinds, ast.Tuple) else [kinds]
                if any(isinstance(e, ast.Name) and e.id in EMBEDDED_TYPES for e in elts):
                    embedded_checks += 1
    wrong = sorted(
        {
            f"{name} -> {imp}"
            for name, mod in tree.items()
            for imp in imports(mod)
            for src, dst in WRONG_WAY
            if name.startswith(src) and imp.startswith(dst)
        }
    )
    files = [p.relative_to(ROOT).as_posix() for f in ("core", "adapters") for p in (ROOT / f).rglob("*.py")]
    return {
        "constructor_params": constructor_params(tree),
        "settle_definitions": settle_defs,
        "settle_names": settle,
        "ledger_modules": sorted(f for f in files if "ledger" in Path(f).stem),
        "budget_modules": sorted(f for f in files if "budget" in Path(f).stem),
        "on_terminal_mentions": on_terminal,
        "embedded_isinstance_in_core_jobs": embedded_checks,
        "wrong_way_imports": wrong,
    }


def main() -> None:
    found = counts()
    if "--json" in sys.argv:
        print(json.dumps(found, indent=2))
        return
    for key, value in found.items():
        if isinstance(value, dict):
            print(f"{key}: " + ", ".join(f"{k} {v}" for k, v in value.items()))
        elif isinstance(value, list):
            print(f"{key} ({len(value)}): " + ", ".join(value))
        else:
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
