"""Configuration: `altostratus.yaml` (flag or ALTO_CONFIG), env overrides, pydantic validation.

Two models over one file: `ApiSettings` (this module: the sections every entry point reads) and
`core.settings.Settings` (those plus providers, models, routing and templates, which only job
processing reads). `load_settings` validates everything; `load_api_settings` is for HTTP API cold starts.

Every validation error names the key path and a fix. Secrets are references (`env:NAME`,
`file:/path`, cloud secret stores via adapters), never inline values.
"""

# no `from __future__ import annotations`: pydantic then needs no string evaluation per field (cold start)

import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core.errors import ConfigError

if TYPE_CHECKING:
    from core.settings import Settings

S = TypeVar("S", bound=BaseModel)

SECRET_REF = re.compile(r"^(env|file|aws-sm|gcp-sm|azure-kv):.+$")
KEY_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


def hash_api_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, defer_build=True)


class PolicyConfig(_Strict):
    """What a tenant may use; unset means anything."""

    allowed_providers: list[str] | None = None
    allowed_models: list[str] | None = None
    allowed_regions: list[str] | None = None


class GuardrailsConfig(_Strict):
    max_input_chars: int | None = Field(default=None, gt=0, description="Longest prompt accepted.")
    blocked_patterns: list[str] = Field(default_factory=list, description="Regexes a prompt must not match.")
    redact_pii_in_logs: bool = Field(default=False, description="Mask emails, phone and card numbers in logged text.")
    max_output_chars: int | None = Field(default=None, gt=0, description="Longest answer accepted.")
    require_valid_citations: bool = Field(
        default=False, description="Fail a job whose answer cites a document it was not given."
    )

    @field_validator("blocked_patterns")
    @classmethod
    def _compile(cls, pats: list[str]) -> list[str]:
        for i, p in enumerate(pats):
            try:
                re.compile(p)
            except re.error as e:
                raise ValueError(f"blocked_patterns[{i}] is not a valid regular expression: {e}") from None
        return pats


class TenantConfig(_Strict):
    api_keys: list[str] = Field(default_factory=list, description="`sha256:<hex>` hashes or secret references.")
    default_collection: str | None = None
    policy: PolicyConfig = Field(default_factory=PolicyConfig)

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        for k in keys:
            if not (KEY_HASH.match(k) or SECRET_REF.match(k)):
                raise ValueError(
                    "each api key must be stored hashed ('sha256:<64 hex>', from `alto config hash-key KEY`) "
                    "or referenced ('env:NAME'); never write a raw key in the config file"
                )
        return keys


class QueueConfig(_Strict):
    visibility_timeout_s: float = Field(default=120.0, gt=0)
    max_receives: int = Field(default=5, ge=1, description="Deliveries before a message is dead-lettered.")
    poll_interval_s: float = Field(default=0.1, gt=0)


class CacheConfig(_Strict):
    enabled: bool = Field(default=False, description="Serve repeated identical requests from the store.")
    ttl_s: float = Field(default=3600.0, gt=0)
    max_entry_bytes: int = Field(default=256_000, gt=0, description="Larger replies are not cached.")


class BreakerConfig(_Strict):
    enabled: bool = True
    failure_threshold: int = Field(default=5, ge=1, description="Consecutive transient failures that open it.")
    window_s: float = Field(default=30.0, gt=0, description="A failure count older than this starts over.")
    cooldown_s: float = Field(default=30.0, gt=0, description="Open time before one probe call is let through.")
    max_cooldown_s: float = Field(default=300.0, gt=0, description="Cooldown doubles per failed probe up to this.")
    cache_s: float = Field(default=1.0, ge=0, description="How long a worker trusts its last read of the state.")


