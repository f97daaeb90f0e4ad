"""Ports: the small interfaces every runtime implements once (embedded, AWS, GCP, Azure).

Store and queue ports are synchronous on purpose: every cloud SDK is synchronous and the embedded
SQLite calls take well under a millisecond; each port declares how it is called (its `Access`: remote
stores in a thread, the embedded ones in grouped commits) and the service layer never asks which it is. Only the provider port is async, because the provider call is the slow,
network-bound step that workers overlap. Queues come in three widths (send-only, consumer, pull) so no
platform implements a method only to raise; optional capabilities are protocols checked with isinstance.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from core.models import Job, JobStatus
from core.paging import Position

if TYPE_CHECKING:
    from core.chunks import ChunkRow, ContextChunk


class Delivery(NamedTuple):
    """One delivery of a queue message. `receive_count` counts deliveries including this one."""

    message_id: str
    body: str
    receive_count: int = 1
    receipt: Any = None
    attributes: Mapping[str, Any] = MappingProxyType({})


@runtime_checkable
class SendQueue(Protocol):
    """What submit, reconcile and replay need: put a job's message on the queue."""

    def send(self, body: str, *, delay_s: float = 0.0) -> str:
        """Enqueue `body`; returns the message id."""


@runtime_checkable
class JobQueue(SendQueue, Protocol):
    """What a consumer applies an outcome to. Push platforms (Pub/Sub, Service Bus, a Lambda batch)
    implement it; their `release` may raise `core.errors.Redeliver` to hand the message back."""

    def ack(self, delivery: Delivery) -> None:
        """The message is done: delete it."""

    def release(self, delivery: Delivery, *, delay_s: float = 0.0) -> None:
        """Hand the message back to be redelivered after `delay_s` (a retry or a deferral)."""


@runtime_checkable
class PullQueue(JobQueue, Protocol):
    """A queue a worker loop polls (the embedded SQLite queue; SQS, a Pub/Sub pull subscription and a Service
    Bus receiver under `alto worker`)."""

    def receive(self, *, max_messages: int = 10, visibility_timeout_s: float | None = None) -> list[Delivery]:
        """Take up to `max_messages` visible messages, hiding each for the visibility timeout (a cloud queue may
        long-poll: wait up to its configured time for the first message)."""


# Optional capabilities, checked with isinstance where they are used.


@runtime_checkable
class LeasedQueue(Protocol):
    """A pull queue whose deliveries stay hidden only while their consumer renews them (SQS visibility, a
    Service Bus lock); a long-running worker renews each one while its job runs (core.entrypoints.pull)."""

    def extend(self, deliveries: list[Delivery], seconds: float) -> list[Delivery]:
        """Keep `deliveries` hidden `seconds` from now; returns those whose lease could not be renewed."""


@runtime_checkable
class ClosingQueue(Protocol):
    """A pull queue holding something to settle when its worker stops (batched acknowledgements, a streaming
    pull, a receiver link)."""

    def close(self) -> None:
        """Settle what is pending and stop receiving; deliveries received and not yet run are handed back."""


@runtime_checkable
class DeadLetterFeed(Protocol):
    """A queue whose dead letters a local worker loop takes and hands to the operator (embedded queue)."""

    def take_dead_letters(self, limit: int = 100) -> list[Delivery]: ...


@runtime_checkable
class DeadLetterBrowser(Protocol):
    """Operator view of dead-lettered messages (the embedded queue; clouds use their console/DLQ)."""

    def dead_letters(self, *, limit: int = 100) -> list[Delivery]: ...

    def replay(self, message_id: str) -> bool: ...


@runtime_checkable
class SendNotifier(Protocol):
    """A queue that calls each of `listeners` after a send, so same-process workers wake at once."""

    listeners: list[Callable[[], None]]


@runtime_checkable
class CountingState(Protocol):
    """A state store that adds to counters inside a record in one statement, with no read and no retry
    (the embedded store); other stores get the same sums through a read and a compare-and-set."""

    def add_counts(self, key: str, group: str, deltas: dict[str, int | float], *, ttl_s: float | None = None) -> None:
        """`value["groups"][group][field] += delta` for each field (absent counts as 0, floats rounded to
        10 places; a zero delta adds nothing); an absent or expired record starts from nothing."""


