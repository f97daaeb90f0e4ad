"""Ship python3.12 bytecode in the Lambda bundle (run by the osls-bytecode plugin at package time).

Lambda's code folder is read-only, so a source-only bundle recompiles every module at every cold
start (`import anthropic`: 2.2 s from source, 1.0 s from bytecode, measured here). Dependencies are
compiled sourceless (`module.pyc` beside where `module.py` was, docstrings and asserts stripped)
and their sources removed, which keeps the zip under 10 MB; our own code keeps its sources, with
bytecode in `__pycache__`, so its tracebacks show source lines.

    python3.12 infra/aws/bytecode.py .serverless/requirements .
    python3.12 infra/aws/bytecode.py --clean .     # after the zip is written (the plugin does both)

Our code's bytecode is unchecked (the zip keeps no source mtimes), so it must not outlive the packaging
in the source tree: a python3.12 run there would import it instead of the sources edited since.
"""

from __future__ import annotations

import compileall
import py_compile
import sys
from pathlib import Path

OWN_CODE = ("core", "adapters")


def main(requirements: Path, service: Path) -> int:
    if sys.version_info[:2] != (3, 12):
        print(
            f"bytecode.py must run on Python 3.12 (the Lambda runtime), not {sys.version.split()[0]}; "
            "set ALTO_LAMBDA_PYTHON to a python3.12 binary",
            file=sys.stderr,
        )
        return 2
    if not compileall.compile_dir(str(requirements), quiet=1, legacy=True, optimize=2, workers=0):
        print("some dependency modules failed to compile; their sources are kept", file=sys.stderr)
    removed = 0
    for py in requirements.rglob("*.py"):
        if py.with_suffix(".pyc").exists():
            py.unlink()
            removed += 1
    for record in requirements.glob("*.dist-info/RECORD"):
        record.unlink()  # install bookkeeping, never read at run time
    for name in OWN_CODE:
        # unchecked: the zip doesn't keep source mtimes, and a checked .pyc that no longer matches its
        # source would be recompiled at every cold start; a deployed artifact never changes anyway
        compileall.compile_dir(
            str(service / name),
            quiet=1,
            workers=0,
            force=True,  # replace any older .pyc
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
    print(f"bytecode: {removed} dependency modules compiled sourceless; {', '.join(OWN_CODE)} compiled")
    return 0


def clean(service: Path) -> int:
    """Remove the unchecked bytecode `main` wrote into our code's folders (after the bundle is zipped)."""
    removed = 0
    for name in OWN_CODE:
        for pyc in (service / name).rglob(f"*.{sys.implementation.cache_tag}.pyc"):
            if unchecked(pyc):
                pyc.unlink()
                removed += 1
    print(f"bytecode: {removed} unchecked .pyc files of {', '.join(OWN_CODE)} removed from the source tree")
    return 0


def unchecked(pyc: Path) -> bool:
    """A hash-based .pyc whose source is never checked (PEP 552: flags 0b01 in the header's second word)."""
    with pyc.open("rb") as f:
        header = f.read(8)
    return len(header) == 8 and int.from_bytes(header[4:8], "little") == 0b01


if __name__ == "__main__":
    if sys.argv[1] == "--clean":
        sys.exit(clean(Path(sys.argv[2])))
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
