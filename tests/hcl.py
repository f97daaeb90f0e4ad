"""infra/gcp's Terraform read offline: parsed with python-hcl2 and the expressions our files use evaluated.

No provider can be downloaded here, so `terraform plan` can't tell what a variable change makes of the
environment, the timeouts or the grants. `Terraform` evaluates the small expression language infra/gcp
writes (variables, locals, resource attributes, arithmetic, min/max, tostring, string templates) with
the variables' defaults or given values, and fails loudly on anything else, so a new construct in the
files is noticed here rather than evaluated wrongly.
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path
from typing import Any

REF = re.compile(
    r"\b(var|local)\.([A-Za-z_][A-Za-z0-9_]*)((?:\[\"[^\"]+\"\]|\.[A-Za-z_][A-Za-z0-9_]*)*)"
    r"|\b(google_[a-z0-9_]+)\.([A-Za-z_][A-Za-z0-9_-]*)(?:\[\"([^\"]+)\"\])?\.([A-Za-z_][A-Za-z0-9_]*)"
)
STEP = re.compile(r'\["([^"]+)"\]|\.([A-Za-z_][A-Za-z0-9_]*)')
FUNCTIONS = {
    "min": min,
    "max": max,
    "tostring": lambda v: str(v),
    "ceil": math.ceil,
    "floor": math.floor,
    "toset": list,
}


def plain(v: Any) -> Any:
    """python-hcl2 keeps HCL's quotes on keys and drops markers of its own in: take them off keys."""
    if isinstance(v, dict):
        return {k.strip('"'): plain(x) for k, x in v.items() if not k.startswith("__")}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


class Terraform:
    def __init__(self, folder: Path, variables: dict[str, Any] | None = None) -> None:
        import hcl2

        self.blocks: dict[str, list[Any]] = {}
        for tf in sorted(folder.glob("*.tf")):
            with open(tf) as f:
                for block, items in plain(hcl2.load(f)).items():  # raises on anything that isn't valid HCL2
                    self.blocks.setdefault(block, []).extend(items)
        self.variables: dict[str, Any] = {}
        for v in self.blocks.get("variable", []):
            for name, body in v.items():
                self.variables[name] = self.value(body.get("default"))
        self.variables.update(variables or {})
        self.locals_raw = {k: v for block in self.blocks.get("locals", []) for k, v in block.items()}
        self._locals: dict[str, Any] = {}

    def resources(self, kind: str) -> dict[str, dict[str, Any]]:
        return {
            name: body
            for r in self.blocks.get("resource", [])
            for k, named in r.items()
            if k == kind
            for name, body in named.items()
        }

    def local(self, name: str) -> Any:
        if name not in self._locals:
            self._locals[name] = self.value(self.locals_raw[name])
        return self._locals[name]

    def value(self, raw: Any) -> Any:
        """An attribute as Terraform would evaluate it (lists and maps element by element)."""
        if isinstance(raw, dict):
            return {k: self.value(v) for k, v in raw.items()}
        if isinstance(raw, list):
            return [self.value(v) for v in raw]
        if not isinstance(raw, str):
            return raw
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':  # a string template
            text = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")  # HCL's escapes
            return re.sub(r"\$\{(.+?)\}", lambda m: str(self.expression(m.group(1))), text)
        if raw.startswith("${") and raw.endswith("}") and raw.count("${") == 1:
            return self.expression(raw[2:-1])
        return raw

    def expression(self, expr: str) -> Any:
        names: dict[str, Any] = {}

        def ref(m: re.Match[str]) -> str:
            if m.group(1):
                value = self.variables[m.group(2)] if m.group(1) == "var" else self.local(m.group(2))
                for step in STEP.finditer(m.group(3) or ""):  # local.x["key"].attr
                    value = value[step.group(1) or step.group(2)]
            else:
                body = self.resources(m.group(4))[m.group(5)]
                value = self.value(body[m.group(7)])
            key = f"_r{len(names)}"
            names[key] = value
            return key

        python = REF.sub(ref, expr)
        tree = ast.parse(python, mode="eval")
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS):
                raise ValueError(f"an expression tests/hcl.py does not evaluate: {expr}")
            if isinstance(node, (ast.Attribute, ast.Subscript, ast.Lambda)):
                raise ValueError(f"an expression tests/hcl.py does not evaluate: {expr}")
        return eval(compile(tree, "<hcl>", "eval"), {"__builtins__": {}}, {**FUNCTIONS, **names})
