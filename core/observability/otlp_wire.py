"""OTLP protobuf encoded by hand: finished spans (trace/v1) and aggregated histograms (metrics/v1).

Why by hand: the SDK's encoder builds a message object per span, per attribute and per value, and hashes
the resource (a JSON dump) per span; it measured 45 µs a span at a 512-span batch, most of a job's
observability cost. The spans this project exports have a fixed shape (no events, links or trace state)
and attribute values of four scalar types, so they are written straight to wire format, with the
repeating parts (attribute keys, bounded string values) encoded once per process. The tests decode what
this writes with the official protobuf classes.

Field numbers, from trace.proto: Span{trace_id=1, span_id=2, parent_span_id=4, name=5, kind=6,
start_time_unix_nano=7 fixed64, end_time_unix_nano=8 fixed64, attributes=9, status=15, flags=16 fixed32};
Status{message=2, code=3}; KeyValue{key=1, value=2}; AnyValue{string=1, bool=2, int=3, double=4};
ScopeSpans{scope=1, spans=2}; InstrumentationScope{name=1}; Resource{attributes=1};
ResourceSpans{resource=1, scope_spans=2}; ExportTraceServiceRequest{resource_spans=1}. From metrics.proto,
laid out the same above the scope: ResourceMetrics{resource=1, scope_metrics=2}, ScopeMetrics{scope=1,
metrics=2}; Metric{name=1, description=2, unit=3, histogram=9}; Histogram{data_points=1,
aggregation_temporality=2}; HistogramDataPoint{start_time_unix_nano=2, time_unix_nano=3, count=4 (all
fixed64), sum=5 double, bucket_counts=6 packed fixed64, explicit_bounds=7 packed double, attributes=9,
min=11 double, max=12 double}.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

KIND_INTERNAL, KIND_CLIENT = 1, 3
STATUS_ERROR = 2
# SpanFlags: the parent's is-remote bit is known (0x100) and set (0x200), as the SDK's encoder writes them
FLAGS_LOCAL_PARENT, FLAGS_REMOTE_PARENT = 0x100, 0x300

_fixed64 = struct.Struct("<Q").pack
_double = struct.Struct("<d").pack
_fixed32 = struct.Struct("<I").pack
_KEYS: dict[str, bytes] = {}  # attribute key -> its encoded KeyValue.key field
_STRINGS: dict[tuple[str, Any, type], bytes] = {}  # (key, short value, its type) -> the whole encoded attribute
_STRINGS_MAX = 4096  # bounded dimensions repeat; the cap keeps memory flat whatever is sent
_UNIQUE: set[str] = set()  # keys whose values never repeat (a job id): caching them would only fill the cache


def never_cache(key: str) -> None:
    """Mark an attribute key whose every value is new, so its values never take the cache's room."""
    _UNIQUE.add(key)


_ONE_BYTE = [bytes((i,)) for i in range(0x80)]  # most varints here (tags, lengths, small ints) are one byte
_LEN_TAGS = [_ONE_BYTE[n << 3 | 2] for n in range(16)]  # length-delimited tags of fields 1-15


