"""`python -m core.entrypoints.cli`: the `alto` command without its console script (deploy checks, benchmarks)."""

import sys

from core.entrypoints.cli import main

sys.exit(main())
