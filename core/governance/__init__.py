"""Retry governance beyond the single retry loop: response cache, rate limits, circuit breakers.

Everything here keeps its state in the StateStore port, so every worker of every runtime shares it
and each cloud backs it with its own conditional writes.
"""