def varint(n: int) -> bytes:
    if n < 0x80:
        return _ONE_BYTE[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (a string, bytes or an embedded message)."""
    size = len(payload)
    tag = _LEN_TAGS[number] if number < 16 else varint(number << 3 | 2)
    return tag + (_ONE_BYTE[size] if size < 0x80 else varint(size)) + payload


def _value(v: Any) -> bytes:
    t = type(v)
    if t is bool:
        return b"\x10\x01" if v else b"\x10\x00"
    if t is int:  # int64 two's complement, as protobuf writes a negative varint
        return b"\x18" + varint(v & 0xFFFFFFFFFFFFFFFF)
    if t is float:
        return b"\x21" + _double(v)
    return field(1, str(v).encode())


def attribute(key: str, v: Any, number: int = 9) -> bytes:
    """One KeyValue as field `number` of its message (9 in a Span or a data point, 1 in a Resource)."""
    t = type(v)
    # bounded dimensions, flags and small counts (attempt numbers, zero cache tokens) repeat; the type is
    # part of the key because True == 1 in a dict
    cacheable = number == 9 and (t is str or t is bool or (t is int and 0 <= v < 256)) and key not in _UNIQUE
    if cacheable and (hit := _STRINGS.get((key, v, t))) is not None:
        return hit
    encoded_key = _KEYS.get(key)
    if encoded_key is None:
        encoded_key = _KEYS[key] = field(1, key.encode())
    out = field(number, encoded_key + field(2, _value(v)))
    if cacheable and (t is not str or len(v) <= 64) and len(_STRINGS) < _STRINGS_MAX:
        _STRINGS[(key, v, t)] = out
    return out


def span(
    trace_id: bytes,
    span_id: bytes,
    parent_id: bytes,
    name: str,
    kind: int,
    start_ns: int,
    end_ns: int,
    attrs: dict[str, Any],
    error: str | None,
    flags: int,
) -> bytes:
    """One finished span, encoded as an entry of ScopeSpans.spans (field 2)."""
    parts = [
        b"\x0a\x10",
        trace_id,
        b"\x12\x08",
        span_id,
        b"\x22\x08",
        parent_id,
        field(5, name.encode()),
        b"\x30",
        varint(kind),
        b"\x39",
        _fixed64(start_ns),
        b"\x41",
        _fixed64(end_ns),
    ]
    parts += [attribute(k, v) for k, v in attrs.items()]
    if error is not None:
        parts.append(field(15, field(2, error.encode()) + b"\x18" + varint(STATUS_ERROR)))
    parts.append(b"\x85\x01" + _fixed32(flags))  # field 16, fixed32: its tag (133) takes two varint bytes
    return field(2, b"".join(parts))


def resource(attrs: dict[str, Any]) -> bytes:
    """A Resource as ResourceSpans.resource (field 1): made once per exporter."""
    return field(1, b"".join(attribute(k, v, number=1) for k, v in attrs.items()))


def request(encoded_resource: bytes, scope_name: str, items: Iterable[bytes]) -> bytes:
    """An ExportTraceServiceRequest (or ExportMetricsServiceRequest: the same fields) holding one resource
    and one scope with these encoded spans (or metrics)."""
    scope_items = field(1, field(1, scope_name.encode())) + b"".join(items)
    return field(1, encoded_resource + field(2, scope_items))


TEMPORALITY_DELTA, TEMPORALITY_CUMULATIVE = 1, 2


def packed_bounds(bounds: Iterable[float]) -> bytes:
    """A histogram's explicit_bounds (field 7): the same for every point of a metric, so encoded once."""
    return field(7, b"".join(_double(float(b)) for b in bounds))


def histogram_point(
    attrs: Iterable[tuple[str, Any]],
    start_ns: int,
    time_ns: int,
    buckets: Iterable[int],
    count: int,
    total: float,
    low: float,
    high: float,
    bounds: bytes,
) -> bytes:
    """One HistogramDataPoint as Histogram.data_points (field 1); `bounds` from `packed_bounds`."""
    parts = [
        b"\x11",
        _fixed64(start_ns),
        b"\x19",
        _fixed64(time_ns),
        b"\x21",
        _fixed64(count),
        b"\x29",
        _double(total),
        field(6, b"".join(_fixed64(n) for n in buckets)),
        bounds,
    ]
    parts += [attribute(k, v) for k, v in attrs]
    parts += [b"\x59", _double(low), b"\x61", _double(high)]
    return field(1, b"".join(parts))


def histogram(name: str, description: str, unit: str, temporality: int, points: Iterable[bytes]) -> bytes:
    """One Metric holding a histogram, as ScopeMetrics.metrics (field 2)."""
    body = b"".join(points) + b"\x10" + varint(temporality)
    return field(2, field(1, name.encode()) + field(2, description.encode()) + field(3, unit.encode()) + field(9, body))
