"""`pull`: the long-running worker (`alto worker --cloud ...`) that pulls from its cloud's queue in a container."""

from __future__ import annotations

from pydantic import Field

from core.config.api import _Strict

SQS_MAX_WAIT_S = 20  # SQS long polling waits at most 20 s per ReceiveMessage


class PullConfig(_Strict):
    concurrency: int = Field(default=32, ge=1, le=1000, description="Jobs in flight per worker process.")
    job_deadline_s: float = Field(
        default=600.0,
        ge=10,
        le=43_200,
        description=(
            "The longest one delivery runs in a pull worker: no attempt starts that could end later, and the message's "
            "lease is kept alive until then at most. A deployment's termination grace period must be at least this "
            "plus `drain_margin_s`, so that SIGTERM lets every job in flight finish."
        ),
    )
    drain_margin_s: float = Field(
        default=15.0, ge=1, description="Time after the last job's deadline to hand back and acknowledge on SIGTERM."
    )
    wait_s: float = Field(
        default=SQS_MAX_WAIT_S,
        ge=0,
        le=SQS_MAX_WAIT_S,
        description="Long-poll wait of one receive (fewer empty receives, each one billed on SQS and Service Bus).",
    )
    extend_every_s: float | None = Field(
        default=None,
        gt=0,
        description=(
            "How often a running job's message lease (SQS visibility, Service Bus lock) is renewed; default a third of "
            "`queue.visibility_timeout_s`, so two renewals can fail before the message reappears."
        ),
    )
    host: str = Field(default="0.0.0.0", description="Where /healthz, /readyz and /metrics listen (the probes).")
    port: int = Field(default=8080, ge=0, le=65535)
