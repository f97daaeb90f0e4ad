"""Images in a conversation: what a part may carry, where its bytes live, and what it costs in a window.

An image part holds base64 or `blob:KEY`. At submit, base64 is decoded, checked and claim-checked into the blob
store under `workflow-inputs/images/` (named by its content's hash; a thread's under its own prefix, erased with it),
so no stored job and no queue message ever holds an image; a worker loads the bytes when it builds the call. The window's estimate per image is Anthropic's
(width x height / 750 tokens, an image resized to at most 1,568 pixels a side); what a call costs is what the
provider reports.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import struct
from typing import NamedTuple

MAX_IMAGE_BYTES = 3_750_000  # Bedrock Converse's limit, the strictest of the providers (Anthropic 5 MB, OpenAI 20)
MEDIA_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}
PREFIX = "workflow-inputs/images/"  # under the prefix the API writes and the workers read already
LONG_SIDE = 1568
UNKNOWN_TOKENS = 1_600  # an image whose size can't be read counts as the largest a model is sent


class Image(NamedTuple):
    media_type: str
    key: str  # in the blob store
    data: bytes = b""  # loaded by the worker before the call


def sniff(data: bytes) -> str | None:
    """The media type the bytes say they are (PNG, JPEG, GIF or WebP), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def decoded(text: str) -> bytes:
    """A part's base64, decoded and checked (ValueError saying what is wrong)."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("an image's data is neither base64 nor blob:KEY") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError(f"an image is {len(data):,} bytes; at most {MAX_IMAGE_BYTES:,} are taken (upload it smaller)")
    if sniff(data) is None:
        raise ValueError("an image must be PNG, JPEG, GIF or WebP")
    return data


def key_for(data: bytes, prefix: str = PREFIX) -> str:
    return f"{prefix}{hashlib.sha256(data).hexdigest()}.{MEDIA_TYPES[sniff(data) or 'image/png']}"


def thread_prefix(tenant: str, thread_id: str) -> str:
    """Where a thread's inline images are kept: its own, so erasing the thread deletes them and nothing shared."""
    return f"{PREFIX}threads/{tenant}/{thread_id}/"


def size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the image's header, or None where it can't be read."""
    try:
        if data.startswith(b"\x89PNG"):
            return struct.unpack(">II", data[16:24])
        if data[:3] == b"GIF":
            return struct.unpack("<HH", data[6:10])
        if data[:4] == b"RIFF" and data[12:16] == b"VP8X":
            return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
        if data.startswith(b"\xff\xd8"):
            return _jpeg_size(data)
    except struct.error:
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame: height, then width
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return w, h
        i += 2 + length
    return None


def tokens(image: Image) -> int:
    """The window's estimate for one image: width x height / 750 after resizing to 1,568 pixels a side."""
    dims = size(image.data) if image.data else None
    if dims is None:
        return UNKNOWN_TOKENS
    w, h = dims
    scale = min(1.0, LONG_SIDE / max(w, h, 1))
    return max(1, math.ceil((w * scale) * (h * scale) / 750))
