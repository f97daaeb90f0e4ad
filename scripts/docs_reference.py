"""The documentation's generated pages, written from the code so they are never written twice: the
configuration reference from the pydantic models `alto config check` validates, and the HTTP API reference
from the same OpenAPI document `GET /openapi.json` serves. MkDocs runs this as a hook (mkdocs.yml)."""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

PAGES = {"reference/configuration.md": "configuration", "reference/api.md": "api"}


def on_files(files: Any, config: Any) -> Any:
    """MkDocs hook: add the generated pages (and the OpenAPI document itself) to the site's files."""
    from mkdocs.structure.files import File

    for path, kind in PAGES.items():
        files.append(
            File.generated(config, path, content=configuration_page() if kind == "configuration" else api_page())
        )
    files.append(File.generated(config, "reference/openapi.json", content=json.dumps(_spec(), indent=2)))
    return files


# ---------------------------------------------------------------- configuration


def configuration_page() -> str:
    from core.config.worker import Settings

    out = [
        "# Configuration reference",
        "",
        "Every key of `altostratus.yaml`, generated from the models `alto config check` validates (so this page "
        "and the validation never disagree). A key may also be set from the environment as "
        "`ALTO_<SECTION>__<KEY>` (for example `ALTO_GOVERNANCE__MAX_ATTEMPTS=4`). Secrets are references "
        "(`env:NAME`, `file:/path`, `aws-sm:`, `gcp-sm:`, `azure-kv:`), never values.",
        "",
    ]
    sections: list[tuple[str, type[BaseModel], str]] = []
    out += _fields_table(Settings, "", sections)
    seen: set[str] = set()
    while sections:
        path, model, doc = sections.pop(0)
        if path in seen:
            continue
        seen.add(path)
        out += ["", f"## `{path}`", ""]
        if doc:
            out += [_clean(doc), ""]
        out += _fields_table(model, path, sections)
    return "\n".join(out) + "\n"


def _fields_table(model: type[BaseModel], prefix: str, sections: list[tuple[str, type[BaseModel], str]]) -> list[str]:
    rows = ["| Key | Type | Default | Meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        nested, keyed = _nested(field.annotation)
        if nested is not None:
            path = f"{key}.<name>" if keyed else key
            sections.append((path, nested, nested.__doc__ or ""))
            kind = (
                f"map of [`{nested.__name__}`](#{_anchor(path)})"
                if keyed
                else f"[`{nested.__name__}`](#{_anchor(path)})"
            )
        else:
            kind = f"`{_type_name(field.annotation)}`"
        rows.append(f"| `{name}` | {kind} | {_default(field)} | {_clean(field.description or '')} |")
    return rows


def _nested(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds (directly, optionally, or as dict values), and whether it is keyed by name."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if origin is dict and len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], BaseModel):
        return args[1], True
    if origin in (typing.Union, types.UnionType):
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(models) == 1:
            return models[0], False
    return None, False


def _type_name(annotation: Any) -> str:
    if annotation is None or annotation is type(None):
        return "null"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_name(a) for a in args)}]" if args else name
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "computed"
        if isinstance(value, BaseModel):
            return "see below"
        text = json.dumps(value, default=str)
        return f"`{text}`" if len(text) <= 40 else "built in (see below)" if isinstance(value, dict) else "…"
    if field.default is PydanticUndefined:
        return "required"
    return f"`{json.dumps(field.default, default=str)}`"


def _anchor(path: str) -> str:
    return "".join(c for c in path.lower().replace(".", "").replace("<name>", "name") if c.isalnum() or c in "-_")


def _clean(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


# ---------------------------------------------------------------- HTTP API


def _spec() -> dict[str, Any]:
    from core.config.workflows import builtin_workflows
    from core.entrypoints.openapi import openapi_spec

    return openapi_spec(tuple(sorted((k, w.input) for k, w in builtin_workflows().items())))


def api_page() -> str:
    spec = _spec()
    out = [
        "# HTTP API reference",
        "",
        f"Generated from the OpenAPI {spec['openapi']} document every deployment serves at `GET /openapi.json` "
        "([this version](openapi.json)). Every route but `/healthz` and `/openapi.json` takes "
        "`Authorization: Bearer <key>`: a tenant's key acts on its tenant's jobs, an operator's key on every "
        'tenant\'s. Errors are `{"error": {"code", "message", "field"}}`.',
        "",
    ]
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            out += [f"## `{method.upper()} {path}`", "", _clean(op.get("summary", "")), ""]
            params = op.get("parameters", [])
            if params:
                out += ["| Parameter | In | Schema | Meaning |", "|---|---|---|---|"]
                for p in params:
                    out.append(
                        f"| `{p['name']}` | {p['in']} | `{_schema(p.get('schema', {}))}` | "
                        f"{_clean(p.get('description') or p.get('schema', {}).get('description', ''))} |"
                    )
                out.append("")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                out += [f"Body: {_ref(body)}", ""]
            out += ["| Status | Meaning | Body |", "|---|---|---|"]
            for status, resp in op.get("responses", {}).items():
                schema = next(iter(resp.get("content", {}).values()), {}).get("schema")
                out.append(f"| {status} | {_clean(resp.get('description', ''))} | {_ref(schema) if schema else ''} |")
            out.append("")
    out += ["## Schemas", ""]
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        out += [f"### {name}", "", _clean(schema.get("description", "")), ""]
        props = schema.get("properties", {})
        if props:
            required = set(schema.get("required", []))
            out += ["| Field | Schema | Required | Meaning |", "|---|---|---|---|"]
            for field, sub in props.items():
                out.append(
                    f"| `{field}` | {_ref(sub)} | {'yes' if field in required else ''} | "
                    f"{_clean(sub.get('description', ''))} |"
                )
            out.append("")
    return "\n".join(out) + "\n"


def _ref(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#{name.lower()})"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(_ref(s) for s in schema[key])
    if schema.get("type") == "array":
        return f"array of {_ref(schema.get('items', {}))}"
    return f"`{_schema(schema)}`"


def _schema(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return " \\| ".join(str(v) for v in schema["enum"])
    kind = schema.get("type", "any")
    extra = schema.get("format") or schema.get("pattern")
    return f"{kind} ({extra})".replace("|", "\\|") if extra else str(kind)
