"""Altostratus core: cloud-neutral job pipeline, routing, retrieval and retry governance.

Importing `core` loads no cloud SDK and no LLM SDK; those are imported where they are used.
"""

__version__ = "0.1.0"
