"""A Cloud Storage JSON API fake for `STORAGE_EMULATOR_HOST`: just what GcsBlobStore calls
(multipart and media uploads, media downloads, deletes, prefix listings), over real HTTP."""

from __future__ import annotations

import json
import threading
from typing import Any
from urllib.parse import parse_qs, unquote

from core.testing.fake_asgi import read_request


class FakeGcs:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        request = await read_request(scope, receive, send)
        if request is None:
            return
        body, headers = request
        path, method = scope["path"], scope["method"]
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}

        async def reply(status: int, payload: Any, raw: bytes | None = None) -> None:
            data = raw if raw is not None else json.dumps(payload).encode()
            ctype = b"application/octet-stream" if raw is not None else b"application/json"
            await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype)]})
            await send({"type": "http.response.body", "body": data})

        parts = path.strip("/").split("/")
        if method == "POST" and path.startswith("/upload/storage/v1/b/"):
            bucket = parts[4]
            if query.get("uploadType") == "multipart":
                boundary = headers["content-type"].split("boundary=")[1].strip('"').encode()
                sections = [s for s in body.split(b"--" + boundary) if s.strip() not in (b"", b"--")]
                meta = json.loads(sections[0].split(b"\r\n\r\n", 1)[1])
                data = sections[1].split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n")
                name = meta["name"]
            else:
                name, data = query["name"], body
            with self.lock:
                self.objects[(bucket, name)] = data
            return await reply(
                200,
                {"kind": "storage#object", "bucket": bucket, "name": name, "size": str(len(data)), "generation": "1"},
            )
        if path.startswith("/download/storage/v1/b/") and method == "GET":
            bucket, name = parts[4], unquote("/".join(parts[6:]))
            data = self.objects.get((bucket, name))
            if data is None:
                return await reply(404, {"error": {"code": 404, "message": "No such object"}})
            return await reply(200, None, raw=data)
        if path.startswith("/storage/v1/b/") and len(parts) >= 5 and parts[4] == "o":
            bucket = parts[3]
            if len(parts) == 5 and method == "GET":
                prefix = query.get("prefix", "")
                items = [
                    {"kind": "storage#object", "bucket": bucket, "name": n}
                    for (b, n) in sorted(self.objects)
                    if b == bucket and n.startswith(prefix)
                ]
                return await reply(200, {"kind": "storage#objects", "items": items})
            name = unquote("/".join(parts[5:]))
            if method == "DELETE":
                with self.lock:
                    found = self.objects.pop((bucket, name), None)
                if found is None:
                    return await reply(404, {"error": {"code": 404, "message": "No such object"}})
                return await reply(204, None, raw=b"")
        return await reply(404, {"error": {"code": 404, "message": f"fake GCS has no {method} {path}"}})
