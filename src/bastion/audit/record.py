"""The audit record: one ECS-shaped JSON object per request, redacted, on exactly one line.

The work is split so the request path stays cheap: :func:`snapshot` copies the few values a
record needs out of the exchange (a tuple, about a microsecond); :func:`render` redacts and
shapes them later, off the request path; :func:`to_line` serialises with orjson. orjson escapes
every control character, so a ``\\n`` or ``\\r`` in a header or path can never start a second
record; :func:`to_line` also escapes U+0085, U+2028 and U+2029, which some line readers
(``str.splitlines``, JavaScript) treat as line breaks.

Field names follow ECS (``@timestamp``, ``event.*``, ``http.*``, ``url.*``, ``source.ip``,
``user.id``, ``user_agent.original``); Bastion's own fields live under ``bastion.*``. Absent
values are left out rather than written as null. Never in a record: a secret, a token, a
password, an API key's secret, a header value other than the User-Agent.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import orjson

from bastion.audit.redact import Redactor
from bastion.core.exchange import Exchange, Principal

#: Longest value kept for a client-controlled string (after redaction, so a cut never
#: un-masks a secret); longer values end in :data:`TRUNCATED`.
MAX_FIELD_CHARS = 2048
TRUNCATED = "...[truncated]"

# Line-break characters that orjson leaves raw (they are valid in JSON strings).
_RAW_BREAKS = (
    (b"\xc2\x85", b"\\u0085"),
    (b"\xe2\x80\xa8", b"\\u2028"),
    (b"\xe2\x80\xa9", b"\\u2029"),
)

Snapshot = tuple[
    float,  # started_wall
    float,  # duration in seconds
    str,  # method
    str,  # path
    str,  # query
    str,  # source ip
    bool,  # tls
    str | None,  # user agent
    str,  # request id
    str,  # route
    Principal | None,
    int,  # status
    str,  # decision
    str,  # reason
    str,  # diagnosis
    int,  # bytes out
    int | None,  # upstream status
    float | None,  # upstream ms
    str,  # http version
]


class AuditEntry(NamedTuple):
    """A rendered record and its serialised line (ending in ``\\n``), as sinks receive them.

    An immutable tuple: one is built per request (a frozen dataclass costs several times more).
    """

    record: dict[str, Any]
    line: bytes


# AuditEntry(record, line) without the named tuple's Python-level __new__ (one per request).
_new_entry = tuple.__new__


def snapshot(ex: Exchange, finished: float) -> Snapshot:
    """Copy what the record needs out of ``ex``; ``finished`` is ``time.monotonic()`` at the end.

    Cheap on purpose (it runs on the request path); the exchange may be reused afterwards.
    """
    req = ex.request
    return (
        ex.started_wall,
        finished - ex.started,
        req.method,
        req.path,
        req.query,
        req.client_ip or req.peer_ip,
        req.tls,
        req.headers.get("user-agent"),
        ex.request_id,
        ex.route_name,
        ex.principal,
        ex.status,
        ex.decision,
        ex.reason,
        ex.diagnosis,
        ex.bytes_out,
        ex.upstream_status,
        ex.upstream_ms,
        req.http_version,
    )


def iso_timestamp(wall: float) -> str:
    """``wall`` (seconds since the epoch) as ISO-8601 UTC with milliseconds, e.g.
    ``2024-05-01T12:00:00.123Z``."""
    seconds, ms = divmod(int(wall * 1000), 1000)
    cached = _second_prefix
    if cached[0] != seconds:  # one strftime per second, not per record
        cached = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds)))
        globals()["_second_prefix"] = cached
    return cached[1] + _MILLIS[ms]


_second_prefix: tuple[int, str] = (-1, "")
_MILLIS = tuple(f"{ms:03d}Z" for ms in range(1000))


def _cap(value: str) -> str:
    if len(value) <= MAX_FIELD_CHARS:
        return value
    return value[: MAX_FIELD_CHARS - len(TRUNCATED)] + TRUNCATED


def render(snap: Snapshot, redactor: Redactor) -> dict[str, Any]:
    """The ECS record for a snapshot; every client-controlled string goes through ``redactor``."""
    (
        wall,
        duration,
        method,
        path,
        query,
        source_ip,
        tls,
        user_agent,
        request_id,
        route,
        principal,
        status,
        decision,
        reason,
        diagnosis,
        bytes_out,
        upstream_status,
        upstream_ms,
        http_version,
    ) = snap
    # Runs once per request (off the request path, but on the same core): literal dicts, and
    # _cap called only for the rare long value.
    text = redactor.redact_text
    path = text(path)
    if len(path) > MAX_FIELD_CHARS:
        path = _cap(path)
    request_id = text(request_id)
    if len(request_id) > MAX_FIELD_CHARS:
        request_id = _cap(request_id)
    if len(method) > MAX_FIELD_CHARS:
        method = _cap(method)
    nanos = int(duration * 1e9)
    event: dict[str, Any] = {
        "action": "http_request",
        "outcome": "success" if decision == "allow" and 0 < status < 400 else "failure",
        "duration": nanos if nanos > 0 else 0,
    }
    if reason:
        event["reason"] = reason
    url: dict[str, Any] = {"path": path}
    if query:
        url["query"] = _cap(redactor.redact_query(query))
    bastion: dict[str, Any] = {"route": route, "decision": decision, "tls": tls}
    if diagnosis:
        bastion["diagnosis"] = _cap(redactor.redact_diagnosis(diagnosis))
    if upstream_status is not None:
        bastion["upstream_status"] = upstream_status
    if upstream_ms is not None:
        bastion["upstream_ms"] = round(upstream_ms, 3)
    record: dict[str, Any] = {
        "@timestamp": iso_timestamp(wall),
        "event": event,
        "http": {
            "version": http_version,
            "route": route,
            "request": {"method": method, "id": request_id},
            "response": {"status_code": status, "bytes": bytes_out},
        },
        "url": url,
        "source": {"ip": source_ip},
    }
    if principal is not None:
        record["user"] = {"id": principal.subject}
        if principal.client_id:
            record["client"] = {"id": principal.client_id}
        if principal.key_id:
            if principal.kind == "api_key":
                record["api_key"] = {"id": principal.key_id}
            else:
                bastion["token_id"] = principal.key_id
    if user_agent:
        record["user_agent"] = {"original": _cap(text(user_agent))}
    record["bastion"] = bastion
    return record


def build_record(ex: Exchange, redactor: Redactor, finished: float | None = None) -> dict[str, Any]:
    """The redacted ECS record of a completed exchange (``finished``: monotonic end time,
    default now)."""
    return render(snapshot(ex, time.monotonic() if finished is None else finished), redactor)


def to_line(record: dict[str, Any]) -> bytes:
    """``record`` as one JSON line ending in ``\\n``; no other line break can occur in it.

    Strings that are not valid UTF-8 (lone surrogates) are escaped rather than dropping the
    record.
    """
    return _serialise(record).line


def entry(snap: Snapshot, redactor: Redactor) -> AuditEntry:
    """Render and serialise one snapshot; the entry's record is always serialisable."""
    return _serialise(render(snap, redactor))


def minimal_entry(snap: Snapshot) -> AuditEntry:
    """A record with only Bastion's own values, for when :func:`render` fails on odd input."""
    record: dict[str, Any] = {
        "@timestamp": iso_timestamp(snap[0]),
        "event": {"action": "http_request", "outcome": "unknown"},
        "http": {"response": {"status_code": snap[11]}},
        "bastion": {"decision": snap[12], "render_error": True},
    }
    return _serialise(record)


def _serialise(record: dict[str, Any]) -> AuditEntry:
    try:
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        record = _scrub(record)
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    if not line.isascii():
        for raw, escaped in _RAW_BREAKS:
            line = line.replace(raw, escaped)
    return _new_entry(AuditEntry, (record, line))


def _scrub(value: Any) -> Any:
    """A copy of ``value`` whose strings are valid UTF-8 (surrogates backslash-escaped)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value
