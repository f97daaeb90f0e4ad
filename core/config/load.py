"""Loading configuration: `altostratus.yaml` (flag or ALTO_CONFIG), `ALTO_*` env overrides, validation.

`load_settings` validates every section (workers, the CLI, deploy-time checks); `load_api_settings`
validates only what the HTTP API reads, for its cold start. Every error names the key path and a fix.
"""

# no `from __future__ import annotations`: pydantic then needs no string evaluation per field (cold start)

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from core.config.api import ApiSettings, hash_api_key
from core.errors import ConfigError

if TYPE_CHECKING:
    from core.config.worker import Settings

S = TypeVar("S", bound=BaseModel)


def _describe(err: ValidationError, source: str, model: type[BaseModel]) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            parent_loc, key = e["loc"][:-1], str(e["loc"][-1])
            known = _known_keys(model, parent_loc)
            import difflib  # only for error messages

            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys here: {', '.join(known)}"
            msg = f"unknown key; {hint}"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def _known_keys(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    model: Any = root
    for part in loc:
        if isinstance(part, int) and hasattr(model, "model_fields"):
            continue  # a list's index: the list's element model was taken already
        field = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
        if field is None:
            # inside a dict of sub-models (providers.NAME, tenants.NAME ...)
            args = getattr(model, "__args__", ())
            model = args[-1] if args else None
            continue
        model = field.annotation
        args = getattr(model, "__args__", ())
        if args and not hasattr(model, "model_fields"):
            model = next((a for a in args if hasattr(a, "model_fields")), args[-1])
    return sorted(model.model_fields) if hasattr(model, "model_fields") else []


def _override_names(env: Mapping[str, str]) -> list[str]:
    """The `ALTO_SECTION__KEY` variables in `env` (plain `ALTO_NAME` ones are not config overrides)."""
    return sorted(name for name in env if name.startswith("ALTO_") and "__" in name)


def _env_overrides(env: Mapping[str, str], names: list[str]) -> dict[str, Any]:
    """`ALTO_SECTION__KEY=value` sets `section.key`; values are parsed as YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    for name in names:
        raw = env[name]
        path = [p.lower() for p in name[len("ALTO_") :].split("__")]
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = yaml.safe_load(raw) if raw else raw
    return out


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in over.items():
        merged[k] = _deep_merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def _which(n: int, item: str) -> str:
    """An entry of a key list, named without its value: an entry with no '=' may be a bare key."""
    tenant, sep, _ = item.partition("=")
    if sep and tenant.strip():
        return f"entry {n} (tenant '{tenant.strip()}')"
    return f"entry {n} (value not shown: it may be a key)"


def parse_api_keys_env(value: str) -> dict[str, list[str]]:
    """`tenant1=key1,tenant2=key2` → hashed keys per tenant."""
    out: dict[str, list[str]] = {}
    for n, item in enumerate(filter(None, (p.strip() for p in value.split(","))), 1):
        tenant, sep, key = item.partition("=")
        if not sep or not tenant.strip() or not key.strip():
            raise ConfigError(
                f"ALTO_API_KEYS: {_which(n, item)} is not of the form tenant=key; use e.g. "
                "ALTO_API_KEYS=acme=s3cret,beta=0ther"
            )
        out.setdefault(tenant.strip(), []).append(hash_api_key(key.strip()))
    return out


def parse_api_key_hashes_env(value: str) -> dict[str, list[str]]:
    """`tenant1=sha256:HEX,tenant2=sha256:HEX` (what `alto config hash-key` prints) → hashed keys per tenant.

    The first-key path of a cloud deploy: a hash is safe in a function's environment, a raw key is not."""
    from core.config.api import KEY_HASH

    out: dict[str, list[str]] = {}
    for n, item in enumerate(filter(None, (p.strip() for p in value.split(","))), 1):
        tenant, sep, digest = item.partition("=")
        if not sep or not tenant.strip() or not KEY_HASH.match(digest.strip()):
            raise ConfigError(
                f"ALTO_API_KEY_HASHES: {_which(n, item)} is not of the form tenant=sha256:<64 hex>; "
                "make each hash with `alto config hash-key KEY` and give e.g. acme=sha256:9f86…"
            )
        out.setdefault(tenant.strip(), []).append(digest.strip())
    return out


def default_config_path(env: Mapping[str, str]) -> Path | None:
    if env.get("ALTO_CONFIG"):
        return Path(env["ALTO_CONFIG"])
    local = Path("altostratus.yaml")
    return local if local.exists() else None


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> "Settings":
    """Build settings from file (explicit path, ALTO_CONFIG, ./altostratus.yaml, or none) plus env,
    every section validated."""
    from core.config.worker import Settings

    return _validate(Settings, *_read(path, env))


def load_api_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> ApiSettings:
    """The same sources, validated as far as the HTTP API reads them (see `ApiSettings`)."""
    return _validate(ApiSettings, *_read(path, env))


def _validate(model: type[S], data: dict[str, Any], source: str) -> S:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e, source, model)) from None


