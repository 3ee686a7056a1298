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
from collections.abc import Callable
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
    str,  # request id
    int,  # bytes out
    float | None,  # upstream ms
    Principal | None,
    # From here on (snap[6:]), the values that repeat from request to request: LineRenderer
    # builds one line template per distinct tuple of them.
    str,  # method
    str,  # path
    str,  # query
    str,  # source ip
    bool,  # tls
    str | None,  # user agent
    str,  # route
    int,  # status
    str,  # decision
    str,  # reason
    str,  # diagnosis
    int | None,  # upstream status
    str,  # http version
    # Not part of a line template: the rare records that have findings are rendered whole.
    dict[str, Any] | None,  # findings (Exchange.findings), copied
]


class AuditEntry(NamedTuple):
    """A rendered record and its serialised line (ending in ``\\n``), as sinks receive them.

    ``record`` is None for entries made by :class:`LineRenderer` (no store sink and no
    subscriber needs the dict); ``orjson.loads(line)`` gives it back.

    An immutable tuple: one is built per request (a frozen dataclass costs several times more).
    """

    record: dict[str, Any] | None  # None when nothing needs the dict (see LineRenderer)
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
        ex.request_id,
        ex.bytes_out,
        ex.upstream_ms,
        ex.principal,
        req.method,
        req.path,
        req.query,
        req.client_ip or req.peer_ip,
        req.tls,
        req.headers.get("user-agent"),
        ex.route_name,
        ex.status,
        ex.decision,
        ex.reason,
        ex.diagnosis,
        ex.upstream_status,
        req.http_version,
        dict(ex.findings) if ex.findings is not None else None,
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
        request_id,
        bytes_out,
        upstream_ms,
        principal,
        method,
        path,
        query,
        source_ip,
        tls,
        user_agent,
        route,
        status,
        decision,
        reason,
        diagnosis,
        upstream_status,
        http_version,
        findings,
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
    if findings:
        bastion["findings"] = {
            _cap(text(str(k))): _finding(v, redactor, 0) for k, v in findings.items()
        }
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


#: How deep, and how many items per list or dict, a finding is written (the rest: cut).
FINDING_DEPTH = 4
FINDING_ITEMS = 64


