"""A workflow's inputs: inline text, or `blob:KEY` for a document in the blob store (claim-check).

At submit, inline text over `INLINE_CHARS` is moved to the blob store, so a job record stays small on
every store (DynamoDB items are 400 KB); a `blob:KEY` the caller gives must exist and lie under
`workflow-inputs/`: the rest of the blob store (other tenants' index snapshots, streams, audit logs) is
never an input, and each deployment grants its functions that one prefix for documents. The worker reads a blob
through the same extraction as `alto ingest` (PDF pages become sections, HTML headings Markdown), so the
map's chunks follow the document's structure.
"""

from __future__ import annotations

import hashlib
from pathlib import PurePosixPath

from core.errors import InputError
from core.ports import BlobStore

BLOB = "blob:"
INLINE_CHARS = 32_768
PREFIX = "workflow-inputs/"


def stash(inputs: dict[str, str], blobs: BlobStore | None) -> dict[str, str]:
    """Inputs as they are stored on the job: large text moved to the blob store, blob keys checked."""
    out: dict[str, str] = {}
    for name, value in inputs.items():
        if value.startswith(BLOB):
            key = value[len(BLOB) :]
            if not key.startswith(PREFIX) or ".." in key.split("/"):
                raise InputError(
                    f"inputs.{name}: a document must be uploaded under '{PREFIX}' (got '{key}'); put it at "
                    f"{PREFIX}NAME in the blob store and give blob:{PREFIX}NAME",
                    field=f"inputs.{name}",
                )
            if blobs is not None and not _exists(blobs, key):
                raise InputError(
                    f"inputs.{name}: no blob '{key}' in the blob store; upload the document first "
                    "(`alto ask --workflow NAME --file PATH` does)",
                    field=f"inputs.{name}",
                )
            out[name] = value
        elif len(value) > INLINE_CHARS and blobs is not None:
            data = value.encode()
            key = f"{PREFIX}{hashlib.sha256(data).hexdigest()}.txt"
            blobs.put(key, data)
            out[name] = BLOB + key
        else:
            out[name] = value
    return out


def load(value: str, blobs: BlobStore) -> str:
    """The text of an input: inline as given, or the blob's document text. Raises InputError."""
    if not value.startswith(BLOB):
        return value
    from core.retrieval.documents import read_text

    key = value[len(BLOB) :]
    try:
        data = blobs.get(key)
    except KeyError:
        raise InputError(f"the input blob '{key}' is gone from the blob store; upload it again and resubmit") from None
    read = read_text(key, PurePosixPath(key).suffix or ".txt", data)
    if read.skipped:
        raise InputError(f"the input blob '{key}' can't be read: {read.skipped}")
    if not read.text.strip():
        raise InputError(f"the input blob '{key}' has no text to work on (a scanned PDF needs OCR first)")
    return read.text


def _exists(blobs: BlobStore, key: str) -> bool:
    try:
        blobs.get(key)
    except KeyError:
        return False
    return True
