"""Configuration: `altostratus.yaml` (flag or ALTO_CONFIG), env overrides, pydantic validation.

Every validation error names the key path and a fix. Secrets are references (`env:NAME`,
`file:/path`, cloud secret stores via adapters), never inline values.
"""

# no `from __future__ import annotations`: pydantic then needs no string evaluation per field (cold start)

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.errors import ConfigError

SECRET_REF = re.compile(r"^(env|file|aws-sm|gcp-sm|azure-kv):.+$")
KEY_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
TEMPLATE_ID = re.compile(r"^[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+$")


def hash_api_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _check_secret_ref(value: str | None, what: str) -> str | None:
    if value is None or SECRET_REF.match(value):
        return value
    raise ValueError(
        f"{what} must be a secret reference such as 'env:ANTHROPIC_API_KEY' or 'file:/run/secrets/key', "
        "not the secret itself; move the value into an environment variable or secret store"
    )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, defer_build=True)


class ProviderConfig(_Strict):
    type: Literal["offline", "anthropic", "openai_compatible", "bedrock"] = Field(description="Provider implementation.")
    api_key: str | None = Field(default=None, description="Secret reference, e.g. env:ANTHROPIC_API_KEY.")
    base_url: str | None = Field(default=None, description="API base URL (openai_compatible: up to /v1).")
    timeout_s: float = Field(default=60.0, gt=0)
    max_connections: int = Field(default=200, gt=0)
    api_style: Literal["openai", "azure"] = Field(
        default="openai", description="openai_compatible: `azure` uses deployment URLs, api-version and the api-key header."
    )
    api_version: str | None = Field(default=None, description="Azure OpenAI api-version, e.g. 2024-10-21.")
    region: str | None = Field(default=None, description="bedrock: AWS region of the runtime endpoint.")
    endpoint_url: str | None = Field(default=None, description="bedrock: override the runtime endpoint.")

    _ref = field_validator("api_key")(lambda cls, v: _check_secret_ref(v, "api_key"))

    @field_validator("api_version", mode="before")
    @classmethod
    def _version_text(cls, v: Any) -> Any:
        """YAML reads an unquoted 2024-10-21 as a date; the API wants the text."""
        return v.isoformat() if hasattr(v, "isoformat") else v


class LimitsConfig(_Strict):
    """Provider limits for one model deployment, enforced by token buckets shared by every worker.

    Match them to the provider's published limits (Anthropic: requests, input and output tokens per
    minute; OpenAI: requests and tokens per minute) so workers slow down before the provider says 429.
    """

    requests_per_minute: float | None = Field(default=None, gt=0)
    input_tokens_per_minute: float | None = Field(default=None, gt=0)
    output_tokens_per_minute: float | None = Field(default=None, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0, description="Input plus output tokens.")
    burst_s: float = Field(
        default=60.0, gt=0, description="Bucket capacity in seconds of refill (60 = a full minute, as Anthropic's)."
    )
    max_concurrency: int | None = Field(default=None, ge=1, description="Calls in flight across all workers.")

    def rates_per_s(self) -> dict[str, float]:
        named = {
            "requests": self.requests_per_minute, "input_tokens": self.input_tokens_per_minute,
            "output_tokens": self.output_tokens_per_minute, "tokens": self.tokens_per_minute,
        }
        return {k: v / 60.0 for k, v in named.items() if v is not None}


class ModelConfig(_Strict):
    provider: str = Field(description="Name of an entry under `providers`.")
    model_id: str = Field(description="The provider's model identifier.")
    context_window: int = Field(default=200_000, gt=0)
    max_output_tokens: int = Field(default=8192, gt=0)
    input_per_mtok: float = Field(default=0.0, ge=0, description="USD per million input tokens.")
    output_per_mtok: float = Field(default=0.0, ge=0, description="USD per million output tokens.")
    cache_read_per_mtok: float | None = Field(
        default=None, ge=0, description="USD per million prompt-cache-read tokens, where the provider has them."
    )
    region: str | None = Field(default=None, description="Where the model is served (for tenant policies).")
    limits: LimitsConfig | None = Field(default=None, description="Rate limits and concurrency cap.")
    tokenizer: Literal["cl100k_base", "estimate"] = Field(
        default="cl100k_base", description="How prompts are counted for budgets (a real BPE shipped offline)."
    )
    token_margin: float = Field(
        default=0.0, ge=0.0, le=0.5,
        description="Share of the input space held back because `tokenizer` only approximates the model's own "
        "(Claude's tokenizer is not public: its counts run up to ~25% above cl100k_base).",
    )
    count_tokens: Literal["local", "provider"] = Field(
        default="local", description="`provider`: check the assembled prompt with the provider's count-tokens endpoint.",
    )

    def cost(self, input_tokens: int, output_tokens: int, cache_read_tokens: int = 0) -> float:
        """USD for one call; `input_tokens` excludes cache reads, which are billed at their own price."""
        cache_price = self.cache_read_per_mtok if self.cache_read_per_mtok is not None else self.input_per_mtok
        micro = input_tokens * self.input_per_mtok + cache_read_tokens * cache_price + output_tokens * self.output_per_mtok
        return round(micro / 1_000_000, 10)


