"""`ApiSettings`: the configuration sections every entry point reads, the HTTP API's included.

Tenants, guardrails, queue, governance, server and logging. The job-processing sections (providers,
models, routing, templates, retrieval) are `core.config.worker.Settings`; loading is `core.config.load`.
Secrets are references (`env:NAME`, `file:/path`, cloud secret stores via adapters), never inline values.
"""

# no `from __future__ import annotations`: pydantic then needs no string evaluation per field (cold start)

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from core.config.budgets import BudgetConfig
from core.config.safety import PolicyConfig, SafetyConfig, TenantSafety
from core.config.strict import SECRET_REF, _Strict
from core.config.workflows import WorkflowConfig, builtin_workflows, check_ids
from core.models import NAME_PATTERN, NAME_RULE

KEY_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")


def hash_api_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


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
    default_collection: str | None = Field(default=None, pattern=NAME_PATTERN)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    webhook_secret: str | None = Field(
        default=None,
        description="Secret reference (env:NAME) to a `whsec_<base64>` key: callbacks are signed with it "
        "in the Standard Webhooks form.",
    )
    budgets: BudgetConfig | None = Field(default=None, description="Spend limits, reserved before each call.")
    safety: TenantSafety | None = Field(
        default=None, description="The safety policy by name, or `{default: NAME, tasks: {TASK: NAME}}`."
    )

    @field_validator("safety", mode="before")
    @classmethod
    def _safety_name(cls, v: object) -> object:
        return {"default": v} if isinstance(v, str) else v

    @field_validator("webhook_secret")
    @classmethod
    def _secret_ref(cls, v: str | None) -> str | None:
        if v is not None and not SECRET_REF.match(v):
            raise ValueError(
                "webhook_secret must be a secret reference such as 'env:ALTO_WEBHOOK_SECRET', not the secret itself"
            )
        return v

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        return _stored_keys(keys)


def _stored_keys(keys: list[str]) -> list[str]:
    for k in keys:
        if not (KEY_HASH.match(k) or SECRET_REF.match(k)):
            raise ValueError(
                "each api key must be stored hashed ('sha256:<64 hex>', from `alto config hash-key KEY`) "
                "or referenced ('env:NAME'); never write a raw key in the config file"
            )
    return keys


class OperatorsConfig(_Strict):
    """Keys for the people who run the service: they list, read, cancel and replay every tenant's jobs and
    read every tenant's spend (the console's tenant filter), and submit nothing."""

    api_keys: list[str] = Field(default_factory=list, description="`sha256:<hex>` hashes or secret references.")

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, keys: list[str]) -> list[str]:
        return _stored_keys(keys)


class CallbackConfig(_Strict):
    allow: list[str] = Field(
        default_factory=list,
        description="Host names or CIDR ranges callbacks may reach although they are internal (e.g. 10.1.0.0/16).",
    )
    nat64_prefixes: list[str] = Field(
        default_factory=list,
        description="NAT64 prefixes of the network the service runs in (e.g. 2001:db8:64::/96), "
        "besides the well-known 64:ff9b::/96: an IPv4 address embedded in one is judged as that address.",
    )
    max_tries: int = Field(default=5, ge=1, description="Deliveries of one callback before it is given up.")
    backoff_base_s: float = Field(default=5.0, ge=0, description="First retry delay; doubles per try.")
    backoff_max_s: float = Field(default=600.0, ge=0)
    timeout_s: float = Field(default=10.0, gt=0, description="Whole-request timeout of one delivery.")

    @field_validator("nat64_prefixes")
    @classmethod
    def _nat64(cls, prefixes: list[str]) -> list[str]:
        import ipaddress

        for i, p in enumerate(prefixes):
            try:
                net = ipaddress.IPv6Network(p)
            except ValueError:
                raise ValueError(
                    f"nat64_prefixes[{i}]: {p!r} is not an IPv6 network such as 2001:db8:64::/96"
                ) from None
            if net.prefixlen not in (32, 40, 48, 56, 64, 96):
                raise ValueError(
                    f"nat64_prefixes[{i}]: a NAT64 prefix is /32, /40, /48, /56, /64 or /96 (RFC 6052), "
                    f"not /{net.prefixlen}"
                )
        return prefixes


