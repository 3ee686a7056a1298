"""Request-target hygiene, decided before routing.

A gateway that routes on a path the upstream later normalises differently can be bypassed
(``/public/../admin``, ``/public/%2e%2e/admin``, ``/admin;x``). We refuse such targets instead of
guessing how the upstream will read them: an allow-list of what a clean path looks like.
"""

from __future__ import annotations

import re

# Dot segments, raw or percent-encoded (any case), in any position.
_DOT_SEGMENT = re.compile(r"(?:^|/)(?:\.|%2e){1,2}(?:/|$)", re.IGNORECASE)
_BAD = re.compile(r"%00|%2f|%5c|\\|//", re.IGNORECASE)
_ALLOWED = re.compile(r"^/[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*$")


_CLEAN: set[str] = set()
_CLEAN_MAX = 10_000
_CLEAN_LEN = 256


def path_problem(path: str) -> str | None:
    """Why ``path`` (raw, without query) is refused, or None if it is clean.

    Clean paths are remembered (a bounded set, emptied when full): APIs see the same paths
    over and over, and a set lookup is ten times cheaper than the three patterns.
    """
    if path in _CLEAN:
        return None
    problem = _path_problem(path)
    if problem is None and len(path) <= _CLEAN_LEN:
        if len(_CLEAN) >= _CLEAN_MAX:
            _CLEAN.clear()
        _CLEAN.add(path)
    return problem


def _path_problem(path: str) -> str | None:
    if not path.startswith("/"):
        return "path must start with '/'"
    if not _ALLOWED.match(path):
        return "path contains characters outside RFC 3986"
    if _DOT_SEGMENT.search(path):
        return "path contains a dot segment"
    if _BAD.search(path):
        return "path contains an encoded slash, backslash, NUL or empty segment"
    return None


#: Methods the gateway forwards. TRACE (cross-site tracing), CONNECT (tunnels) and anything
#: else are refused with 405 before routing: an allow-list, not a deny-list.
ALLOWED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_matches(prefix: str, path: str) -> bool:
    """``/api`` matches ``/api`` and ``/api/x`` but not ``/apix``; ``/api/`` matches ``/api/x``."""
    if not path.startswith(prefix):
        return False
    return len(path) == len(prefix) or prefix.endswith("/") or path[len(prefix)] == "/"
