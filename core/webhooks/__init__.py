"""Outbound webhooks (job callbacks): which targets may be called (`targets`), how a delivery is
signed (`signing`, Standard Webhooks), and how it is sent to the address that was checked (`sender`)."""
