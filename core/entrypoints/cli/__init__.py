"""`alto`: run the local service, ask questions, inspect jobs and the DLQ, ingest, check config.

Works with no config file at all: offline provider, data under ALTO_DATA_DIR or a per-user folder.
Each area's commands live in their own module and register their own subcommands.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from typing import Any, NoReturn

from pydantic import ValidationError

from core.entrypoints.cli import batch, completion, costs, data, explain, jobs, remote, run, worker
from core.errors import AltoError, InputError, NotFound

GLOBAL_OPTIONS = ("--config", "--url", "--api-key")


class Parser(argparse.ArgumentParser):
    """argparse, with a "did you mean" for a mistyped command or option."""

    def error(self, message: str) -> NoReturn:
        if (m := re.search(r"invalid choice: '([^']*)'", message)) is not None:
            choices = next((list(a.choices) for a in self._actions if isinstance(a, argparse._SubParsersAction)), [])
            message = message + _suggest(m.group(1), [str(c) for c in choices])
        super().error(message)


def _suggest(word: str, known: list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def build_parser() -> Parser:
    p = Parser(
        prog="alto",
        description="Altostratus: governed asynchronous LLM jobs on any cloud.",
        epilog="--config, --url and --api-key may also come after the command. Exit status: 0 done; "
        "1 the job failed, or what was asked can't be done (not found, already finished); 2 a usage "
        "or configuration mistake; 3 still not finished at --timeout; 130 interrupted.",
    )
    p.add_argument("--version", action="version", version=f"alto {_version()}")
    _global_options(p, default=None)
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for area in (run, worker, jobs, explain, data, costs, batch):
        area.register(sub)
    completion.register(sub, p)
    for leaf in _leaves(p):  # `alto config check --config x.yaml` works as users type it
        _global_options(leaf, default=argparse.SUPPRESS)
    return p


def _global_options(p: argparse.ArgumentParser, *, default: Any) -> None:
    p.add_argument(
        "--config", default=default, help="path to altostratus.yaml (default: $ALTO_CONFIG or ./altostratus.yaml)"
    )
    p.add_argument(
        "--url",
        default=os.environ.get("ALTO_URL") if default is None else default,
        help="a deployment's API base URL (default $ALTO_URL): jobs, dlq, costs and ask then go there "
        "over HTTP instead of the local data folder",
    )
    p.add_argument(
        "--api-key",
        default=default,
        help="with --url: the API key as a reference, env:NAME or file:PATH (default env:ALTO_API_KEY)",
    )


def _leaves(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [p]
    return [leaf for child in dict.fromkeys(subs[0].choices.values()) for leaf in _leaves(child)]


def _chosen(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)command parser the arguments reached: `alto jobs list` → the `jobs list` parser."""
    while subs := [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]:
        name = getattr(args, subs[0].dest, None)
        if name not in subs[0].choices:
            break
        p = subs[0].choices[name]
    return p


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The arguments; an unknown option is reported by the command it was given to, with its nearest option."""
    root = build_parser()
    args, extra = root.parse_known_args(argv)
    if extra:
        leaf = _chosen(root, args)
        known = [o for a in leaf._actions for o in a.option_strings]
        first = next((x for x in extra if x.startswith("-")), extra[0])
        leaf.error(f"unrecognized arguments: {' '.join(extra)}" + _suggest(first.split("=")[0], known))
    given = sys.argv[1:] if argv is None else argv
    args.url_from = "--url" if any(a == "--url" or a.startswith("--url=") for a in given) else "ALTO_URL"
    return args


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
        fix = "drop --url" if args.url_from == "--url" else "unset ALTO_URL (or run it where ALTO_URL is not set)"
        raise AltoError(
            f"{args.cmd} works on the local data folder and configuration, not over {args.url_from}; {fix} "
            f"(over HTTP: {', '.join(sorted(remote.REMOTE_COMMANDS))})"
        )
    return int(args.fn(args) or 0)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        return _dispatch(args)
    except NotFound as e:  # the same exit and words locally and over --url
        print(f"alto: {e}", file=sys.stderr)
        return 1
    except InputError as e:
        print(f"alto: {e}", file=sys.stderr)
        return 1 if e.status == 409 else 2  # 409: can't be done now (cancelling a finished job), not a mistake
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
