"""Secret Manager's AccessSecretVersion over real gRPC on loopback (Google ships no emulator for it), for
`SECRET_MANAGER_EMULATOR_HOST`: the adapter's own client, its own wire format, a NOT_FOUND for a missing
secret or version, as the service answers."""

from __future__ import annotations

from concurrent import futures
from typing import Any

SERVICE = "google.cloud.secretmanager.v1.SecretManagerService"


class FakeSecretManager:
    def __init__(self) -> None:
        self.versions: dict[str, list[bytes]] = {}  # projects/P/secrets/S -> payloads, version 1 first
        self.accessed: list[str] = []
        self._server: Any = None
        self.address = ""

    def add_version(self, project: str, secret: str, data: bytes) -> None:
        self.versions.setdefault(f"projects/{project}/secrets/{secret}", []).append(data)

    def _access(self, request: Any, context: Any) -> Any:
        import grpc
        from google.cloud.secretmanager_v1.types import resources, service

        self.accessed.append(request.name)
        secret, _, version = request.name.partition("/versions/")
        payloads = self.versions.get(secret, [])
        index = len(payloads) if version == "latest" else int(version) if version.isdigit() else 0
        if not payloads or not 1 <= index <= len(payloads):
            context.abort(grpc.StatusCode.NOT_FOUND, f"Secret Version [{request.name}] not found.")
        return service.AccessSecretVersionResponse(
            name=f"{secret}/versions/{index}", payload=resources.SecretPayload(data=payloads[index - 1])
        )

    def __enter__(self) -> FakeSecretManager:
        import grpc
        from google.cloud.secretmanager_v1.types import service

        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "AccessSecretVersion": grpc.unary_unary_rpc_method_handler(
                    self._access,
                    request_deserializer=service.AccessSecretVersionRequest.deserialize,
                    response_serializer=service.AccessSecretVersionResponse.serialize,
                )
            },
        )
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers((handler,))
        port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.address = f"127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.stop(grace=None)
