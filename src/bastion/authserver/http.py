"""The authorization server's own request and response: plain data, no web framework.

Every endpoint of :mod:`bastion.authserver` is a coroutine ``handler(request) -> Response``. The ASGI
adapter builds a :class:`Request` (body already read, bounded), calls the handler and sends the
:class:`Response`; tests call handlers directly. Header names are lower-case.

OAuth parameters may appear at most once (RFC 6749 §3.1): :meth:`Request.param` and
:meth:`Request.form_param` raise :class:`DuplicateParameter` for a repeated one, which endpoints
turn into their protocol's ``invalid_request``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qs

import orjson

#: Headers every response of the authorization server carries.
BASE_HEADERS: tuple[tuple[str, str], ...] = (
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
)
#: Token, introspection and user-info responses must never be cached (RFC 6749 §5.1).
NO_STORE: tuple[tuple[str, str], ...] = (("cache-control", "no-store"), ("pragma", "no-cache"))
#: Server-rendered pages: no framing, no inline script from anywhere else, no caching.
PAGE_HEADERS: tuple[tuple[str, str], ...] = (
    (
        "content-security-policy",
        "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-frame-options", "DENY"),
    *NO_STORE,
)


class DuplicateParameter(ValueError):
    """A parameter given more than once."""

    def __init__(self, name: str) -> None:
        super().__init__(f"parameter {name!r} given more than once")
        self.name = name


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request to the authorization server.

    ``path`` is the decoded path without the query; ``query_string`` and ``body`` are raw;
    ``client_ip`` is the peer (or the address a trusted proxy named).
    """

    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    query_string: bytes = b""
    body: bytes = b""
    client_ip: str = ""
    scheme: str = "https"

    def query(self) -> dict[str, list[str]]:
        return parse_qs(self.query_string.decode("latin-1"), keep_blank_values=True)

    def form(self) -> dict[str, list[str]]:
        """The body as ``application/x-www-form-urlencoded`` (empty for other content types)."""
        ctype = self.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return {}
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            return {}
        return parse_qs(text, keep_blank_values=True)

    def param(self, name: str) -> str | None:
        """One query parameter; None when absent, DuplicateParameter when repeated."""
        return _single(self.query(), name)

    def form_param(self, name: str) -> str | None:
        """One form parameter; None when absent, DuplicateParameter when repeated."""
        return _single(self.form(), name)

    def cookies(self) -> dict[str, str]:
        raw = self.headers.get("cookie", "")
        if not raw:
            return {}
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw)
        except CookieError:
            return {}
        return {k: m.value for k, m in jar.items()}


def _single(values: Mapping[str, list[str]], name: str) -> str | None:
    got = values.get(name)
    if not got:
        return None
    if len(got) > 1:
        raise DuplicateParameter(name)
    return got[0]


@dataclass(slots=True)
class Response:
    """What a handler answers. ``headers`` are (lower-case name, value) pairs."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


def json_response(
    status: int, payload: object, *, extra: tuple[tuple[str, str], ...] = NO_STORE
) -> Response:
    return Response(
        status,
        orjson.dumps(payload),
        [("content-type", "application/json"), *BASE_HEADERS, *extra],
    )


def html_response(status: int, html: str, *, extra: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(
        status,
        html.encode("utf-8"),
        [("content-type", "text/html; charset=utf-8"), *BASE_HEADERS, *PAGE_HEADERS, *extra],
    )


def redirect(location: str, *, extra: tuple[tuple[str, str], ...] = ()) -> Response:
    """A 303 See Other (a browser follows it with GET, also after a POST)."""
    return Response(303, b"", [("location", location), *BASE_HEADERS, *NO_STORE, *extra])
