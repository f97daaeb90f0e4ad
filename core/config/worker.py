"""The full `Settings`: `ApiSettings` plus the sections only job processing reads.

Providers, the model catalog, routing rules, prompt templates and retrieval matter where jobs are answered
(workers, the CLI, the local runtime, `alto config check`). They live apart from `core.config.api` so an
HTTP API cold start never defines their models: the API validates its own sections and carries these
as given (see `ApiSettings`).
"""

# no `from __future__ import annotations`: pydantic then needs no string evaluation per field (cold start)

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from core.config.api import SECRET_REF, ApiSettings, _Strict
from core.config.models import ModelConfig
from core.config.pull import PullConfig
from core.config.threads import ThreadsConfig

TEMPLATE_ID = re.compile(r"^[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+$")


def _check_secret_ref(value: str | None, what: str) -> str | None:
    if value is None or SECRET_REF.match(value):
        return value
    raise ValueError(
        f"{what} must be a secret reference such as 'env:ANTHROPIC_API_KEY' or 'file:/run/secrets/key', "
        "not the secret itself; move the value into an environment variable or secret store"
    )


class ProviderConfig(_Strict):
    type: Literal["offline", "anthropic", "openai_compatible", "bedrock"] = Field(
        description="Provider implementation."
    )
    api_key: str | None = Field(default=None, description="Secret reference, e.g. env:ANTHROPIC_API_KEY.")
    base_url: str | None = Field(default=None, description="API base URL (openai_compatible: up to /v1).")
    timeout_s: float = Field(default=60.0, gt=0)
    max_connections: int = Field(default=200, gt=0)
    http: Literal["auto", "aiohttp", "httpx"] = Field(
        default="auto",
        description="anthropic: the SDK's HTTP transport; `auto` takes aiohttp when the `aiohttp` extra "
        "is installed (faster per call), else the SDK's default httpx2.",
    )
    calls: Literal["direct", "sdk"] = Field(
        default="direct",
        description="anthropic: how a plain (non-streaming) call is sent. `direct` posts the same "
        "request with the SDK client's own headers on its own HTTP client, skipping the SDK's request and reply models "
        "(more than half a call's CPU); `sdk` sends it through `messages.create`, for SDK-level hooks and spans. Streams, "
        "batches and clients with per-request auth always use the SDK.",
    )
    api_style: Literal["openai", "azure"] = Field(
        default="openai",
        description="openai_compatible: `azure` uses deployment URLs, api-version and the api-key header.",
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


FALLBACK_KINDS = ("rate_limited", "context_overflow", "content_policy", "circuit_open", "max_tokens")


class FallbackConfig(_Strict):
    """Typed fallback chains: which models to try, in order, when the route's model can't serve."""

    rate_limited: list[str] = Field(default_factory=list, description="On 429 or 529 (rate limit, overload).")
    context_overflow: list[str] = Field(
        default_factory=list, description="When the request can't fit the model's context window."
    )
    content_policy: list[str] = Field(default_factory=list, description="When the model refuses on policy grounds.")
    circuit_open: list[str] = Field(default_factory=list, description="While the route's model has an open circuit.")
    max_tokens: list[str] = Field(
        default_factory=list,
        description="When a reply is cut at max_tokens and the route says on_max_tokens: fallback.",
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
    lane: Literal["online", "batch"] = Field(
        default="online", description="batch: this route's calls go through the provider's batch API (cheaper, slower)."
    )
    on_max_tokens: Literal["accept", "fail", "fallback"] = Field(
        default="accept",
        description="A reply cut at max_tokens: serve it (its stop_reason says so), fail the job, or try "
        "`fallbacks.max_tokens` (then fail). A cut reply is billed either way.",
    )
    fallbacks: FallbackConfig = Field(default_factory=FallbackConfig)

    @model_validator(mode="after")
    def _one_target(self) -> "RouteConfig":
        if (self.model is None) == (not self.targets):
            raise ValueError("give exactly one of `model` (one model) or `targets` (weighted list of models)")
        return self

    def model_names(self) -> list[str]:
        return [self.model] if self.model else [t.model for t in self.targets]

    def model_refs(self, where: str) -> list[tuple[str, str]]:
        """(key path, model name) for every model this route may call: its targets and every fallback."""
        refs = (
            [(f"{where}.model", self.model)]
            if self.model
            else [(f"{where}.targets[{i}].model", t.model) for i, t in enumerate(self.targets)]
        )
        for kind in FALLBACK_KINDS:
            refs += [(f"{where}.fallbacks.{kind}[{i}]", m) for i, m in enumerate(getattr(self.fallbacks, kind))]
        return refs


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

    def routes(self) -> list[tuple[str, RouteConfig]]:
        """(key path, route) for the default and every rule's route."""
        return [("routing.default", self.default)] + [
            (f"routing.rules[{i}] ({r.name}).route", r.route) for i, r in enumerate(self.rules)
        ]

    def routed_models(self) -> list[str]:
        """Every model some route may call, targets and fallbacks, in order of first mention."""
        return list(dict.fromkeys(m for where, route in self.routes() for _, m in route.model_refs(where)))


class TemplateConfig(_Strict):
    """A versioned prompt template. `{max_tokens}` may appear in `output_instruction`."""

    system: str
    instructions: str = Field(default="", description="Placed before the context and question.")
    output_instruction: str = Field(default="", description="Placed after the question, e.g. a length limit.")


class SnapshotConfig(_Strict):
    refresh_s: float = Field(
        default=60.0, ge=0, description="How often a worker re-reads a collection's LATEST pointer."
    )
    scratch_dir: Path | None = Field(default=None, description="Where snapshots are downloaded; default: the temp dir.")


class PgVectorConfig(_Strict):
    dsn: str = Field(description="Secret reference to the connection string, e.g. `env:ALTO_PG_DSN`.")
    table_prefix: str = "alto"
    hnsw: bool = Field(default=False, description="Approximate HNSW index (exact search is the default).")

    _ref = field_validator("dsn")(lambda cls, v: _check_secret_ref(v, "retrieval.pgvector.dsn"))


class RetrievalConfig(_Strict):
    backend: Literal["embedded", "snapshot", "pgvector"] = Field(
        default="embedded",
        description="embedded: the SQLite index under data_dir; snapshot: published copies "
        "in the blob store (serverless); pgvector: Postgres.",
    )
    mode: Literal["keyword", "vector", "hybrid"] = Field(
        default="keyword", description="vector and hybrid need the embedding model package (see README)."
    )
    keyword_engine: Literal["auto", "fts5", "bm25s"] = Field(
        default="auto", description="auto: bm25s when installed (p50 < 1 ms at 100k chunks), else SQLite FTS5."
    )
    embedding_model: str = "all-minilm-l6-v2"
    blas_threads: int = Field(
        default=1,
        ge=1,
        description="BLAS threads for vector search and bm25s (NumPy); one per worker process "
        "serves concurrent jobs best. An OPENBLAS_NUM_THREADS / OMP_NUM_THREADS already set wins.",
    )
    rrf_k: int = Field(default=60, ge=1, description="Reciprocal-rank fusion constant.")
    top_k: int = Field(default=5, ge=1, le=100, description="Most chunks put into one prompt.")
    candidates: int = Field(default=20, ge=1, le=500, description="Chunks retrieved before assembly picks.")
    max_chunks_per_source: int = Field(default=3, ge=0, description="0: no cap.")
    near_duplicate_threshold: float = Field(
        default=0.8, gt=0, le=1.0, description="Word-shingle Jaccard similarity at which a chunk counts as a copy."
    )
    ordering: Literal["relevance", "lost_in_middle"] = Field(
        default="relevance", description="lost_in_middle puts the strongest chunks first and last."
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


def _builtin_models() -> dict[str, ModelConfig]:
    # Prices in USD per million tokens as published by the provider; override in config when they change.
    return {
        "offline": ModelConfig(provider="offline", model_id="offline-extractive", context_window=32_000),
        "claude-opus-4-5": ModelConfig(
            provider="anthropic",
            model_id="claude-opus-4-5",
            context_window=200_000,
            max_output_tokens=64_000,
            input_per_mtok=5.0,
            output_per_mtok=25.0,
            token_margin=0.25,
            cache_read_per_mtok=0.5,
            cache_write_per_mtok=6.25,
            cache_min_tokens=4096,
        ),
        "claude-haiku-4-5": ModelConfig(
            provider="anthropic",
            model_id="claude-haiku-4-5",
            context_window=200_000,
            max_output_tokens=64_000,
            input_per_mtok=1.0,
            output_per_mtok=5.0,
            token_margin=0.25,
            cache_read_per_mtok=0.1,
            cache_write_per_mtok=1.25,
            cache_min_tokens=4096,
        ),
    }


def _builtin_providers() -> dict[str, ProviderConfig]:
    return {
        "offline": ProviderConfig(type="offline"),
        "anthropic": ProviderConfig(type="anthropic", api_key="env:ANTHROPIC_API_KEY"),
    }


class Settings(ApiSettings):
    """Every section validated: what workers, the CLI and the local runtime load."""

    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    templates: dict[str, TemplateConfig] = Field(default_factory=dict, description="Keyed by `id@version`.")
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    pull: PullConfig = Field(default_factory=PullConfig)
    threads: ThreadsConfig = Field(default_factory=ThreadsConfig)

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
            p = self.providers[model.provider]
            if model.api == "moderations" and (p.type, p.api_style) != ("openai_compatible", "openai"):
                raise ValueError(
                    f"models.{name}.api: only an openai_compatible provider (api_style openai) has a moderation "
                    f"endpoint, and '{model.provider}' is {p.type}; use api: chat (a classification prompt)"
                )
        self.__dict__["templates"] = {**_builtin_templates(), **self.templates}
        for name in self.templates:
            if not TEMPLATE_ID.match(name):
                raise ValueError(f"templates.{name}: template ids look like 'name@version', e.g. 'support-answer@2'")
        refs = [ref for where, route in self.routing.routes() for ref in route.model_refs(where)]
        for path, name in refs + self.safety.model_refs():  # routes, fallbacks, and the safety policies' models
            if name not in self.models:
                raise ValueError(
                    f"{path}: '{name}' is not defined under `models` "
                    f"(known: {', '.join(sorted(self.models))}); add it or pick a known model"
                )
        for where, route in self.routing.routes():
            if route.template not in self.templates:
                raise ValueError(
                    f"{where}.template: '{route.template}' is not defined under `templates` "
                    f"(known: {', '.join(sorted(self.templates))})"
                )
        return self


def _builtin_templates() -> dict[str, TemplateConfig]:
    from core.prompting import SYSTEM, TEMPLATE_ID

    return {TEMPLATE_ID: TemplateConfig(system=SYSTEM)}