FALLBACK_KINDS = ("rate_limited", "context_overflow", "content_policy", "circuit_open")


class FallbackConfig(_Strict):
    """Typed fallback chains: which models to try, in order, when the route's model can't serve."""

    rate_limited: list[str] = Field(default_factory=list, description="On 429 or 529 (rate limit, overload).")
    context_overflow: list[str] = Field(
        default_factory=list, description="When the request can't fit the model's context window."
    )
    content_policy: list[str] = Field(default_factory=list, description="When the model refuses on policy grounds.")
    circuit_open: list[str] = Field(
        default_factory=list, description="While the route's model has an open circuit."
    )


class TargetConfig(_Strict):
    model: str
    weight: float = Field(default=1.0, gt=0)


class RouteConfig(_Strict):
    model: str | None = Field(default=None, description="Name of an entry under `models`.")
    targets: list[TargetConfig] = Field(
        default_factory=list, description="Instead of `model`: equivalent deployments, load-balanced by weight."
    )
    max_tokens: int = Field(default=1024, gt=0, description="Maximum output tokens for this route.")
    template: str = Field(default="answer-with-citations@1", description="Prompt template id@version.")
    fallbacks: FallbackConfig = Field(default_factory=FallbackConfig)

    @model_validator(mode="after")
    def _one_target(self) -> "RouteConfig":
        if (self.model is None) == (not self.targets):
            raise ValueError("give exactly one of `model` (one model) or `targets` (weighted list of models)")
        return self

    def model_names(self) -> list[str]:
        return [self.model] if self.model else [t.model for t in self.targets]


class MatchConfig(_Strict):
    """All given conditions must hold; an empty match always matches."""

    tasks: list[str] | None = Field(default=None, description="Job `task` is one of these.")
    tenants: list[str] | None = None
    tags: dict[str, str] = Field(default_factory=dict, description="Job metadata keys that must equal these values.")
    min_input_tokens: int | None = Field(default=None, ge=0, description="Estimated prompt + context tokens at least.")
    max_input_tokens: int | None = Field(default=None, ge=0, description="Estimated prompt + context tokens at most.")


class RuleConfig(_Strict):
    name: str
    match: MatchConfig = Field(default_factory=MatchConfig)
    route: RouteConfig


class RoutingConfig(_Strict):
    rules: list[RuleConfig] = Field(default_factory=list, description="Tried in order; the first match wins.")
    default: RouteConfig = Field(default_factory=lambda: RouteConfig(model="offline"))


class TemplateConfig(_Strict):
    """A versioned prompt template. `{max_tokens}` may appear in `output_instruction`."""

    system: str
    instructions: str = Field(default="", description="Placed before the context and question.")
    output_instruction: str = Field(default="", description="Placed after the question, e.g. a length limit.")


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


class SnapshotConfig(_Strict):
    refresh_s: float = Field(default=60.0, ge=0, description="How often a worker re-reads a collection's LATEST pointer.")
    scratch_dir: Path | None = Field(default=None, description="Where snapshots are downloaded; default: the temp dir.")


class PgVectorConfig(_Strict):
    dsn: str = Field(description="Secret reference to the connection string, e.g. `env:ALTO_PG_DSN`.")
    table_prefix: str = "alto"
    hnsw: bool = Field(default=False, description="Approximate HNSW index (exact search is the default).")

    _ref = field_validator("dsn")(lambda cls, v: _check_secret_ref(v, "retrieval.pgvector.dsn"))


class RetrievalConfig(_Strict):
    backend: Literal["embedded", "snapshot", "pgvector"] = Field(
        default="embedded", description="embedded: the SQLite index under data_dir; snapshot: published copies "
        "in the blob store (serverless); pgvector: Postgres.",
    )
    mode: Literal["keyword", "vector", "hybrid"] = Field(
        default="keyword", description="vector and hybrid need the embedding model package (see README).",
    )
    keyword_engine: Literal["auto", "fts5", "bm25s"] = Field(
        default="auto", description="auto: bm25s when installed (p50 < 1 ms at 100k chunks), else SQLite FTS5.",
    )
    embedding_model: str = "all-minilm-l6-v2"
    rrf_k: int = Field(default=60, ge=1, description="Reciprocal-rank fusion constant.")
    top_k: int = Field(default=5, ge=1, le=100, description="Most chunks put into one prompt.")
    candidates: int = Field(default=20, ge=1, le=500, description="Chunks retrieved before assembly picks.")
    max_chunks_per_source: int = Field(default=3, ge=0, description="0: no cap.")
    near_duplicate_threshold: float = Field(
        default=0.8, gt=0, le=1.0, description="Word-shingle Jaccard similarity at which a chunk counts as a copy."
    )
    ordering: Literal["relevance", "lost_in_middle"] = Field(
        default="relevance", description="lost_in_middle puts the strongest chunks first and last.",
    )
    chunk_tokens: int = Field(default=200, ge=20)
    chunk_overlap_tokens: int = Field(default=30, ge=0)
    snapshot: SnapshotConfig = Field(default_factory=SnapshotConfig)
    pgvector: PgVectorConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> "RetrievalConfig":
        if self.chunk_overlap_tokens >= self.chunk_tokens:
            raise ValueError("retrieval.chunk_overlap_tokens must be smaller than retrieval.chunk_tokens")
        if self.backend == "pgvector" and self.pgvector is None:
            raise ValueError("retrieval.backend is pgvector: set retrieval.pgvector.dsn (e.g. `env:ALTO_PG_DSN`)")
        if self.candidates < self.top_k:
            raise ValueError("retrieval.candidates must be at least retrieval.top_k")
        return self


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=4, ge=0, description="Async worker loops started by `alto serve`.")
    concurrency: int = Field(default=32, ge=1, description="Jobs in flight per worker loop.")
    public_url: str | None = Field(default=None, description="Base URL used in status_url; defaults to the request's.")


