"""Build `stdlib-qa`, the retrieval evaluation set, in BEIR format (corpus.jsonl, queries.jsonl, qrels/test.tsv).

Corpus: the docstrings of public functions, classes and modules of 40 Python standard-library
modules, as CPython 3.11 ships them (Python Software Foundation License, permissive; see
LICENSE.md beside this file). Queries and relevance judgments were written for this project by
hand, phrased the way a developer asks (most avoid the function's own words, so a keyword index
alone can't match them). Run with Python 3.11 to regenerate byte-identical files:

    python3.11 benchmarks/data/build_stdlib_qa.py
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from pathlib import Path

MODULES = [
    "abc",
    "argparse",
    "asyncio",
    "base64",
    "bisect",
    "collections",
    "concurrent.futures",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "difflib",
    "enum",
    "fnmatch",
    "functools",
    "glob",
    "gzip",
    "hashlib",
    "heapq",
    "hmac",
    "html",
    "itertools",
    "json",
    "logging",
    "logging.handlers",
    "math",
    "os",
    "os.path",
    "pickle",
    "pprint",
    "random",
    "secrets",
    "shlex",
    "shutil",
    "statistics",
    "subprocess",
    "tempfile",
    "textwrap",
    "threading",
    "time",
    "timeit",
    "traceback",
    "urllib.parse",
    "uuid",
    "zipfile",
]

# (query, [relevant ids]) — the first id is the best answer (grade 2), the others also answer it (grade 1)
QUERIES: list[tuple[str, list[str]]] = [
    ("delete a folder and everything inside it", ["shutil.rmtree"]),
    ("copy only the permission bits from one file to another", ["shutil.copymode"]),
    ("how much free space is left on the disk", ["shutil.disk_usage"]),
    ("find files whose names match a wildcard like *.txt", ["glob.glob", "fnmatch.fnmatch", "fnmatch.filter"]),
    ("generate an unguessable token to put in a password reset link", ["secrets.token_urlsafe", "secrets.token_hex"]),
    ("middle value of a list of numbers", ["statistics.median"]),
    ("combine several already sorted sequences into one sorted stream", ["heapq.merge"]),
    ("get the three smallest items without sorting everything", ["heapq.nsmallest"]),
    ("every combination of items drawn from several lists", ["itertools.product"]),
    ("group adjacent elements that share the same key", ["itertools.groupby"]),
    ("remove the common indentation from a block of text", ["textwrap.dedent"]),
    ("break a long paragraph into lines no wider than 70 characters", ["textwrap.wrap", "textwrap.fill"]),
    (
        "show the differences between two lists of lines in patch format",
        ["difflib.unified_diff", "difflib.context_diff"],
    ),
    ("suggest the closest valid words for a typo", ["difflib.get_close_matches"]),
    ("a directory that is cleaned up automatically when I'm done with it", ["tempfile.TemporaryDirectory"]),
    ("run another program and capture what it prints", ["subprocess.run", "subprocess.check_output"]),
    ("turn a python object into bytes so it can be stored and loaded later", ["pickle.dumps", "pickle.dump"]),
    ("print a nested dictionary in a readable indented way", ["pprint.pprint", "pprint.pformat"]),
    ("encode binary data as base64 text", ["base64.b64encode"]),
    ("build a query string from a dictionary of parameters", ["urllib.parse.urlencode"]),
    ("split a web address into scheme, host, path and query", ["urllib.parse.urlsplit", "urllib.parse.urlparse"]),
    ("derive a key from a password with many iterations and a salt", ["hashlib.pbkdf2_hmac"]),
    ("compare two secrets without leaking timing information", ["hmac.compare_digest", "secrets.compare_digest"]),
    (
        "memoize a function so repeated calls with the same arguments are fast",
        ["functools.lru_cache", "functools.cache"],
    ),
    ("freeze some arguments of a function to make a new callable", ["functools.partial"]),
    ("tally how many times each element appears", ["collections.Counter"]),
    ("a dict subclass that supplies a default for missing keys", ["collections.defaultdict"]),
    ("a queue you can append to and pop from at both ends efficiently", ["collections.deque"]),
    ("tuple whose fields can be accessed by name", ["collections.namedtuple"]),
    ("duplicate an object including everything it references", ["copy.deepcopy"]),
    ("split a command line string the way a unix shell would", ["shlex.split"]),
    ("escape a filename so it is safe to paste into a shell command", ["shlex.quote"]),
    ("read settings from an ini style file with sections", ["configparser.ConfigParser", "configparser"]),
    ("seconds since the epoch as a float", ["time.time"]),
    ("pause execution for a while", ["time.sleep"]),
    ("time how long a small snippet of code takes to run", ["timeit.timeit", "timeit", "timeit.Timer"]),
    ("random unique identifier", ["uuid.uuid4"]),
    ("compress bytes in the format used by .gz files", ["gzip.compress"]),
    ("create an archive file such as zip or tar of a whole directory", ["shutil.make_archive"]),
    ("read an environment variable with a fallback value", ["os.getenv"]),
    ("visit every directory and file below a starting folder", ["os.walk"]),
    ("create nested directories including missing parents", ["os.makedirs"]),
    ("keep a list sorted while inserting new items", ["bisect.insort", "bisect.insort_right", "bisect.insort_left"]),
    ("pick random elements where some are more likely than others", ["random.choices"]),
    ("put the items of a list in random order", ["random.shuffle"]),
    ("largest integer that divides both numbers", ["math.gcd"]),
    ("parse a json document from a string", ["json.loads"]),
    ("make text safe to put inside html by escaping angle brackets and ampersands", ["html.escape"]),
    ("turn &amp; and &lt; back into characters", ["html.unescape"]),
    ("write a list of rows out as comma separated values", ["csv.writer"]),
    ("ignore a specific exception inside a with block", ["contextlib.suppress"]),
    ("send everything printed to standard output into a different file object", ["contextlib.redirect_stdout"]),
    ("mark a method that subclasses must implement", ["abc.abstractmethod"]),
    ("a set of named constant values", ["enum.Enum"]),
    ("generate __init__ and __repr__ automatically from class annotations", ["dataclasses.dataclass"]),
    ("run blocking calls in a pool of background threads", ["concurrent.futures.ThreadPoolExecutor"]),
    ("run a coroutine from synchronous code and get its result", ["asyncio.run"]),
    ("give up on an awaitable if it takes longer than a number of seconds", ["asyncio.wait_for", "asyncio.timeout"]),
    ("log file that starts a new file when it gets too big", ["logging.handlers.RotatingFileHandler"]),
    ("get the current exception's stack trace as a string", ["traceback.format_exc"]),
    (
        "convert a string like 2024-01-31 into a date object",
        ["datetime.datetime.strptime", "datetime.date.fromisoformat"],
    ),
    ("check whether a path points to an existing file or directory", ["os.path.exists"]),
]


def _doc(obj: object) -> str | None:
    d = inspect.getdoc(obj)
    return d.strip() if d and len(d.strip()) >= 15 else None


def build(out: Path) -> None:
    corpus: dict[str, tuple[str, str]] = {}
    for name in MODULES:
        mod = importlib.import_module(name)
        if d := _doc(mod):
            corpus[name] = (name, d[:1500])
        for attr in sorted(getattr(mod, "__all__", None) or dir(mod)):
            if attr.startswith("_"):
                continue
            obj = getattr(mod, attr, None)
            if not (inspect.isroutine(obj) or inspect.isclass(obj)):
                continue
            owner = getattr(obj, "__module__", None) or ""
            # keep the module's own objects and what it re-exports from private or C modules
            if (
                owner != name
                and not owner.startswith((name + ".", "_"))
                and owner not in ("genericpath", "posixpath", "posix")
            ):
                continue
            if d := _doc(obj):
                corpus.setdefault(f"{name}.{attr}", (f"{name}.{attr}", d[:1500]))
            if inspect.isclass(obj) and name in ("datetime",):
                for meth in ("strptime", "fromisoformat"):
                    m = getattr(obj, meth, None)
                    if m is not None and (md := _doc(m)):
                        corpus.setdefault(f"{name}.{attr}.{meth}", (f"{name}.{attr}.{meth}", md))
    missing = sorted({i for _, ids in QUERIES for i in ids} - set(corpus))
    if missing:
        sys.exit(f"relevant ids not in the corpus (different Python?): {missing}")
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w") as f:
        for _id, (title, text) in sorted(corpus.items()):
            f.write(json.dumps({"_id": _id, "title": title, "text": text}) + "\n")
    with open(out / "queries.jsonl", "w") as f:
        for i, (q, _) in enumerate(QUERIES, start=1):
            f.write(json.dumps({"_id": f"q{i}", "text": q}) + "\n")
    with open(out / "qrels" / "test.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for i, (_, ids) in enumerate(QUERIES, start=1):
            for rank, doc in enumerate(ids):
                f.write(f"q{i}\t{doc}\t{2 if rank == 0 else 1}\n")
    print(f"{len(corpus)} documents, {len(QUERIES)} queries -> {out}")


if __name__ == "__main__":
    build(Path(__file__).parent / "stdlib-qa")