class QueueConfig(_Strict):
    visibility_timeout_s: float = Field(default=120.0, gt=0)
    max_receives: int = Field(default=5, ge=1, description="Deliveries before a message is dead-lettered.")
    poll_interval_s: float = Field(default=0.1, gt=0)


class ProcessConfig(_Strict):
    gc_freeze: bool = Field(
        default=True,
        description=(
            "Once a worker process is ready (config loaded, SDKs imported, providers built), move every object "
            "alive then out of the garbage collector's scans (gc.freeze): a full collection no longer walks the "
            "imported SDKs (~184,000 objects, 110-145 ms a collection here)."
        ),
    )
    gc_young_threshold: int = Field(
        default=10_000,
        ge=0,
        description=(
            "Allocations between young-generation collections (Python's default is 700; 0 leaves it alone). A job "
            "allocates thousands of short-lived objects, so the default collects several times per job."
        ),
    )
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        default="auto",
        description=(
            "The event loop jobs run on: `auto` takes uvloop when the `uvloop` extra is installed (its scheduler runs "
            "in C: ~0.1 ms less CPU a job, measured in benchmarks/throughput.py), else asyncio's; `asyncio` keeps the "
            "standard loop."
        ),
    )


class EmbeddedConfig(_Strict):
    storage_thread: bool = Field(
        default=True,
        description=(
            "Run the embedded SQLite stores' calls from the event loop on one storage thread per process, "
            "committed in groups; false runs them inline on the loop (the behaviour before 0.2, kept for comparison)."
        ),
    )
    group_on_loop: bool = Field(
        default=True,
        description=(
            "Commit a group on the event loop itself when the database locks are free (one try, no waiting), and "
            "hand it to the storage thread only while another connection holds one; false always uses the thread "
            "(its hand-offs between threads cost 0.10-0.16 ms more CPU per job, measured in-process)."
        ),
    )


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


class StreamConfig(_Strict):
    """Streaming a queued job's output through the stores (jobs submitted with `"stream": true`)."""

    flush_ms: float = Field(default=250.0, ge=10, description="The worker writes new text at most this often.")
    poll_ms: float = Field(default=100.0, ge=10, description="How often an SSE or long-poll request looks again.")
    max_wait_s: float = Field(
        default=25.0,
        gt=0,
        le=900,
        description="Longest long-poll or buffered SSE response (under the platform's timeout).",
    )
    inline_chars: int = Field(
        default=32_000,
        ge=1000,
        description="Longer partial text is kept in the blob store, its pointer in the state store.",
    )


class BatchConfig(_Strict):
    """The batch lane: calls gathered and sent through the provider's batch API, at its discount."""

    flush_s: float = Field(default=60.0, gt=0, description="A pending batch is sent at most this long after it opened.")
    max_requests: int = Field(default=1000, ge=1, le=100_000, description="...or as soon as it holds this many.")
    poll_s: float = Field(
        default=30.0, gt=0, description="How often `alto serve` flushes and polls (`alto batch tick`)."
    )
    wait_s: float = Field(
        default=86_400.0, gt=0, description="A batched job's lease: the provider's own expiry (24 h)."
    )


class LoggingConfig(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class EmfConfig(_Strict):
    enabled: bool = Field(default=False, description="CloudWatch Embedded Metric Format lines on stdout (AWS).")
    namespace: str = Field(default="Altostratus", min_length=1, max_length=255)


class OtelConfig(_Strict):
    enabled: bool = Field(
        default=False,
        description="OpenTelemetry spans (GenAI conventions) and metrics; needs `pip install 'altostratus[otel]'`.",
    )
    endpoint: str | None = Field(
        default=None,
        description=(
            "OTLP/HTTP base URL (e.g. http://localhost:4318). Unset: the process's global providers are used, "
            "as configured by the platform's distro or opentelemetry-instrument."
        ),
    )
    service_name: str = "altostratus"
    sample_ratio: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description=(
            "Share of jobs whose spans are exported, decided by trace id (the same in every process, like "
            "TraceIdRatioBased); metrics count every job."
        ),
    )


