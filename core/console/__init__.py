"""The operations console: plain HTML, CSS and JavaScript shipped as package data, served by `alto serve`
at `/`. It signs in with an API key (kept in the tab's session storage) and uses only the public API."""

from __future__ import annotations

from importlib.resources import files

ASSETS = {"/": ("index.html", "text/html; charset=utf-8"), "/console/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/console/style.css": ("style.css", "text/css; charset=utf-8")}


def asset(path: str) -> tuple[bytes, str] | None:
    """(bytes, media type) of the console file served at `path`, or None."""
    found = ASSETS.get(path)
    if found is None:
        return None
    name, media_type = found
    return files(__package__).joinpath(name).read_bytes(), media_type
