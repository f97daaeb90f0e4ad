"""JSON Schema, the subset structured output uses: checking a schema at submit and a reply against it.

The subset is what the providers' structured modes accept (OpenAI's structured outputs, Anthropic's and Bedrock's
tool input schemas): types, properties, required, additionalProperties, items, enum, const, the numeric, string
and array bounds, pattern, anyOf/oneOf/allOf and local `$ref`s into `$defs`. A schema using any other keyword is
refused at submit, naming it, so a reply is never judged by rules this module would silently skip.
`tests/test_structured_output.py` checks these verdicts against the reference `jsonschema` library.
"""

from __future__ import annotations

import re
from typing import Any

ANNOTATIONS = {"$schema", "$id", "$comment", "title", "description", "default", "examples", "format", "deprecated"}
KEYWORDS = {
    "type", "properties", "required", "additionalProperties", "items", "enum", "const", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength", "pattern", "minItems", "maxItems",
    "uniqueItems", "minProperties", "maxProperties", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions",
} | ANNOTATIONS  # fmt: skip
TYPES = {"object", "array", "string", "integer", "number", "boolean", "null"}
MAX_VIOLATIONS = 10


def schema_problems(schema: Any, where: str = "schema") -> list[str]:
    """What this module cannot judge in `schema` (an unknown keyword, a bad type name or `$ref`), as messages."""
    if not isinstance(schema, dict):
        return [] if isinstance(schema, bool) else [f"{where} must be an object (or true/false)"]
    out = [
        f"{where}: '{k}' is not supported (supported: {', '.join(sorted(KEYWORDS - ANNOTATIONS))})"
        for k in schema
        if k not in KEYWORDS
    ]
    types = schema.get("type", [])
    for t in [types] if isinstance(types, str) else types:
        if t not in TYPES:
            out.append(f"{where}.type: {t!r} is not a JSON type")
    if "$ref" in schema and not re.fullmatch(r"#/(\$defs|definitions)/[^/]+", str(schema["$ref"])):
        out.append(f"{where}.$ref: only local references to #/$defs/NAME are supported")
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except (re.error, TypeError) as e:
            out.append(f"{where}.pattern: {e}")
    for key in ("properties", "$defs", "definitions"):
        for name, sub in (schema.get(key) or {}).items():
            out += schema_problems(sub, f"{where}.{key}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            out += schema_problems(schema[key], f"{where}.{key}")
    for key in ("anyOf", "oneOf", "allOf"):
        for i, sub in enumerate(schema.get(key) or []):
            out += schema_problems(sub, f"{where}.{key}[{i}]")
    return out


def violations(instance: Any, schema: Any) -> list[str]:
    """Where `instance` breaks `schema`, as `$.path: what` messages (the first few)."""
    out: list[str] = []
    _check(instance, schema, schema, "$", out)
    return out[:MAX_VIOLATIONS]


def _type_ok(value: Any, t: str) -> bool:
    if t == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if t == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    kinds = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    return isinstance(value, kinds[t])


def _check(value: Any, schema: Any, root: dict[str, Any], path: str, out: list[str]) -> None:
    if schema is True or len(out) >= MAX_VIOLATIONS:
        return
    if schema is False:
        out.append(f"{path}: no value is allowed here")
        return
    if "$ref" in schema:
        _, key, name = schema["$ref"].split("/", 2)
        _check(value, root[key][name], root, path, out)
    types = schema.get("type")
    if types is not None:
        allowed = [types] if isinstance(types, str) else types
        if not any(_type_ok(value, t) for t in allowed):
            out.append(f"{path}: expected {' or '.join(allowed)}, got {_kind(value)}")
            return
    if "enum" in schema and not any(_equal(value, e) for e in schema["enum"]):
        out.append(f"{path}: {_short(value)} is not one of {schema['enum']}")
    if "const" in schema and not _equal(value, schema["const"]):
        out.append(f"{path}: must be {schema['const']!r}")
    _combinators(value, schema, root, path, out)
    if isinstance(value, dict):
        _object(value, schema, root, path, out)
    elif isinstance(value, list):
        _array(value, schema, root, path, out)
    elif isinstance(value, str):
        _string(value, schema, path, out)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _number(value, schema, path, out)


def _combinators(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str, out: list[str]) -> None:
    for sub in schema.get("allOf", []):
        _check(value, sub, root, path, out)
    if "anyOf" in schema and not any(not _fails(value, s, root, path) for s in schema["anyOf"]):
        out.append(f"{path}: matches none of anyOf's {len(schema['anyOf'])} schemas")
    if "oneOf" in schema:
        matched = sum(1 for s in schema["oneOf"] if not _fails(value, s, root, path))
        if matched != 1:
            out.append(f"{path}: matches {matched} of oneOf's schemas, not exactly one")


def _fails(value: Any, schema: Any, root: dict[str, Any], path: str) -> bool:
    probe: list[str] = []
    _check(value, schema, root, path, probe)
    return bool(probe)


def _object(value: dict[str, Any], schema: dict[str, Any], root: dict[str, Any], path: str, out: list[str]) -> None:
    props = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in value:
            out.append(f"{path}: '{name}' is required")
    for name, v in value.items():
        if name in props:
            _check(v, props[name], root, f"{path}.{name}", out)
        elif schema.get("additionalProperties") is False:
            out.append(f"{path}: '{name}' is not an allowed property")
        elif isinstance(schema.get("additionalProperties"), dict):
            _check(v, schema["additionalProperties"], root, f"{path}.{name}", out)
    if len(value) < schema.get("minProperties", 0):
        out.append(f"{path}: at least {schema['minProperties']} properties are required")
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        out.append(f"{path}: at most {schema['maxProperties']} properties are allowed")


def _array(value: list[Any], schema: dict[str, Any], root: dict[str, Any], path: str, out: list[str]) -> None:
    if "items" in schema:
        for i, v in enumerate(value):
            _check(v, schema["items"], root, f"{path}[{i}]", out)
    if len(value) < schema.get("minItems", 0):
        out.append(f"{path}: at least {schema['minItems']} items are required, got {len(value)}")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        out.append(f"{path}: at most {schema['maxItems']} items are allowed, got {len(value)}")
    if schema.get("uniqueItems") and any(_equal(a, b) for i, a in enumerate(value) for b in value[i + 1 :]):
        out.append(f"{path}: items must be unique")


def _string(value: str, schema: dict[str, Any], path: str, out: list[str]) -> None:
    if len(value) < schema.get("minLength", 0):
        out.append(f"{path}: at least {schema['minLength']} characters are required")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        out.append(f"{path}: at most {schema['maxLength']} characters are allowed")
    if "pattern" in schema and re.search(schema["pattern"], value) is None:
        out.append(f"{path}: {_short(value)} does not match {schema['pattern']!r}")


def _number(value: float, schema: dict[str, Any], path: str, out: list[str]) -> None:
    bounds = (
        ("minimum", lambda b: value >= b, "at least"),
        ("maximum", lambda b: value <= b, "at most"),
        ("exclusiveMinimum", lambda b: value > b, "more than"),
        ("exclusiveMaximum", lambda b: value < b, "less than"),
        ("multipleOf", lambda b: (value / b).is_integer(), "a multiple of"),
    )
    for key, holds, words in bounds:
        if key in schema and not holds(schema[key]):
            out.append(f"{path}: must be {words} {schema[key]}, got {value}")


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 and 1.0 are equal, true and 1 are not."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return {dict: "object", list: "array", str: "string", int: "integer", float: "number", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