class GovernanceConfig(_Strict):
    max_attempts: int = Field(default=3, ge=1, description="Provider calls per job, across redeliveries.")
    backoff_base_s: float = Field(default=1.0, ge=0)
    backoff_max_s: float = Field(default=60.0, ge=0)
    retry_after_cap_s: float = Field(default=30.0, ge=0, description="Longest retry-after honoured.")
    lease_s: float = Field(default=90.0, gt=0, description="How long a running job is owned by one worker.")
    in_process_wait_s: float = Field(
        default=10.0, ge=0, description="Longest backoff slept in-process; longer waits go back to the queue."
    )
    reconcile_after_s: float = Field(
        default=900.0, gt=0, description="A queued job untouched this long, or a lease expired this long, is re-sent."
    )
    reconcile_interval_s: float = Field(default=60.0, gt=0, description="How often `alto serve` reconciles.")
    cache: CacheConfig = Field(default_factory=CacheConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=4, ge=0, description="Async worker loops started by `alto serve`.")
    concurrency: int = Field(default=32, ge=1, description="Jobs in flight per worker loop.")
    public_url: str | None = Field(default=None, description="Base URL used in status_url; defaults to the request's.")


class LoggingConfig(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class ApiSettings(_Strict):
    """The sections every entry point reads, the HTTP API's included: tenants, guardrails, queue,
    governance, server, logging.

    An API-only cold start (a cloud `api` function) validates these and no more: the job-processing
    sections are carried as given and validated by `core.settings.Settings`, which workers, the CLI and
    every deploy path (infra/aws/osls-config-check.js, infra/*/deploy.sh) load, so a broken file never ships.
    """

    data_dir: Path | None = Field(default=None, description="Embedded queue, stores, indexes and blobs.")
    providers: Any = Field(default_factory=dict, description="Provider connections (validated by Settings).")
    models: Any = Field(default_factory=dict, description="Model catalog (validated by Settings).")
    routing: Any = Field(default_factory=dict, description="Routing rules (validated by Settings).")
    templates: Any = Field(default_factory=dict, description="Keyed by `id@version` (validated by Settings).")
    guardrails: GuardrailsConfig = Field(default_factory=GuardrailsConfig)
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    governance: GovernanceConfig = Field(default_factory=GovernanceConfig)
    retrieval: Any = Field(default_factory=dict, description="Retrieval backend (validated by Settings).")
    server: ServerConfig = Field(default_factory=ServerConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    def resolved_data_dir(self) -> Path:
        if self.data_dir is not None:
            return self.data_dir.expanduser()
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(base) / "altostratus"


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


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """`ALTO_SECTION__KEY=value` sets `section.key`; values are parsed as YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith("ALTO_") or "__" not in name:
            continue
        path = [p.lower() for p in name[len("ALTO_"):].split("__")]
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


def parse_api_keys_env(value: str) -> dict[str, list[str]]:
    """`tenant1=key1,tenant2=key2` → hashed keys per tenant."""
    out: dict[str, list[str]] = {}
    for item in filter(None, (p.strip() for p in value.split(","))):
        tenant, sep, key = item.partition("=")
        if not sep or not tenant.strip() or not key.strip():
            raise ConfigError(
                f"ALTO_API_KEYS: entry '{tenant.strip() or item}=…' is not of the form tenant=key; "
                "use e.g. ALTO_API_KEYS=acme=s3cret,beta=0ther"
            )
        out.setdefault(tenant.strip(), []).append(hash_api_key(key.strip()))
    return out


def default_config_path(env: Mapping[str, str]) -> Path | None:
    if env.get("ALTO_CONFIG"):
        return Path(env["ALTO_CONFIG"])
    local = Path("altostratus.yaml")
    return local if local.exists() else None


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> "Settings":
    """Build settings from file (explicit path, ALTO_CONFIG, ./altostratus.yaml, or none) plus env,
    every section validated."""
    from core.settings import Settings

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
    data = _deep_merge(data, _env_overrides(env))
    if env.get("ALTO_DATA_DIR"):
        data["data_dir"] = env["ALTO_DATA_DIR"]
    if env.get("ALTO_API_KEYS"):
        tenants = data.setdefault("tenants", {}) or {}
        data["tenants"] = tenants
        for tenant, keys in parse_api_keys_env(env["ALTO_API_KEYS"]).items():
            entry = tenants.setdefault(tenant, {}) or {}
            tenants[tenant] = entry
            entry["api_keys"] = list(entry.get("api_keys") or []) + keys
    return data, source
