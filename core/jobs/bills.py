"""Bills: every billed call (and every response-cache hit, at $0 with what it saved) added to the usage
ledger that spend reports read. One collaborator for the attempt, the cache and the batch lane alike."""

from __future__ import annotations

import logging

from core.config.worker import ModelConfig
from core.errors import Contended
from core.governance.spend import UsageLedger, prompt_cache_saving
from core.jobs.offload import Offload
from core.logs import log_event
from core.models import Job, Usage


class Bills:
    def __init__(self, spend: UsageLedger, *, state_io: Offload) -> None:
        self.spend = spend
        self.state_io = state_io

    async def account(
        self,
        job: Job,
        model_name: str,
        model: ModelConfig | None,
        usage: Usage | None,
        *,
        saved_response_cache_usd: float = 0.0,
        saved_batch_usd: float = 0.0,
        lane: str = "online",
    ) -> None:
        """Add a billed call (or a response-cache hit) to the usage ledger, from an event loop."""
        if usage is not None:
            await self.state_io(
                self.add,
                job,
                model_name,
                model,
                usage,
                saved_response_cache_usd=saved_response_cache_usd,
                saved_batch_usd=saved_batch_usd,
                lane=lane,
            )

    def add(
        self,
        job: Job,
        model_name: str,
        model: ModelConfig | None,
        usage: Usage,
        *,
        saved_response_cache_usd: float = 0.0,
        saved_batch_usd: float = 0.0,
        lane: str = "online",
    ) -> None:
        """Reporting only: a write that keeps losing races is logged and skipped, never a reason to fail the job."""
        saving = (
            prompt_cache_saving(usage, model.input_per_mtok, model.cache_read_per_mtok, model.cache_write_per_mtok)
            if model is not None
            else 0.0
        )
        try:
            self.spend.add(
                tenant=job.tenant,
                task=job.request.task,
                model=model_name,
                lane=lane,
                job_id=job.id,
                usage=usage,
                saved_prompt_cache_usd=saving,
                saved_response_cache_usd=saved_response_cache_usd,
                saved_batch_usd=saved_batch_usd,
            )
        except Contended as e:
            log_event("usage.record_skipped", logging.WARNING, error=str(e))