class Access(Protocol):
    """How a port's calls are made, declared by the port as its `access` attribute (none: inline; see
    `core.access`). The embedded stores share one storage group, committed once per turn of the loop; remote
    stores run each call in a thread."""

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Awaitable[Any]:
        """`fn` called from an event loop; awaiting gives its result once its writes are durable."""

    def at_once(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn` now, on this thread, its writes (on every port of this access) committed together."""

    def after_commit(self, fn: Callable[[], None]) -> None:
        """`fn` once what this thread wrote so far is durable (now, where every call commits alone)."""


@runtime_checkable
class JobStore(Protocol):
    """Jobs by id, written with a compare-and-set on their version. A store may also declare
    `ordered_ids = True` (the embedded one, a B-tree): ids that sort by creation time are then appended to its
    index's last page instead of landing on a random one, so a commit writes fewer pages. Stores that hash or
    split by key (Firestore, which hotspots on ordered ids) leave it out and get purely random ids."""

    def create(self, job: Job) -> None:
        """Insert a new job; raises core.errors.ConflictError if the id exists."""

    def get(self, job_id: str) -> Job | None: ...

    def update(self, job: Job, *, expected_version: int) -> bool:
        """Write `job` only if the stored version is `expected_version`. Returns False on a lost race."""

    def list(
        self,
        *,
        tenant: str | None = None,
        status: JobStatus | None = None,
        limit: int = 50,
        updated_before: float | None = None,
        after: Position | None = None,
    ) -> list[Job]:
        """Newest first, by (created_at, id) descending; with `after` (the last job of the previous page), only
        jobs strictly after it in that order. With `updated_before`, only jobs last written before that time,
        oldest update first (the reconciler's sweep; `after` does not apply)."""


class StateRecord(NamedTuple):
    value: dict[str, Any]
    version: int
    expires_at: float | None = None


@runtime_checkable
class StateStore(Protocol):
    """A tiny conditional key-value store: idempotency keys, rate buckets, breakers, response cache.

    Every method is one conditional write on every cloud (DynamoDB condition expressions,
    Firestore transactions, Table Storage ETags), which is what keeps workers consistent.
    Expired records behave as absent.
    """

    def get(self, key: str) -> StateRecord | None: ...

    def put_if_absent(self, key: str, value: dict[str, Any], *, ttl_s: float | None = None) -> bool: ...

    def compare_and_set(
        self, key: str, value: dict[str, Any], *, expected_version: int, ttl_s: float | None = None
    ) -> bool: ...

    def delete(self, key: str) -> None: ...


@runtime_checkable
class BlobStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes:
        """Raises KeyError if absent."""

    def delete(self, key: str) -> None: ...

    def list(self, prefix: str = "") -> list[str]: ...


@runtime_checkable
class Secrets(Protocol):
    def resolve(self, ref: str) -> str:
        """Resolve a reference such as `env:NAME` or `file:/path`; raises ConfigError naming the fix."""


@runtime_checkable
class Retriever(Protocol):
    """Context for a question: the embedded index, a downloaded snapshot, or Postgres + pgvector."""

    def search(self, tenant: str, collection: str, query: str, k: int = 5) -> list[ContextChunk]:
        """Best first; `score` is the backend's relevance (BM25, cosine, or fused rank score)."""

    def collections(self, tenant: str) -> list[str]: ...

    def fetch(self, tenant: str, collection: str, chunk_ids: list[str]) -> list[ContextChunk]:
        """Chunks by id in the order asked (re-finalising a job, replaying one); missing ids are left out."""


@runtime_checkable
class DocumentIndex(Protocol):
    """What ingestion writes to: one document's chunks replaced atomically, keyed by source."""

    def document_hash(self, tenant: str, collection: str, source: str) -> str | None: ...

    def replace_document(
        self,
        tenant: str,
        collection: str,
        source: str,
        doc_id: str,
        title: str | None,
        content_hash: str,
        chunks: list[ChunkRow],
    ) -> None: ...

    def remove_document(self, tenant: str, collection: str, source: str) -> None: ...

    def sources(self, tenant: str, collection: str) -> list[str]: ...
