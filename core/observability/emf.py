"""CloudWatch Embedded Metric Format: one JSON log line per record, on stdout, no SDK call.

Lambda sends stdout to CloudWatch Logs, which extracts the metrics declared in each line's `_aws`
member (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html):
each metric named there is a top-level number, each dimension a top-level string. Dimension sets
are chosen for the dashboard in serverless.yml: by status, by model, by error class, and the full
set. Writes are one `write` per line under a lock, so lines from two threads never interleave.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, TextIO

from core.models import Attempt, Job
from core.observability.metrics import AttemptRecord, JobRecord


class EmfSink:
    def __init__(self, namespace: str, stream: TextIO | None = None) -> None:
        self.namespace = namespace
        self.stream = stream
        self._lock = threading.Lock()

    def _emit(self, dimensions: list[list[str]], metrics: dict[str, tuple[float, str]], fields: dict[str, Any]) -> None:
        line = {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": self.namespace,
                        "Dimensions": dimensions,
                        "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in metrics.items()],
                    }
                ],
            },
            **fields,
            **{name: value for name, (value, _) in metrics.items()},
        }
        text = json.dumps(line, separators=(",", ":")) + "\n"
        with self._lock:
            out = self.stream or sys.stdout
            out.write(text)
            out.flush()

    def attempt(self, a: AttemptRecord, attempt: Attempt, job: Job) -> None:
        metrics: dict[str, tuple[float, str]] = {
            "Attempts": (1, "Count"),
            "AttemptLatency": (round(a.latency_s * 1000, 3), "Milliseconds"),
            "InputTokens": (a.input_tokens, "Count"),
            "OutputTokens": (a.output_tokens, "Count"),
            "CacheReadTokens": (a.cache_read_tokens, "Count"),
            "CacheWriteTokens": (a.cache_write_tokens, "Count"),
            "CostUsd": (a.cost_usd, "None"),
            "Fallbacks": (1 if a.fallback else 0, "Count"),
        }
        if a.ttft_s is not None:
            metrics["TimeToFirstToken"] = (round(a.ttft_s * 1000, 3), "Milliseconds")
        self._emit(
            [
                ["Outcome"],
                ["Model"],
                ["Model", "ErrorClass"],
                ["Tenant", "Task", "Model", "Provider", "Outcome", "ErrorClass"],
            ],
            metrics,
            {
                "Tenant": a.tenant,
                "Task": a.task,
                "Model": a.model,
                "Provider": a.provider,
                "Outcome": a.outcome,
                "ErrorClass": a.error_class,
                "Event": "attempt",
            },
        )

    def job(self, j: JobRecord, job: Job) -> None:
        self._emit(
            [["Status"], ["Model", "Status"], ["Tenant", "Task", "Model", "Status"]],
            {
                "Jobs": (1, "Count"),
                "JobLatency": (round(j.latency_s * 1000, 3), "Milliseconds"),
                "JobAttempts": (j.attempts, "Count"),
                "CacheHits": (1 if j.cache_hit else 0, "Count"),
                "DeadLetters": (1 if j.status == "dead_lettered" else 0, "Count"),
                "JobCostUsd": (j.cost_usd, "None"),
            },
            {"Tenant": j.tenant, "Task": j.task, "Model": j.model, "Status": j.status, "Event": "job"},
        )

    def picked(self, tenant: str, task: str, queue_age_s: float) -> None:
        self._emit(
            [["Tenant"], ["Tenant", "Task"]],
            {"QueueAge": (round(queue_age_s * 1000, 3), "Milliseconds")},
            {"Tenant": tenant, "Task": task, "Event": "picked"},
        )

    def finding(self, tenant: str, task: str, rule: str, action: str) -> None:
        self._emit(
            [["Rule"], ["Tenant", "Rule", "Action"]],
            {"SafetyFindings": (1, "Count")},
            {"Tenant": tenant, "Task": task, "Rule": rule, "Action": action, "Event": "finding"},
        )

    def deferred(self, tenant: str, task: str, model: str) -> None:
        self._emit(
            [["Model"], ["Tenant", "Task", "Model"]],
            {"Deferrals": (1, "Count")},
            {"Tenant": tenant, "Task": task, "Model": model, "Event": "deferred"},
        )

    def flush(self) -> None:
        return None
