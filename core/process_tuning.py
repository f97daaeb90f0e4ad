"""The garbage collector's settings for a worker process, applied once, when it is ready for jobs.

A worker's heap is mostly what it imported (the SDKs, pydantic's schemas) plus a stream of short-lived
objects per job. CPython's defaults collect the young generation every 700 allocations (several times per
job) and, every so often, walk the whole heap again, imports included. Freezing what is alive at start-up and
collecting the young generation less often is the usual cure for long-running servers; both are settings
(`process:`), and both apply to the first worker start in a process, never to an import.
"""

from __future__ import annotations

import gc

from core.config.api import ProcessConfig

_applied = False


def apply_once(cfg: ProcessConfig) -> None:
    """Apply `cfg` to this process, once (later calls, with any settings, change nothing)."""
    global _applied
    if _applied:
        return
    _applied = True
    if cfg.gc_young_threshold:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(cfg.gc_young_threshold, older, oldest)
    if cfg.gc_freeze:
        # no gc.collect() first: it takes 110-145 ms here (a cold start's worth), and the collections
        # during import already left no cyclic garbage after bootstrap (measured: 0 unreachable objects)
        gc.freeze()
