"""Images in a job's turns: base64 claim-checked into the blob store at submit (never in a stored job), `blob:KEY`
checked to exist, each provider sent the image in its own form over real HTTP to its fake, counted in the window
by its size, and a model that does not read images refused at routing, fallbacks included."""

from __future__ import annotations

import base64
import math
import struct
import zlib
from typing import Any

import httpx
import pytest

from core.images import PREFIX, size, sniff
from core.models import JobRequest, JobStatus
from tests.test_api import ACME
from tests.test_routing import config, run


def png(width: int, height: int) -> bytes:
    """A real PNG (grey pixels): what a client would upload."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


IMAGE = png(300, 200)
B64 = base64.b64encode(IMAGE).decode()


def looking(**extra: Any) -> JobRequest:
    content = [{"type": "text", "text": "What is on this label?"}, {"type": "image", "data": B64}]
    return JobRequest.model_validate({"messages": [{"role": "user", "content": content}], **extra})


def seeing(urls: dict[str, str], model: str, **extra: Any) -> dict[str, Any]:
    cfg = config(urls, model, **extra)
    for m in cfg["models"].values():
        m["vision"] = True
    return cfg


def test_the_image_is_claim_checked_at_submit_and_never_stored_in_the_job(make_app, provider_fakes):
    _, urls = provider_fakes
    app = make_app(seeing(urls, "haiku"))
    job, _ = app.service.submit("acme", looking())
    stored = app.store.get(job.id).model_dump_json()
    assert B64[:200] not in stored
    [part] = [p for p in app.store.get(job.id).request.messages[0].content if p.type == "image"]
    key = part.data.removeprefix("blob:")
    assert key.startswith(PREFIX) and app.blobs.get(key) == IMAGE
    assert part.media_type == "image/png"


@pytest.mark.parametrize("model", ["haiku", "gpt", "nova"])
def test_each_provider_is_sent_the_image_in_its_own_form(make_app, provider_fakes, model):
    fakes, urls = provider_fakes
    [job] = run(make_app(seeing(urls, model)), looking())
    assert job.status is JobStatus.succeeded, job.error
    if model == "haiku":
        [image, text] = fakes["anthropic"].requests[-1]["messages"][0]["content"]
        assert image == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64}}
        assert text == {"type": "text", "text": "What is on this label?"}
    elif model == "gpt":
        [image, text] = fakes["openai"].bodies[-1]["messages"][1]["content"]
        assert image == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{B64}"}}
        assert text["text"] == "What is on this label?"
    else:
        [image, text] = fakes["bedrock"].bodies[-1]["messages"][0]["content"]
        assert image["image"]["format"] == "png" and base64.b64decode(image["image"]["source"]["bytes"]) == IMAGE
        assert text == {"text": "What is on this label?"}


def test_the_image_counts_in_the_window_by_its_size(make_app, provider_fakes):
    _, urls = provider_fakes
    [job] = run(make_app(seeing(urls, "haiku")), looking())
    assert size(IMAGE) == (300, 200) and sniff(IMAGE) == "image/png"
    a = job.assembly
    assert a.history_tokens == math.ceil(300 * 200 / 750)  # the last turn's image, counted with the earlier turns


def test_a_model_that_does_not_read_images_is_refused_at_routing_and_dropped_as_a_fallback(make_app, provider_fakes):
    _, urls = provider_fakes
    [job] = run(make_app(config(urls, "haiku")), looking())
    assert job.status is JobStatus.failed and job.attempts == []
    assert "does not read images" in job.error.message and "models.haiku.vision: true" in job.error.message
    cfg = config(urls, "haiku")
    cfg["models"]["haiku"]["vision"] = True
    cfg["routing"]["default"]["fallbacks"] = {"rate_limited": ["gpt"]}  # gpt has no vision here
    from core.routing import Router

    app = make_app(cfg)
    plan = Router(app.settings).plan("acme", looking(), input_tokens=100)
    assert plan.fallbacks["rate_limited"] == []
    assert any("'gpt' does not read images" in n for n in plan.notes)


def test_a_missing_blob_and_a_bad_image_are_refused_naming_the_part(live):
    _, url = live()
    text = {"type": "text", "text": "Read this"}
    bad = {"type": "image", "data": base64.b64encode(b"not an image at all").decode()}
    gone = {"type": "image", "data": "blob:workflow-inputs/images/none.png"}
    with httpx.Client(base_url=url, headers=ACME) as c:
        r = c.post("/v1/jobs", json={"messages": [{"role": "user", "content": [text, gone]}]})
        assert r.status_code == 422 and r.json()["error"]["field"] == "messages[0].content[1]", r.text
        r = c.post("/v1/jobs", json={"messages": [{"role": "user", "content": [text, bad]}]})
        assert r.status_code == 422 and "PNG, JPEG, GIF or WebP" in r.text, r.text
        r = c.post(
            "/v1/jobs", json={"messages": [{"role": "assistant", "content": [gone]}, {"role": "user", "content": "x"}]}
        )
        assert r.status_code == 422, r.text
