"""LLM providers behind one port. Each provider's SDK is imported only when that provider is built."""

from core.providers.base import ChatRequest, ContextChunk, Provider, ProviderError

__all__ = ["ChatRequest", "ContextChunk", "Provider", "ProviderError"]
