"""Google Cloud IAM, as far as the GCP deploy proof needs it: what each recorded call needs, what each binding
in infra/gcp grants, and which composite index a Firestore query needs.

Predefined roles are expanded to the permissions Google's IAM roles reference lists for them (only the
ones these functions can exercise: a role's other permissions never match a recorded call, so they can't
make a call look granted). IAM conditions are evaluated for the forms infra/gcp writes: `resource.name ==`,
`resource.name.startsWith(...)` and `api.getAttribute("storage.googleapis.com/objectListPrefix", "")
.startsWith(...)`, joined by `||`; any other form fails the proof rather than being guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

ROLE_PERMISSIONS = {
    "roles/datastore.user": {
        "datastore.entities.allocateIds",
        "datastore.entities.create",
        "datastore.entities.delete",
        "datastore.entities.get",
        "datastore.entities.list",
        "datastore.entities.update",
        "datastore.databases.get",
        "datastore.databases.getMetadata",
        "datastore.indexes.list",
        "datastore.namespaces.get",
        "datastore.namespaces.list",
    },
    "roles/pubsub.publisher": {"pubsub.topics.publish"},
    "roles/pubsub.subscriber": {
        "pubsub.subscriptions.consume",
        "pubsub.topics.attachSubscription",
        "pubsub.snapshots.seek",
    },
    "roles/storage.objectViewer": {"storage.objects.get", "storage.objects.list"},
    "roles/storage.objectUser": {
        "storage.objects.create",
        "storage.objects.delete",
        "storage.objects.get",
        "storage.objects.list",
        "storage.objects.restore",
        "storage.objects.update",
    },
    "roles/storage.objectCreator": {"storage.objects.create"},
    "roles/secretmanager.secretAccessor": {"secretmanager.versions.access"},
}
LIST_PREFIX = 'api.getAttribute("storage.googleapis.com/objectListPrefix", "")'


@dataclass(frozen=True)
class Need:
    """One permission a call needs, on one resource (as IAM names it), with its request attributes."""

    permission: str
    resource: str
    list_prefix: str | None = None


@dataclass
class Binding:
    function: str
    role: str
    resource: str  # what the binding is on: a project, a topic, a bucket, a secret
    condition: str | None = None
    used: set[Need] = field(default_factory=set)

    def grants(self, need: Need) -> bool:
        if need.permission not in ROLE_PERMISSIONS[self.role]:
            return False
        if not (need.resource == self.resource or need.resource.startswith(self.resource + "/")):
            return False
        return self.condition is None or condition_holds(self.condition, need)


def condition_holds(expression: str, need: Need) -> bool:
    for clause in (c.strip() for c in expression.split("||")):
        if m := re.fullmatch(r'resource\.name == "([^"]*)"', clause):
            if need.resource == m.group(1) or need.resource.startswith(m.group(1) + "/"):
                return True  # a database's documents are under its name
        elif m := re.fullmatch(r'resource\.name\.startsWith\("([^"]*)"\)', clause):
            if need.resource.startswith(m.group(1)):
                return True
        elif m := re.fullmatch(re.escape(LIST_PREFIX) + r'\.startsWith\("([^"]*)"\)', clause):
            if need.list_prefix is not None and need.list_prefix.startswith(m.group(1)):
                return True
        else:
            raise ValueError(f"a condition tests/gcp_iam.py does not evaluate: {clause}")
    return False


# ---------------------------------------------------------------- what a recorded call needs


def _database(request: dict[str, Any]) -> str:
    for key in ("database", "parent", "name"):
        if isinstance(request.get(key), str):
            return "/".join(request[key].split("/")[:4])
    names = request.get("documents") or [
        w.get("update", {}).get("name") or w.get("delete") for w in request.get("writes", [])
    ]
    return "/".join(str(names[0]).split("/")[:4])


def _firestore(method: str, request: dict[str, Any]) -> list[Need]:
    db = _database(request)
    if method in ("GetDocument", "BatchGetDocuments", "BeginTransaction", "Rollback"):
        return [Need("datastore.entities.get", db)]
    if method in ("RunQuery", "RunAggregationQuery", "ListDocuments"):
        return [Need("datastore.entities.list", db)]
    if method == "Commit":
        out = []
        for w in request.get("writes", []):
            if "delete" in w:
                out.append(Need("datastore.entities.delete", db))
            elif w.get("current_document", {}).get("exists") is False:
                out.append(Need("datastore.entities.create", db))
            else:  # a set is an upsert: it may create and may update
                out += [Need("datastore.entities.create", db), Need("datastore.entities.update", db)]
        return out
    raise ValueError(f"a Firestore method tests/gcp_iam.py does not map: {method}")


def _storage(call: dict[str, Any], written: set[str]) -> list[Need]:
    path, query, method = call["path"], call["query"], call["method"]
    parts = path.strip("/").split("/")
    if path.startswith("/upload/storage/v1/b/") and method == "POST":
        bucket, name = parts[4], query["name"]
        obj = f"projects/_/buckets/{bucket}/objects/{name}"
        needs = [Need("storage.objects.create", obj)]
        if obj in written:  # replacing an object needs its delete too
            needs.append(Need("storage.objects.delete", obj))
        written.add(obj)
        return needs
    if path.startswith("/download/storage/v1/b/"):
        return [Need("storage.objects.get", f"projects/_/buckets/{parts[4]}/objects/{'/'.join(parts[6:])}")]
    if path.startswith("/storage/v1/b/") and len(parts) == 5 and parts[4] == "o":
        return [Need("storage.objects.list", f"projects/_/buckets/{parts[3]}", list_prefix=query.get("prefix", ""))]
    if path.startswith("/storage/v1/b/") and len(parts) > 5:
        obj = f"projects/_/buckets/{parts[3]}/objects/{'/'.join(parts[5:])}"
        return [Need("storage.objects.delete" if method == "DELETE" else "storage.objects.get", obj)]
    raise ValueError(f"a Cloud Storage call tests/gcp_iam.py does not map: {method} {path}")


def needs(call: dict[str, Any], *, storage_host: str, written: set[str]) -> list[Need]:
    if call["transport"] == "http":
        return _storage(call, written) if call["host"] == storage_host else []
    service, _, method = call["method"].strip("/").partition("/")
    request = call["request"]
    if service == "google.pubsub.v1.Publisher" and method == "Publish":
        return [Need("pubsub.topics.publish", request["topic"])]
    if service == "google.pubsub.v1.Subscriber" and method in (
        "StreamingPull",
        "Pull",
        "Acknowledge",
        "ModifyAckDeadline",
    ):
        # a streaming pull names its subscription in its first request: the rest of the stream rides on it
        return [Need("pubsub.subscriptions.consume", request["subscription"])] if request.get("subscription") else []
    if service == "google.firestore.v1.Firestore":
        return _firestore(method, request)
    if service == "google.cloud.secretmanager.v1.SecretManagerService" and method == "AccessSecretVersion":
        return [Need("secretmanager.versions.access", request["name"].split("/versions/")[0])]
    raise ValueError(f"a gRPC call tests/gcp_iam.py does not map: {call['method']}")


# ---------------------------------------------------------------- Firestore's composite indexes


def query_shape(request: dict[str, Any]) -> tuple[str, list[str], list[tuple[str, str]]] | None:
    """(collection, equality fields, [(range or order field, direction)]) of a RunQuery, or None."""
    q = request.get("structured_query")
    if not q:
        return None
    collection = (q.get("from") or q["from_"])[0]["collection_id"]  # proto-plus spells the keyword from_
    filters = _filters(q.get("where", {}))
    equal = sorted(f for f, op in filters if op == "EQUAL")
    ranged = [f for f, op in filters if op not in ("EQUAL",)]
    orders = [(o["field"]["field_path"], o.get("direction", "ASCENDING")) for o in q.get("order_by", [])]
    for f in ranged:
        if f not in [o[0] for o in orders]:
            orders.insert(0, (f, "ASCENDING"))  # Firestore orders by an inequality's field first
    return collection, equal, orders


def _filters(where: dict[str, Any]) -> list[tuple[str, str]]:
    if "field_filter" in where:
        return [(where["field_filter"]["field"]["field_path"], where["field_filter"]["op"])]
    if "composite_filter" in where:
        return [f for sub in where["composite_filter"].get("filters", []) for f in _filters(sub)]
    return []


def needed_index(shape: tuple[str, list[str], list[tuple[str, str]]]) -> tuple[str, frozenset[str], tuple] | None:
    """The composite index a query needs, or None when Firestore's automatic single-field indexes serve it
    (one equality and nothing else, or only an order or range on one field)."""
    collection, equal, orders = shape
    if len(orders) > 1 and tuple(orders[-1]) == ("__name__", orders[-2][1]):
        orders = orders[:-1]  # every index ends with the document name, in its last field's direction
    if len(equal) + len({f for f, _ in orders}) <= 1:
        return None
    return collection, frozenset(equal), tuple((f, d) for f, d in orders)


def serves(index: list[tuple[str, str]], collection: str, need: tuple[str, frozenset[str], tuple]) -> bool:
    """A declared composite index (fields in order) serves a query: its equality fields first, in any
    order, then the query's order fields with their directions."""
    coll, equal, orders = need
    if coll != collection or len(index) != len(equal) + len(orders):
        return False
    head, tail = index[: len(equal)], index[len(equal) :]
    return {f for f, _ in head} == set(equal) and tuple(tuple(x) for x in tail) == tuple(orders)
