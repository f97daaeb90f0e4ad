"""Which Python packages each provider type (or optional feature) needs, and the install command that brings a
missing one."""

from __future__ import annotations

import importlib.util

# the packages each provider type imports, and the extra that installs them
NEEDS = {
    "anthropic": (("anthropic", "httpx2"), "anthropic"),
    "openai_compatible": (("httpx2",), "openai"),
    "bedrock": (("boto3",), "aws"),
}


def _importable(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a package whose import is broken, or blocked in sys.modules
        return False


def missing_sdk(provider_type: str) -> str | None:
    """What to install for a provider type whose SDK is missing here, or None when it can be built."""
    return missing_extra(*NEEDS.get(provider_type, ((), "")))


def missing_extra(packages: tuple[str, ...], extra: str) -> str | None:
    """What to install when one of `packages` is missing here (the extra that brings them), or None."""
    missing = [p for p in packages if not _importable(p)]
    if not missing:
        return None
    return (
        f"needs the Python package {missing[0]!r}, which is not installed: {install_command(extra)} "
        "(into the environment the service runs in)"
    )


def install_command(extra: str) -> str:
    """The pip command that adds an extra here: from the source checkout for an editable install (as `make`
    makes one), else from the package index."""
    import json
    from importlib.metadata import distributions

    # every copy of the metadata: a source tree on the path has its own egg-info, without direct_url.json
    urls = [d.read_text("direct_url.json") for d in distributions(name="altostratus")]
    editable = any(json.loads(raw).get("dir_info", {}).get("editable", False) for raw in urls if raw)
    return (
        f"pip install -e '.[{extra}]' (from the source checkout)" if editable else f"pip install 'altostratus[{extra}]'"
    )