def _read(path: str | Path | None, env: Mapping[str, str] | None) -> tuple[dict[str, Any], str]:
    """(merged raw config, where it came from)."""
    import yaml

    env = os.environ if env is None else env
    cfg_path = Path(path) if path is not None else default_config_path(env)
    data: dict[str, Any] = {}
    source = "built-in defaults"
    if cfg_path is not None:
        source = str(cfg_path)
        if not cfg_path.exists():
            raise ConfigError(
                f"config file {cfg_path} does not exist; create it, fix the path, or unset ALTO_CONFIG "
                "to run on built-in defaults"
            )
        try:
            loaded = yaml.safe_load(cfg_path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{cfg_path} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{cfg_path}: the top level must be a mapping of sections (providers:, models:, ...)")
        data = loaded
    overrides = _override_names(env)
    if overrides:  # an error in one of them must name it, not blame the file or the defaults
        named = ", ".join(overrides[:5]) + (" ..." if len(overrides) > 5 else "")
        source = f"{source} with environment overrides ({named})" if cfg_path else f"environment overrides ({named})"
    data = _deep_merge(data, _env_overrides(env, overrides))
    if env.get("ALTO_DATA_DIR"):
        data["data_dir"] = env["ALTO_DATA_DIR"]
    for name, parse in (("ALTO_API_KEYS", parse_api_keys_env), ("ALTO_API_KEY_HASHES", parse_api_key_hashes_env)):
        if env.get(name):
            _add_keys(data, parse(env[name]))
    for name, parse_one in (("ALTO_OPERATOR_KEYS", _operator_key), ("ALTO_OPERATOR_KEY_HASHES", _operator_hash)):
        if env.get(name):
            operators = data.setdefault("operators", {}) or {}
            data["operators"] = operators
            operators["api_keys"] = list(operators.get("api_keys") or []) + [
                parse_one(n, item) for n, item in enumerate(filter(None, (p.strip() for p in env[name].split(","))), 1)
            ]
    return data, source


def _operator_key(n: int, key: str) -> str:
    return hash_api_key(key)


def _operator_hash(n: int, digest: str) -> str:
    from core.config.api import KEY_HASH

    if not KEY_HASH.match(digest):
        raise ConfigError(
            f"ALTO_OPERATOR_KEY_HASHES: entry {n} is not a sha256:<64 hex> hash; make it with "
            "`alto config hash-key KEY`"
        )
    return digest


def _add_keys(data: dict[str, Any], hashed: dict[str, list[str]]) -> None:
    tenants = data.setdefault("tenants", {}) or {}
    data["tenants"] = tenants
    for tenant, keys in hashed.items():
        entry = tenants.setdefault(tenant, {}) or {}
        tenants[tenant] = entry
        entry["api_keys"] = list(entry.get("api_keys") or []) + keys
