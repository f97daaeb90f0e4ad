"""Streaming a queued job's output through the stores: written by the worker, served by any API instance."""
