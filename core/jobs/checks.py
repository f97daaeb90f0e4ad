"""Checks a request must pass both at submit and again on the worker: input guardrails and that a
named collection exists (an API-only app has no retriever to ask, so the worker asks)."""

from __future__ import annotations

from core.config.api import ApiSettings
from core.errors import CallbackRefused, GuardrailViolation, InputError
from core.guardrails import check_input
from core.models import JobRequest
from core.ports import Retriever


def missing_collection(retriever: Retriever | None, tenant: str, collection: str) -> str | None:
    """Why `collection` can't be used, if it has no documents for `tenant` (None: fine, or no way to tell)."""
    if retriever is None or collection in retriever.collections(tenant):
        return None
    return (
        f"collection '{collection}' has no documents for this tenant; ingest some with "
        f"`alto ingest PATH --collection {collection} --tenant {tenant}` or omit the field"
    )


def check_workflow(request: JobRequest, settings: ApiSettings) -> str:
    """The `name@version` of the workflow a request names; InputError naming the field if it can't run."""
    from core.config.workflows import resolve

    found = resolve(settings.workflows, str(request.workflow))
    if found is None:
        raise InputError(
            f"workflow '{request.workflow}' is not configured (known: {', '.join(sorted(settings.workflows))}); "
            "add it under `workflows` or fix the name",
            field="workflow",
        )
    name, config = found
    if config.input not in request.inputs:
        raise InputError(
            f"workflow {name} needs the input '{config.input}': give `inputs: {{\"{config.input}\": "
            'TEXT or "blob:KEY"}}`',
            field=f"inputs.{config.input}",
        )
    if extra := sorted(set(request.inputs) - {config.input}):
        raise InputError(
            f"workflow {name} takes only the input '{config.input}', not '{extra[0]}'", field=f"inputs.{extra[0]}"
        )
    return name


def check_request(request: JobRequest, tenant: str, settings: ApiSettings, retriever: Retriever | None) -> None:
    """Raise InputError naming the field a submitted request fails on."""
    if request.workflow is not None:
        check_workflow(request, settings)
    texts = [("prompt", request.prompt), ("system", request.system or "")]
    texts += [(f"messages[{i}].content", m.text()) for i, m in enumerate(request.messages or [])]
    if request.messages:  # the limits hold for the whole input, however it is split into turns
        texts.append(("messages", "\n\n".join(request.ask().texts())))
    for field, text in texts:
        try:
            check_input(text, settings.guardrails)
        except GuardrailViolation as e:
            raise InputError(str(e), field=field) from None
    if request.callback_url:
        from core.webhooks.targets import Policy  # ipaddress and socket: only for jobs with a callback

        try:
            Policy(settings.callbacks.allow, nat64_prefixes=settings.callbacks.nat64_prefixes).check_url(
                request.callback_url
            )
        except CallbackRefused as e:
            raise InputError(str(e), field="callback_url") from None
    if request.collection and (missing := missing_collection(retriever, tenant, request.collection)):
        raise InputError(missing, field="collection")