class LoggingConfig(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


def _builtin_models() -> dict[str, ModelConfig]:
    # Prices in USD per million tokens as published by the provider; override in config when they change.
    return {
        "offline": ModelConfig(provider="offline", model_id="offline-extractive", context_window=32_000),
        "claude-opus-4-5": ModelConfig(
            provider="anthropic", model_id="claude-opus-4-5", context_window=200_000,
            max_output_tokens=64_000, input_per_mtok=5.0, output_per_mtok=25.0, token_margin=0.25,
        ),
        "claude-haiku-4-5": ModelConfig(
            provider="anthropic", model_id="claude-haiku-4-5", context_window=200_000,
            max_output_tokens=64_000, input_per_mtok=1.0, output_per_mtok=5.0, token_margin=0.25,
        ),
    }


def _builtin_providers() -> dict[str, ProviderConfig]:
    return {
        "offline": ProviderConfig(type="offline"),
        "anthropic": ProviderConfig(type="anthropic", api_key="env:ANTHROPIC_API_KEY"),
    }


class Settings(_Strict):
    data_dir: Path | None = Field(default=None, description="Embedded queue, stores, indexes and blobs.")
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    templates: dict[str, TemplateConfig] = Field(default_factory=dict, description="Keyed by `id@version`.")
    guardrails: GuardrailsConfig = Field(default_factory=GuardrailsConfig)
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    governance: GovernanceConfig = Field(default_factory=GovernanceConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @model_validator(mode="after")
    def _merge_builtins_and_check_refs(self) -> "Settings":
        self.__dict__["providers"] = {**_builtin_providers(), **self.providers}
        self.__dict__["models"] = {**_builtin_models(), **self.models}
        for name, model in self.models.items():
            if model.provider not in self.providers:
                raise ValueError(
                    f"models.{name}.provider: '{model.provider}' is not defined under `providers` "
                    f"(known: {', '.join(sorted(self.providers))}); add it or fix the name"
                )
        from core.prompting import builtin_templates

        self.__dict__["templates"] = {**builtin_templates(), **self.templates}
        for name in self.templates:
            if not TEMPLATE_ID.match(name):
                raise ValueError(f"templates.{name}: template ids look like 'name@version', e.g. 'support-answer@2'")
        routes = [("routing.default", self.routing.default)] + [
            (f"routing.rules[{i}] ({r.name}).route", r.route) for i, r in enumerate(self.routing.rules)
        ]
        for where, route in routes:
            refs = [(f"{where}.model", route.model)] if route.model else [
                (f"{where}.targets[{i}].model", t.model) for i, t in enumerate(route.targets)
            ]
            for kind in FALLBACK_KINDS:
                refs += [(f"{where}.fallbacks.{kind}[{i}]", m) for i, m in enumerate(getattr(route.fallbacks, kind))]
            for path, name in refs:
                if name not in self.models:
                    raise ValueError(
                        f"{path}: '{name}' is not defined under `models` "
                        f"(known: {', '.join(sorted(self.models))}); add it or pick a known model"
                    )
            if route.template not in self.templates:
                raise ValueError(
                    f"{where}.template: '{route.template}' is not defined under `templates` "
                    f"(known: {', '.join(sorted(self.templates))})"
                )
        return self

    def resolved_data_dir(self) -> Path:
        if self.data_dir is not None:
            return self.data_dir.expanduser()
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(base) / "altostratus"


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            parent_loc, key = e["loc"][:-1], str(e["loc"][-1])
            known = _known_keys(parent_loc)
            import difflib  # only for error messages

            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"valid keys here: {', '.join(known)}"
            msg = f"unknown key; {hint}"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = Settings
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


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from file (explicit path, ALTO_CONFIG, ./altostratus.yaml, or none) plus env."""
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
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e, source)) from None
