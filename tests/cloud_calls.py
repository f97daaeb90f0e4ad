"""Every cloud call a function's process makes, recorded at the SDK's transport, for the deploy proofs of the
clouds whose emulators judge no IAM (GCP, Azure).

`install(path, function)` wraps the two transports the Google and Azure SDKs use: gRPC channels (Pub/Sub,
Firestore, Secret Manager) through a client interceptor, and HTTP through requests' `Session.send` (Cloud
Storage, Table and Blob Storage). Each call becomes one JSON line: the function, the service's method, and
what IAM needs to judge it (a Firestore query's filters and order, a document's name, an object's key, a
topic, a secret). The proof tests read the lines back and check them against the deployment's grants.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

_LOCK = threading.Lock()


class Recorder:
    def __init__(self, path: str, function: str) -> None:
        self.path = path
        self.function = function

    def write(self, **call: Any) -> None:
        line = json.dumps({"function": self.function, **call}, default=str)
        with _LOCK, open(self.path, "a") as f:
            f.write(line + "\n")


def _message_dict(message: Any) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    pb = getattr(type(message), "pb", None)
    raw = pb(message) if pb is not None else message
    try:
        return MessageToDict(raw, preserving_proto_field_name=True)
    except Exception:  # not a protobuf message: nothing to say about it
        return {}


def _grpc_interceptor(recorder: Recorder) -> Any:
    import grpc

    class Interceptor(
        grpc.UnaryUnaryClientInterceptor,
        grpc.UnaryStreamClientInterceptor,
        grpc.StreamUnaryClientInterceptor,
        grpc.StreamStreamClientInterceptor,
    ):
        def _record(self, details: Any, request: Any) -> None:
            recorder.write(transport="grpc", method=details.method, request=_message_dict(request))

        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            self._record(details, request)
            return continuation(details, request)

        def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
            self._record(details, request)
            return continuation(details, request)

        def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
            return continuation(details, self._each(details, requests))

        def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
            return continuation(details, self._each(details, requests))

        def _each(self, details: Any, requests: Any) -> Any:
            for r in requests:
                self._record(details, r)
                yield r

    return Interceptor()


def install(path: str, function: str) -> None:
    """Record every gRPC and HTTP call this process makes from now on into `path`, as `function`'s."""
    import grpc
    import requests

    recorder = Recorder(path, function)
    interceptor = _grpc_interceptor(recorder)
    insecure, secure = grpc.insecure_channel, grpc.secure_channel

    def insecure_channel(*args: Any, **kwargs: Any) -> Any:
        return grpc.intercept_channel(insecure(*args, **kwargs), interceptor)

    def secure_channel(*args: Any, **kwargs: Any) -> Any:
        return grpc.intercept_channel(secure(*args, **kwargs), interceptor)

    grpc.insecure_channel, grpc.secure_channel = insecure_channel, secure_channel
    send = requests.Session.send

    def recorded_send(self: Any, request: Any, **kwargs: Any) -> Any:
        url = urlsplit(request.url)
        response = send(self, request, **kwargs)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if "name" not in query and isinstance(request.body, bytes):  # a multipart upload names its object inside
            found = re.search(rb'"name":\s*"([^"]+)"', request.body[:4096])
            if found:
                query["name"] = found.group(1).decode()
        recorder.write(
            transport="http",
            method=request.method,
            host=url.netloc,
            path=unquote(url.path),
            query=query,
            status=response.status_code,
        )
        return response

    requests.Session.send = recorded_send  # type: ignore[method-assign]


def read(path: str) -> list[dict[str, Any]]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []
