"""infra/azure/main.bicep read offline: parsed with pycep (the parser checkov uses) and the expressions our file
uses for settings and timings evaluated, with the parameters' defaults or given values.

The Bicep CLI can't be installed here, so nothing compiles the file: `Bicep` evaluates parameters,
variables, arithmetic, conditionals, `string()`, `padLeft()`, `min()`/`max()`, `concat()` of arrays, `empty()`
and string interpolation, and returns `Unresolved("name.prop")` for what only a deployment knows (a
resource's name or id), so a test can tell the two apart. Anything else raises.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OPERATORS = {
    "add": lambda a, b: a + b,
    "substract": lambda a, b: a - b,
    "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b,
    "divide": lambda a, b: a // b,
    "modulo": lambda a, b: a % b,
}
FUNCTIONS = {
    "string": lambda v: str(v).lower() if isinstance(v, bool) else str(v),
    "min": min,
    "max": max,
    "padLeft": lambda v, n, c=" ": str(v).rjust(int(n), c),
    "concat": lambda *lists: [x for v in lists for x in v],
    "empty": lambda v: len(v) == 0,
}


@dataclass(frozen=True)
class Unresolved:
    """A value only a deployment knows, such as a resource's name."""

    ref: str

    def __str__(self) -> str:
        return f"<{self.ref}>"


class Bicep:
    def __init__(self, path: Path, params: dict[str, Any] | None = None) -> None:
        from pycep import BicepParser

        self.tree = BicepParser().parse(file_path=path)  # strict: raises on bad syntax
        self.params = {k: v.get("default") for k, v in self.tree["parameters"].items()}
        self.params.update(params or {})
        self._vars: dict[str, Any] = {}

    def var(self, name: str) -> Any:
        if name not in self._vars:
            self._vars[name] = self.value(self.tree["variables"][name]["value"])
        return self._vars[name]

    def resource(self, name: str) -> dict[str, Any]:
        return self.tree["resources"][name]

    def _name(self, name: str) -> Any:
        if name in self.params:
            return self.value(self.params[name]) if isinstance(self.params[name], dict) else self.params[name]
        if name in self.tree["variables"]:
            return self.var(name)
        return Unresolved(name)

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.value(n) for n in node]
        if isinstance(node, str):
            if "${" in node:
                return re.sub(r"\$\{(.+?)\}", lambda m: str(self.expression(m.group(1))), node)
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", node) and (
                node in self.params or node in self.tree["variables"]
            ):
                return self._name(node)
            return node
        if not isinstance(node, dict):
            return node
        if "operator" in node:
            op = node["operator"]
            if op["type"] == "conditional":
                o = op["operands"]
                return self.value(o["true_value"] if self.value(o["condition"]) else o["false_value"])
            a, b = op["operands"]["operand_1"], op["operands"].get("operand_2")
            if op["type"] == "property_accessor":
                base = self.value(a)
                return base[b] if isinstance(base, dict) and isinstance(b, str) else Unresolved(f"{a}.{b}")
            if op["type"] in OPERATORS:
                return OPERATORS[op["type"]](self.value(a), self.value(b))
            raise ValueError(f"an operator tests/bicep.py does not evaluate: {op['type']}")
        if "function" in node:
            fn = node["function"]
            args = [self.value(v) for v in fn.get("parameters", {}).values()]
            name = {"pad_left": "padLeft"}.get(fn["type"], fn["type"])
            if name not in FUNCTIONS:
                raise ValueError(f"a function tests/bicep.py does not evaluate: {fn['type']}")
            return FUNCTIONS[name](*args)
        return {k: self.value(v) for k, v in node.items()}

    def expression(self, text: str) -> Any:
        """A Bicep expression in an interpolation: Python's grammar reads ours (calls, quotes, arithmetic)."""
        resources = set(self.tree["resources"])
        unresolved: dict[str, Unresolved] = {}

        def deployed(m: re.Match[str]) -> str:  # a resource's property: known only once deployed
            if m.group(1) not in resources:
                return m.group(0)
            key = f"_u{len(unresolved)}"
            unresolved[key] = Unresolved(m.group(0))
            return key

        text = re.sub(r"\b([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_.]*)", deployed, text)
        tree = ast.parse(text, mode="eval")
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - set(FUNCTIONS) - set(unresolved)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Attribute, ast.Subscript, ast.Lambda)):
                raise ValueError(f"an expression tests/bicep.py does not evaluate: {text}")
        if len(unresolved) == 1 and text.strip() in unresolved:
            return unresolved[text.strip()]
        return eval(
            compile(tree, "<bicep>", "eval"),
            {"__builtins__": {}},
            {**FUNCTIONS, **unresolved, **{n: self._name(n) for n in names}},
        )

    def settings(self, extra: list[Any] | None = None) -> dict[str, Any]:
        """`commonSettings` (plus an app's own) as name -> value."""
        return {s["name"]: s["value"] for s in self.var("commonSettings") + (extra or [])}
