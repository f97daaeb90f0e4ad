"""`alto ingest` (documents into a collection, optionally published as a snapshot) and `alto config`
(validate the configuration, hash an API key, size a container deployment's replica cap)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from core.config.api import hash_api_key
from core.config.capacity import replica_cap
from core.config.load import load_settings
from core.config.secrets_check import missing_for_safety, missing_sdks, unresolved_secrets
from core.entrypoints.cli.common import DEFAULT_TENANT, app_from, valid_name
from core.secrets import EnvSecrets


def cmd_ingest(args: argparse.Namespace) -> int:
    app = app_from(args)
    stats = app.library.ingest(
        args.path,
        tenant=args.tenant,
        collection=args.collection,
        prune=args.prune,
        progress=(not args.quiet and sys.stderr.isatty()) or args.progress,
    )
    print(
        f"collection '{args.collection}' (tenant {args.tenant}): {stats.added} added, {stats.updated} updated, "
        f"{stats.unchanged} unchanged, {stats.removed} removed, {stats.chunks} chunks ({stats.tokens:,} tokens) written"
    )
    for s in stats.skipped:
        print(f"  skipped {s}", file=sys.stderr)
    for s in stats.failed:
        print(f"  not ingested: {s}", file=sys.stderr)
    for note in stats.notes:
        print(f"  note: {note}", file=sys.stderr)
    if args.publish:
        m = app.library.publish(args.tenant, args.collection)
        print(f"published snapshot {m.version}: {m.chunks} chunks, {m.vectors} vectors, {m.bytes:,} bytes -> {m.key}")
    if stats.failed:  # a script must see that a document it gave is not searchable
        print(
            f"alto ingest: {len(stats.failed)} document(s) not ingested (listed above); fix or remove them and "
            "run it again",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_replicas(args: argparse.Namespace) -> int:
    """The replica cap for `alto worker` deployments, from the configured limits (docs/clouds/containers.md)."""
    settings = load_settings(args.config)
    routed = {
        name: settings.models[name] for name in settings.routing.routed_models()
    }  # a model never routed to waits on no call
    cap = replica_cap(routed, settings.pull.concurrency, args.seconds_per_call)
    if args.json:
        print(json.dumps({"replicas": cap.replicas, "in_flight": cap.total, "per_model": cap.in_flight}))
        return 0
    for name, n in cap.in_flight.items():
        print(
            f"  {name}: " + ("no requests_per_minute or max_concurrency" if n is None else f"{n:.1f} calls in flight")
        )
    if cap.replicas is None:
        print("no cap: a model above has no limit, so only the provider's 429s bound the replicas (set its limits)")
    else:
        print(
            f"{cap.total:.1f} calls in flight at {args.seconds_per_call:g} s a call, {cap.concurrency} per replica "
            f"(pull.concurrency): at most {cap.replicas} replica(s) keep busy"
        )
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.config_cmd == "hash-key":
        print(hash_api_key(args.key))
        return 0
    if args.config_cmd == "replicas":
        return cmd_replicas(args)
    settings = load_settings(args.config)
    # a build machine installs the bundle's own packages (--skip-secrets); --bundle runs on the bundle's
    missing = missing_for_safety(settings) if args.bundle or not args.skip_secrets else []
    if not args.skip_secrets:
        missing = missing_sdks(settings) + missing
    if missing:
        print(
            "alto: the configuration is valid, but packages it needs are not installed here (its jobs would "
            "fail):\n" + "\n".join(missing),
            file=sys.stderr,
        )
        return 2
    if not args.skip_secrets and (problems := unresolved_secrets(settings, EnvSecrets())):
        print(
            "alto: the configuration is valid, but secrets it uses do not resolve here (jobs would fail):\n"
            + "\n".join(problems)
            + "\n(on a build machine without the service's secrets, pass --skip-secrets)",
            file=sys.stderr,
        )
        return 2
    if args.show:
        print(json.dumps(settings.model_dump(mode="json"), indent=2))
    summary = (
        f"config OK: {len(settings.providers)} providers, {len(settings.models)} models, "
        f"default route → {settings.routing.default.model}, {len(settings.tenants)} tenants, "
        f"data in {settings.resolved_data_dir()}"
    )
    print(summary, file=sys.stderr if args.show else sys.stdout)  # --show prints JSON alone on stdout
    return 0


def register(sub: Any) -> None:
    i = sub.add_parser("ingest", help="index documents into a collection")
    i.add_argument("path", help="a file, a folder, or blob:PREFIX for documents in the blob store")
    i.add_argument("--collection", type=valid_name, default="docs", help="the collection to ingest into (default docs)")
    i.add_argument("--tenant", default=DEFAULT_TENANT, type=valid_name, help=f"its tenant (default {DEFAULT_TENANT})")
    i.add_argument("--prune", action="store_true", help="remove documents no longer under PATH")
    i.add_argument("--quiet", action="store_true", help="no progress bar")
    i.add_argument("--progress", action="store_true", help="show the progress bar even when not a terminal")
    i.add_argument(
        "--publish",
        action="store_true",
        help="then upload the collection as a versioned snapshot to the blob store (serverless workers)",
    )
    i.set_defaults(fn=cmd_ingest)

    c = sub.add_parser("config", help="validate configuration or hash an API key")
    csub = c.add_subparsers(dest="config_cmd", required=True)
    cc = csub.add_parser("check")
    cc.add_argument("--show", action="store_true", help="print the effective configuration as JSON")
    cc.add_argument(
        "--skip-secrets",
        action="store_true",
        help="don't resolve env:/file: secret references (a build machine without the service's secrets)",
    )
    cc.add_argument(
        "--bundle",
        action="store_true",
        help="this Python runs on a deployment bundle's packages: check it holds the ones the configuration needs "
        "beyond the cloud's SDK (the vault's `cryptography` when a safety policy redacts, Presidio and its spaCy model "
        "when one looks for names)",
    )
    ch = csub.add_parser("hash-key", help="print the sha256: form of an API key for the config file")
    ch.add_argument("key", help="the API key to hash for tenants.X.api_keys")
    cr = csub.add_parser("replicas", help="the most `alto worker` replicas the provider limits keep busy")
    cr.add_argument("--seconds-per-call", type=float, default=5.0, help="a provider call's mean duration (5)")
    cr.add_argument("--json", action="store_true", help="print the cap and the calls in flight per model as JSON")
    c.set_defaults(fn=cmd_config)
