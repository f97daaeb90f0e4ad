"""`alto batch tick`: send the batch lane's due batches and apply the results that are in (what `alto serve`
does every `batch.poll_s`; run it from a scheduler where no `alto serve` runs)."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from core.entrypoints.cli.common import app_from


def cmd_batch(args: argparse.Namespace) -> int:
    app = app_from(args)

    async def tick() -> dict[str, int]:
        try:
            return await app.service.batch_tick()
        finally:
            await app.providers.aclose()

    print(json.dumps(asyncio.run(tick())))
    return 0


def register(sub: Any) -> None:
    b = sub.add_parser("batch", help="the batch lane: send due batches, apply finished ones")
    bsub = b.add_subparsers(dest="batch_cmd", required=True)
    bsub.add_parser("tick", help="send the batches that are due and apply the results that are in")
    b.set_defaults(fn=cmd_batch)
