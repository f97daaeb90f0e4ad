"""The operations console: plain HTML, CSS and JavaScript shipped as package data, served by `alto serve`
at `/`. It signs in with an API key (kept in the tab's session storage) and uses only the public API.

Its charts are drawn by Chart.js, vendored under `vendor/` with its licence by `make console-vendor` from the
version package.json pins (tests/test_console.py checks the copy is that version's file, byte for byte)."""

from __future__ import annotations

from importlib.resources import files

MEDIA = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
}
PAGES = ("app.js", "jobs.js", "job.js", "dlq.js", "overview.js", "more.js", "style.css")
VENDORED = ("chart.umd.min.js", "chart.js.LICENSE.md")


def asset(path: str) -> tuple[bytes, str] | None:
    """(bytes, media type) of the console file served at `path`, or None: only the files named here, so no
    path reaches anything else in the package."""
    if path == "/":
        name = "index.html"
    elif path.startswith("/console/vendor/") and path.rsplit("/", 1)[1] in VENDORED:
        name = "vendor/" + path.rsplit("/", 1)[1]
    elif path.startswith("/console/") and path.count("/") == 2 and path.rsplit("/", 1)[1] in PAGES:
        name = path.rsplit("/", 1)[1]
    else:
        return None
    return files(__package__).joinpath(name).read_bytes(), MEDIA["." + name.rsplit(".", 1)[1]]
