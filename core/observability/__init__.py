"""Observability: one metrics port fed by the job lifecycle, and its exporters (Prometheus text,
CloudWatch EMF, OpenTelemetry GenAI spans and metrics), plus the opt-in audit log."""
