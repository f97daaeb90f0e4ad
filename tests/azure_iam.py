"""Azure RBAC, as far as the Azure deploy proof needs it: the data actions each recorded call needs, the role
assignments main.bicep makes for each app's identity, and the built-in roles' data actions as Azure's
built-in roles reference lists them (only those these apps can exercise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from tests.bicep import Bicep

BLOBS = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs"
ENTITIES = "Microsoft.Storage/storageAccounts/tableServices/tables/entities"
ROLE_ACTIONS = {
    "serviceBusSender": {"Microsoft.ServiceBus/*/send/action"},
    "serviceBusReceiver": {"Microsoft.ServiceBus/*/receive/action"},
    "tableDataContributor": {f"{ENTITIES}/{a}" for a in ("read", "write", "delete", "add/action", "update/action")},
    "blobDataContributor": {f"{BLOBS}/{a}" for a in ("read", "write", "delete", "add/action", "move/action")},
    "blobDataReader": {f"{BLOBS}/read"},
    "blobDataOwner": {f"{BLOBS}/{a}" for a in ("read", "write", "delete", "add/action", "move/action", "tags/write")},
    "keyVaultSecretsUser": {
        "Microsoft.KeyVault/vaults/secrets/getSecret/action",
        "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
    },
}
SERVICE_BUS = {"send": "Microsoft.ServiceBus/*/send/action", "receive": "Microsoft.ServiceBus/*/receive/action"}
TABLE_METHOD = {
    "GET": "read",
    "HEAD": "read",
    "POST": "add/action",
    "PUT": "write",
    "MERGE": "update/action",
    "PATCH": "update/action",
    "DELETE": "delete",
}
BLOB_METHOD = {"GET": "read", "HEAD": "read", "PUT": "write", "DELETE": "delete"}
# The Functions host's own needs, which no line of ours makes: AzureWebJobsStorage with a managed identity
# (leases, timer locks, the Flex Consumption deployment package) takes Storage Blob Data Owner on that account
PLATFORM = ("platform", f"{BLOBS}/write", "host-storage")


@dataclass(frozen=True)
class Need:
    action: str
    resource: str  # "queue:NAME", "table:NAME", "container:NAME", "secret:NAME", "host-storage"


@dataclass
class Assignment:
    app: str
    role: str
    resource: str
    used: set[Need] = field(default_factory=set)

    def grants(self, need: Need) -> bool:
        return need.resource == self.resource and any(
            need.action == a
            or (a.endswith("/*/send/action") and need.action.endswith("/send/action"))
            or (a.endswith("/*/receive/action") and need.action.endswith("/receive/action"))
            for a in ROLE_ACTIONS[self.role]
        )


def _find(node: Any, key: str) -> Any:
    """The first `roles.X` or scope-like accessor below `node` (pycep's AST is nested dicts)."""
    if isinstance(node, dict):
        op = node.get("operator")
        if op and op.get("type") == "property_accessor" and op["operands"]["operand_1"] == key:
            return op["operands"]["operand_2"]
        for v in node.values():
            if (found := _find(v, key)) is not None:
                return found
    if isinstance(node, list):
        for v in node:
            if (found := _find(v, key)) is not None:
                return found
    return None


def assignments(bicep: Bicep) -> list[Assignment]:
    """Every role assignment main.bicep makes for an app's identity, one per app it loops over."""
    scopes = {  # scope resource -> what a call names
        "jobsQueue": f"queue:{bicep.var('queueName')}",
        "jobsTable": f"table:{bicep.resource('jobsTable')['config']['name']}",
        "stateTable": f"table:{bicep.resource('stateTable')['config']['name']}",
        "dataContainer": f"container:{bicep.resource('dataContainer')['config']['name']}",
        "hostStorage": "host-storage",
        "secret": f"secret:{bicep.var('secretName')}",
        "vaultKey": f"secret:{bicep.var('vaultKeyName')}",
    }
    out = []
    for _name, res in bicep.tree["resources"].items():
        if res["type"] != "Microsoft.Authorization/roleAssignments" or "loop_type" not in res["config"]:
            continue  # the deployer's assignment is not an app's
        loop, body = res["config"]["loop_type"]["detail"]["array_name"], res["config"]["config"]
        apps = bicep.value(loop)
        role = _find(body["properties"]["roleDefinitionId"], "roles")
        for app in apps:
            out.append(Assignment(app, role, scopes[body["scope"]]))
    return out


def needs(call: dict[str, Any], *, table_host: str, blob_host: str) -> list[Need]:
    if call["transport"] == "servicebus":
        return [Need(SERVICE_BUS[call["method"]], f"queue:{call['entity'].split('/')[0]}")]
    if call["transport"] == "keyvault":
        return [Need("Microsoft.KeyVault/vaults/secrets/getSecret/action", f"secret:{call['secret']}")]
    if call["transport"] != "http":
        raise ValueError(f"a call tests/azure_iam.py does not map: {call}")
    parts = unquote(call["path"]).strip("/").split("/")  # devstoreaccount1/NAME...
    if call["host"] == table_host:
        table = parts[1].split("(")[0]
        return [Need(f"{ENTITIES}/{TABLE_METHOD[call['method']]}", f"table:{table}")]
    if call["host"] == blob_host:
        return [Need(f"{BLOBS}/{BLOB_METHOD[call['method']]}", f"container:{parts[1]}")]
    return []
