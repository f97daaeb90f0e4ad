"""A job's images at submit and in the worker: base64 claim-checked into the blob store before the job is stored
(so no record or queue message holds one), a `blob:KEY` checked to exist, and the bytes loaded for the call."""

from __future__ import annotations

from dataclasses import replace

from core.conversation import Ask, ImagePart, Message
from core.errors import InputError, NoRoute
from core.images import PREFIX, Image, decoded, key_for, sniff, thread_prefix
from core.models import JobRequest
from core.ports import BlobStore


def stash_images(request: JobRequest, blobs: BlobStore | None, tenant: str) -> JobRequest:
    """The request with every base64 image moved to the blob store (named by its content; a thread's under the
    thread's prefix) and every blob:KEY checked; InputError naming the part otherwise."""
    if not any(_parts(m) for m in request.messages or ()):
        return request
    if blobs is None:
        raise InputError("this deployment has no blob store to keep images in", field="messages")
    prefix = thread_prefix(tenant, request.thread_id) if request.thread_id else PREFIX
    messages = [_stashed(m, i, blobs, prefix) for i, m in enumerate(request.messages or ())]
    return request.model_copy(update={"messages": messages})


def _parts(m: Message) -> list[ImagePart]:
    return [] if isinstance(m.content, str) else [p for p in m.content if isinstance(p, ImagePart)]


def _stashed(m: Message, i: int, blobs: BlobStore, prefix: str) -> Message:
    if not _parts(m):
        return m
    assert not isinstance(m.content, str)
    parts = []
    for j, p in enumerate(m.content):
        if isinstance(p, ImagePart):
            p = _one(p, blobs, f"messages[{i}].content[{j}]", prefix)
        parts.append(p)
    return m.model_copy(update={"content": parts})


def _one(p: ImagePart, blobs: BlobStore, field: str, prefix: str) -> ImagePart:
    if p.data.startswith("blob:"):
        try:
            blobs.get(p.data.removeprefix("blob:"))
        except KeyError:
            raise InputError(f"no blob {p.data.removeprefix('blob:')!r}: upload the image first", field=field) from None
        return p
    data = decoded(p.data)
    key = key_for(data, prefix)
    blobs.put(key, data)  # content-addressed: the same image twice is one object
    return ImagePart(type="image", data=f"blob:{key}", media_type=p.media_type or sniff(data))  # type: ignore[arg-type]


def with_image_data(ask: Ask, blobs: BlobStore | None) -> Ask:
    """The ask with its images' bytes loaded from the blob store (NoRoute, which fails the job, if one is gone)."""
    if not ask.images and not any(t.images for t in ask.history):
        return ask

    def load(images: tuple[Image, ...]) -> tuple[Image, ...]:
        if blobs is None:
            raise NoRoute("this deployment has no blob store to read images from")
        try:
            return tuple(i._replace(data=blobs.get(i.key)) for i in images)
        except KeyError as e:
            raise NoRoute(f"the image {e.args[0]!r} is no longer in the blob store") from None

    history = tuple(t._replace(images=load(t.images)) if t.images else t for t in ask.history)
    return replace(ask, history=history, images=load(ask.images))
