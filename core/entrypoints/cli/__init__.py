"""`alto`: run the local service, ask questions, inspect jobs and the DLQ, ingest, check config.

Works with no config file at all: offline provider, data under ALTO_DATA_DIR or a per-user folder.
Each area's commands live in their own module and register their own subcommands.
"""

from __future__ import annotations

import argparse
import os
import sys

from pydantic import ValidationError

from core.entrypoints.cli import batch, completion, costs, data, explain, jobs, remote, run
from core.errors import AltoError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="alto", description="Altostratus: governed asynchronous LLM jobs on any cloud.")
    p.add_argument("--version", action="version", version=f"alto {_version()}")
    p.add_argument("--config", help="path to altostratus.yaml (default: $ALTO_CONFIG or ./altostratus.yaml)")
    p.add_argument("--url", default=os.environ.get("ALTO_URL"),
                   help="a deployment's API base URL (default $ALTO_URL): jobs, dlq, costs and ask then go there "
                        "over HTTP instead of the local data folder")
    p.add_argument("--api-key", help="with --url: the API key as a reference, env:NAME or file:PATH "
                                     "(default env:ALTO_API_KEY)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for area in (run, jobs, explain, data, costs, batch):
        area.register(sub)
    completion.register(sub, p)
    return p


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("altostratus")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _dispatch(args: argparse.Namespace) -> int:
    if args.url and args.cmd in remote.REMOTE_COMMANDS:
        return remote.run(args)
    if args.url and args.cmd not in ("completion",):
        raise AltoError(f"alto {args.cmd} works on the local data folder and configuration; drop --url "
                        f"(--url serves {', '.join(sorted(remote.REMOTE_COMMANDS))})")
    return int(args.fn(args) or 0)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except AltoError as e:
        print(f"alto: {e}", file=sys.stderr)
        return 2
    except ValidationError as e:  # a request built from the command line (alto ask "")
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "input"
        print(f"alto: {where}: {first['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"alto: cannot read {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `alto jobs list | head`: the reader is done, and so are we
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