def _finding(value: Any, redactor: Redactor, depth: int) -> Any:
    """A finding's value for the record: strings redacted (as client text: a finding may
    quote an object id or a name the client chose) and capped, containers bounded."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= FINDING_DEPTH:
        return TRUNCATED
    if isinstance(value, dict):
        return {
            _cap(redactor.redact_text(str(k))): _finding(v, redactor, depth + 1)
            for k, v in list(value.items())[:FINDING_ITEMS]
        }
    if isinstance(value, list | tuple):
        return [_finding(v, redactor, depth + 1) for v in value[:FINDING_ITEMS]]
    return _cap(redactor.redact_text(str(value)))


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
        "http": {"response": {"status_code": snap[13]}},
        "bastion": {"decision": snap[14], "render_error": True},
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


# --- Lines without records ---------------------------------------------------------------

#: Bounds of LineRenderer's caches (each emptied when full).
TEMPLATES_MAX = 1024
PRINCIPALS_MAX = 1024


def _json(value: Any) -> bytes:
    """``value`` as :func:`_serialise` writes it inside a record (TypeError for a string that
    is not valid UTF-8)."""
    out = orjson.dumps(value)
    if not out.isascii():
        for raw, escaped in _RAW_BREAKS:
            out = out.replace(raw, escaped)
    return out


def _literal(part: bytes) -> bytes:
    """``part`` as literal text of a ``bytes %`` format."""
    return part.replace(b"%", b"%%")


class LineRenderer:
    """Renders snapshots straight to their lines, byte for byte those of :func:`entry`, without
    building the record's dicts (for when no store sink and no subscriber needs them).

    Everything but the timestamp, duration, request id, bytes out and upstream time repeats
    from request to request (route, path, user agent, status ...): the line around those values
    is rendered (redacted, serialised) once per distinct combination and kept as a ``bytes %``
    format (at most :data:`TEMPLATES_MAX`); a principal's fields likewise, per principal object
    (at most :data:`PRINCIPALS_MAX`). The redactor must be deterministic (same input, same
    output), as :class:`~bastion.audit.redact.Redactor` is.
    """

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._templates: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}
        self._principals: dict[int, tuple[Principal, bytes, bytes]] = {}
        # int(wall * 1000) of the current second's first millisecond (none yet: far away)
        self._millis_base = -(2**62)
        self._second = b""  # "2024-05-01T12:00:00." of that second

    def entries(
        self, snaps: list[Snapshot], on_error: Callable[[Snapshot, Exception], AuditEntry]
    ) -> list[AuditEntry]:
        """One entry (``record`` None) per snapshot; ``on_error(snap, exc)`` gives the entry of
        a snapshot whose rendering raised."""
        templates = self._templates
        principals = self._principals
        text = self._redactor.redact_text
        out: list[AuditEntry] = []
        append = out.append
        for snap in snaps:
            try:
                if snap[19] is not None:  # findings: rendered whole, the rare way
                    append(_new_entry(AuditEntry, (None, entry(snap, self._redactor).line)))
                    continue
                wall, duration, rid, bytes_out, upstream_ms, principal = snap[:6]
                key = snap[6:19]
                template = templates.get(key)
                if template is None:
                    template = self._template(key)
                if principal is None:
                    user = token = b""
                else:
                    known = principals.get(id(principal))
                    if known is None or known[0] is not principal:
                        known = self._principal(principal)
                    _, user, token = known
                ms = int(wall * 1000) - self._millis_base
                if not 0 <= ms < 1000:
                    ms = self._new_second(wall)
                nanos = int(duration * 1e9)
                if nanos < 0:
                    nanos = 0
                rid = text(rid)
                if len(rid) > MAX_FIELD_CHARS:
                    rid = _cap(rid)
                rid_json = orjson.dumps(rid)
                if not rid_json.isascii():
                    rid_json = _json(rid)
                if upstream_ms is None:
                    line = template[0] % (
                        self._second,
                        ms,
                        nanos,
                        rid_json,
                        bytes_out,
                        user,
                        token,
                    )
                else:
                    if 0.0 <= upstream_ms < 1e9:
                        # What orjson writes for round(upstream_ms, 3) (its shortest form),
                        # for half the instructions: the same 3 decimals, trailing zeros cut.
                        upstream = (b"%.3f" % upstream_ms).rstrip(b"0")
                        if upstream[-1] == 46:  # "."
                            upstream += b"0"
                    else:
                        upstream = orjson.dumps(round(upstream_ms, 3))
                    line = template[1] % (
                        self._second,
                        ms,
                        nanos,
                        rid_json,
                        bytes_out,
                        user,
                        upstream,
                        token,
                    )
                append(_new_entry(AuditEntry, (None, line)))
            except TypeError:  # a string that is not valid UTF-8, an odd type: the full way
                try:
                    append(_new_entry(AuditEntry, (None, entry(snap, self._redactor).line)))
                except Exception as exc:
                    append(on_error(snap, exc))
            except Exception as exc:
                append(on_error(snap, exc))
        return out

    def _new_second(self, wall: float) -> int:
        """Start the second of ``wall``; its millisecond."""
        seconds, ms = divmod(int(wall * 1000), 1000)
        self._millis_base = seconds * 1000
        self._second = iso_timestamp(seconds)[:-4].encode()
        return ms

    def _template(self, key: tuple[Any, ...]) -> tuple[bytes, bytes]:
        """The ``bytes %`` formats (without, with upstream time) of a line, in :func:`render`'s
        field order; arguments: second, millis, duration, request id (JSON), bytes out, the
        principal's top-level fields, [upstream time (JSON)], the principal's token id."""
        (
            method,
            path,
            query,
            source_ip,
            tls,
            user_agent,
            route,
            status,
            decision,
            reason,
            diagnosis,
            upstream_status,
            http_version,
        ) = key
        redactor = self._redactor
        outcome = "success" if decision == "allow" and 0 < status < 400 else "failure"
        head = (
            b'{"@timestamp":"%b%03dZ","event":{"action":"http_request","outcome":'
            + _literal(_json(outcome))
            + b',"duration":%d'
            + (_literal(b',"reason":' + _json(reason)) if reason else b"")
            + _literal(
                b'},"http":{"version":'
                + _json(http_version)
                + b',"route":'
                + _json(route)
                + b',"request":{"method":'
                + _json(_cap(method))
                + b',"id":'
            )
            + b'%b},"response":{"status_code":'
            + _literal(_json(status))
            + b',"bytes":%d}},"url":{"path":'
            + _literal(_json(_cap(redactor.redact_text(path))))
        )
        if query:
            head += _literal(b',"query":' + _json(_cap(redactor.redact_query(query))))
        head += _literal(b'},"source":{"ip":' + _json(source_ip) + b"}") + b"%b"
        if user_agent:
            ua = _cap(redactor.redact_text(user_agent))
            head += _literal(b',"user_agent":{"original":' + _json(ua) + b"}")
        head += _literal(
            b',"bastion":{"route":'
            + _json(route)
            + b',"decision":'
            + _json(decision)
            + b',"tls":'
            + _json(tls)
        )
        if diagnosis:
            diagnosis = _cap(redactor.redact_diagnosis(diagnosis))
            head += _literal(b',"diagnosis":' + _json(diagnosis))
        if upstream_status is not None:
            head += _literal(b',"upstream_status":' + _json(upstream_status))
        template = (head + b"%b}}\n", head + b',"upstream_ms":%b%b}}\n')
        if len(self._templates) >= TEMPLATES_MAX:
            self._templates.clear()
        self._templates[key] = template
        return template

    def _principal(self, principal: Principal) -> tuple[Principal, bytes, bytes]:
        """The principal's top-level fields (user, client, api_key) and its ``token_id``."""
        user = b',"user":{"id":' + _json(principal.subject) + b"}"
        token = b""
        if principal.client_id:
            user += b',"client":{"id":' + _json(principal.client_id) + b"}"
        if principal.key_id:
            if principal.kind == "api_key":
                user += b',"api_key":{"id":' + _json(principal.key_id) + b"}"
            else:
                token = b',"token_id":' + _json(principal.key_id)
        known = (principal, user, token)  # holds the principal: its id stays its own
        if len(self._principals) >= PRINCIPALS_MAX:
            self._principals.clear()
        self._principals[id(principal)] = known
        return known
