"""Which sinks a process feeds, from `observability` in the configuration (one place, for every runtime)."""

from __future__ import annotations

from typing import Any

from core.config.api import ApiSettings
from core.observability.metrics import Fanout, Metrics
from core.ports import BlobStore

_prometheus: Any = None  # one registry per process: `alto serve`'s worker loops and its /metrics share it
_otel: dict[tuple[Any, ...], Any] = {}  # one OtelSink per configuration: its providers live for the process


def prometheus_registry() -> Any:
    global _prometheus
    if _prometheus is None:
        from core.observability.prometheus import Registry

        _prometheus = Registry()
    return _prometheus


def build_metrics(settings: ApiSettings, *, prometheus: bool | None = None) -> Fanout:
    """Prometheus where a local HTTP server can expose it, EMF and OpenTelemetry where configured."""
    obs = settings.observability
    sinks: list[Metrics] = []
    if obs.prometheus if prometheus is None else prometheus:
        from core.observability.prometheus import PrometheusSink

        sinks.append(PrometheusSink(prometheus_registry()))
    if obs.emf.enabled:
        from core.observability.emf import EmfSink

        sinks.append(EmfSink(obs.emf.namespace))
    if obs.otel.enabled:
        sinks.append(_otel_sink(settings))
    return Fanout(sinks)


def _otel_sink(settings: ApiSettings) -> Any:
    from core.observability.otel import OtelSink

    providers = {name: getattr(p, "type", "") for name, p in dict(settings.providers).items()}
    models = {name: str(getattr(m, "model_id", None) or name) for name, m in dict(settings.models).items()}
    cfg = settings.observability.otel
    key = (
        cfg.endpoint,
        cfg.service_name,
        cfg.sample_ratio,
        tuple(sorted(providers.items())),
        tuple(sorted(models.items())),
    )
    if key not in _otel:
        _otel[key] = OtelSink(
            provider_types=providers,
            model_ids=models,
            endpoint=cfg.endpoint,
            service_name=cfg.service_name,
            sample_ratio=cfg.sample_ratio,
        )
    return _otel[key]


def close_otel() -> None:
    """Stop every OTLP exporter this process made (tests; a process that exits flushes at exit anyway)."""
    while _otel:
        _otel.popitem()[1].close()


def build_audit(settings: ApiSettings, blobs: BlobStore) -> Any:
    audit = settings.observability.audit
    if not audit.enabled:
        return None
    from core.observability.audit import AuditLog

    return AuditLog(
        audit, blobs, {name: str(getattr(m, "model_id", None) or name) for name, m in dict(settings.models).items()}
    )
