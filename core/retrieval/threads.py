"""BLAS threads for the NumPy that vector search and bm25s run on.

A worker answers many jobs at once on one event loop; NumPy's default BLAS threading (a thread per
core for every small matrix product) then fights itself and the neighbours: measured under a
neighbour's CPU load, vector search went from p50 24-28 ms / p99 43-59 ms on one BLAS thread to p50
248 ms / p99 732 ms with the default. So workers set `retrieval.blas_threads` (default 1) before NumPy
loads; a value already in the environment wins, and if NumPy was imported first, threadpoolctl (in
the `vector` and `bm25` extras) applies the limit instead.
"""

from __future__ import annotations

import logging
import os
import sys

from core.logs import log_event

VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def limit_blas(threads: int) -> None:
    for name in VARIABLES:
        os.environ.setdefault(name, str(threads))
    if "numpy" not in sys.modules:
        return  # the variables take effect when NumPy loads
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        log_event(
            "blas.threads_unset",
            logging.WARNING,
            threads=threads,
            reason="NumPy was imported before the worker started and threadpoolctl is not installed",
        )
        return
    threadpool_limits(int(os.environ["OPENBLAS_NUM_THREADS"]), user_api="blas")
