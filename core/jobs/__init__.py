"""The job lifecycle as named stages: submit and queries (the API side), then prepare → cache →
admit → attempt → finalize (the worker side, run by `pipeline.process`), and the operator's verbs.

Every state change goes through `ledger.Ledger`, whose named transitions check the allowed edges
(`core.models.TRANSITIONS`) and do the compare-and-set. Importing this package loads nothing.
"""
