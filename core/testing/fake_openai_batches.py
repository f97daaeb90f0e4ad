"""The fake OpenAI server's Batch API: files uploaded as multipart JSONL, batches completed at once (or expired),
and result and error files, each request answered as an online completion would be."""

from __future__ import annotations

import json
from typing import Any

from core.testing.fake_asgi import Streamed


class FakeOpenAIBatches:
    """The Batch API: `POST /v1/files` (multipart JSONL, purpose=batch), `POST /v1/batches`,
    `GET /v1/batches/{id}` (completed at once, or `expired` when `expire` is set: then every request is
    in the error file), `GET /v1/files/{id}/content`. `errors` names custom_ids answered with a 500."""

    def __init__(self, complete: Any) -> None:
        self.complete = complete
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.errors: set[str] = set()
        self.expire = False

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, dict[str, str]]:
        parts = path.strip("/").split("/")  # v1 files|batches [id] [content]
        if method == "POST" and parts == ["v1", "files"]:
            fid = f"file-{len(self.files) + 1}"
            self.files[fid] = _multipart_file(body, headers.get("content-type", ""))
            return 200, {"id": fid, "object": "file", "purpose": "batch", "bytes": len(self.files[fid])}, {}
        if method == "POST" and parts == ["v1", "batches"]:
            return 200, self._run(json.loads(body)), {}
        if method == "GET" and len(parts) == 3 and parts[1] == "batches" and parts[2] in self.batches:
            return 200, self.batches[parts[2]], {}
        if method == "GET" and len(parts) == 4 and parts[1] == "files" and parts[2] in self.files:
            return 200, Streamed([self.files[parts[2]]], "application/jsonl"), {}
        return 404, {"error": {"message": "no such object", "type": "invalid_request_error"}}, {}

    def _run(self, req: dict[str, Any]) -> dict[str, Any]:
        done, failed = [], []
        for line in filter(None, self.files[req["input_file_id"]].decode().splitlines()):
            item = json.loads(line)
            if self.expire:
                failed.append(
                    {
                        "custom_id": item["custom_id"],
                        "response": None,
                        "error": {
                            "code": "batch_expired",
                            "message": "This request could not be executed before the completion window expired.",
                        },
                    }
                )
            elif item["custom_id"] in self.errors:
                failed.append(
                    {
                        "custom_id": item["custom_id"],
                        "response": {
                            "status_code": 500,
                            "body": {"error": {"message": "The server had an error", "type": "server_error"}},
                        },
                        "error": None,
                    }
                )
            else:
                done.append(
                    {
                        "custom_id": item["custom_id"],
                        "response": {"status_code": 200, "body": self.complete(item["body"])},
                        "error": None,
                    }
                )
        out, err = self._file(done), self._file(failed)
        bid = f"batch_{len(self.batches) + 1}"
        self.batches[bid] = {
            "id": bid,
            "object": "batch",
            "endpoint": req["endpoint"],
            "status": "expired" if self.expire else "completed",
            "input_file_id": req["input_file_id"],
            "output_file_id": out,
            "error_file_id": err,
            "request_counts": {"total": len(done) + len(failed), "completed": len(done), "failed": len(failed)},
        }
        return {**self.batches[bid], "status": "validating"}

    def _file(self, lines: list[dict[str, Any]]) -> str | None:
        if not lines:
            return None
        fid = f"file-{len(self.files) + 1}"
        self.files[fid] = "".join(json.dumps(x) + "\n" for x in lines).encode()
        return fid


def _multipart_file(body: bytes, content_type: str) -> bytes:
    """The `file` part of a multipart/form-data body."""
    boundary = content_type.split("boundary=")[-1].strip('"').encode()
    for part in body.split(b"--" + boundary):
        head, _, content = part.partition(b"\r\n\r\n")
        if b'name="file"' in head:
            return content.removesuffix(b"\r\n")
    raise ValueError("no file part in the upload")