class AuditConfig(_Strict):
    enabled: bool = Field(
        default=False,
        description="Per job: the prompt as sent, the output and the decision "
        "trail, as JSON lines in the blob store. Never in the ordinary logs.",
    )
    prefix: str = Field(default="audit", pattern=r"^[a-z0-9][a-z0-9_-]*$")
    retention_days: int = Field(
        default=90, ge=1, description="Names the key prefix; set the bucket's lifecycle rule on it."
    )
    redact_pii: bool = Field(default=True, description="E-mail addresses, phone and card numbers masked.")


class ObservabilityConfig(_Strict):
    prometheus: bool = Field(default=True, description="`GET /metrics` on `alto serve` (Prometheus text format).")
    emf: EmfConfig = Field(default_factory=EmfConfig)
    otel: OtelConfig = Field(default_factory=OtelConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)


class ApiSettings(_Strict):
    """The sections every entry point reads, the HTTP API's included: tenants, guardrails, queue,
    governance, server, logging.

    An API-only cold start (a cloud `api` function) validates these and no more: the job-processing
    sections are carried as given and validated by `core.config.worker.Settings`, which workers, the CLI and
    every deploy path (infra/aws/osls-config-check.js, infra/*/deploy.sh) load, so a broken file never ships.
    """

    data_dir: Path | None = Field(default=None, description="Embedded queue, stores, indexes and blobs.")
    providers: Any = Field(default_factory=dict, description="Provider connections (validated by Settings).")
    models: Any = Field(default_factory=dict, description="Model catalog (validated by Settings).")
    routing: Any = Field(default_factory=dict, description="Routing rules (validated by Settings).")
    templates: Any = Field(default_factory=dict, description="Keyed by `id@version` (validated by Settings).")
    guardrails: GuardrailsConfig = Field(default_factory=GuardrailsConfig)
    safety: SafetyConfig = Field(default_factory=SafetyConfig)
    tenants: dict[str, TenantConfig] = Field(default_factory=dict)

    @field_validator("tenants")
    @classmethod
    def _tenant_names(cls, tenants: dict[str, TenantConfig]) -> dict[str, TenantConfig]:
        for name in tenants:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"tenant name {name!r} is not valid: use {NAME_RULE}")
        return tenants

    operators: OperatorsConfig = Field(default_factory=OperatorsConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    embedded: EmbeddedConfig = Field(default_factory=EmbeddedConfig)
    process: ProcessConfig = Field(
        default_factory=ProcessConfig, description="Worker process tuning (garbage collector)."
    )
    governance: GovernanceConfig = Field(default_factory=GovernanceConfig)
    callbacks: CallbackConfig = Field(default_factory=CallbackConfig)
    workflows: dict[str, WorkflowConfig] = Field(
        default_factory=builtin_workflows,
        description="Multi-step jobs keyed by `name@version` (summarize@1 is built in).",
    )

    @field_validator("workflows")
    @classmethod
    def _workflow_ids(cls, workflows: dict[str, WorkflowConfig]) -> dict[str, WorkflowConfig]:
        return check_ids(workflows)

    retrieval: Any = Field(default_factory=dict, description="Retrieval backend (validated by Settings).")
    server: ServerConfig = Field(default_factory=ServerConfig)
    stream: StreamConfig = Field(default_factory=StreamConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)

    @model_validator(mode="after")
    def _tenant_policies(self) -> "ApiSettings":
        for name, t in self.tenants.items():
            chosen = t.safety or TenantSafety()
            for task, policy in [(None, chosen.default), *chosen.tasks.items()]:
                where = f"tenants.{name}.safety" + (f".tasks.{task}" if task else "")
                self.safety.known(where, policy)
        return self

    def resolved_data_dir(self) -> Path:
        if self.data_dir is not None:
            return self.data_dir.expanduser()
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(base) / "altostratus"
