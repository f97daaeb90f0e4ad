"""Routing: configuration decides which model and provider serve a request."""

from __future__ import annotations

from core.config import ModelConfig, RouteConfig, Settings
from core.models import JobRequest, RouteDecision


class Router:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def decide(self, tenant: str, request: JobRequest) -> tuple[RouteDecision, RouteConfig, ModelConfig]:
        route = self.settings.routing.default
        model = self.settings.models[route.model]
        decision = RouteDecision(provider=model.provider, model=route.model, model_id=model.model_id, reason="default route")
        return decision, route, model
