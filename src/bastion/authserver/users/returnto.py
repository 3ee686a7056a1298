"""The one place that decides where a login may send the browser afterwards.

Allow-list, not deny-list: ``return_to`` must be a relative reference to this server's
``/authorize`` endpoint with a query (``/authorize?…``), printable ASCII only (no CR/LF for a
``Location`` header, no backslash that browsers read as ``/``), and bounded in length.
Everything else — absolute URLs, ``//host``, ``/\\host``, percent-encoded tricks, other local
paths — falls back to the configured default page. Because the prefix is fixed, the path can
never leave this origin: only the query string is the caller's.
"""

from __future__ import annotations

#: The only path a login returns to.
AUTHORIZE_PREFIX = "/authorize?"
#: Longer values are refused rather than trimmed (a trimmed query changes its meaning).
MAX_RETURN_TO = 4096


def safe_return_to(value: str | None) -> str | None:
    """``value`` if it is an allowed return target, else None (the caller uses its default)."""
    if not value or len(value) > MAX_RETURN_TO:
        return None
    if not value.startswith(AUTHORIZE_PREFIX):
        return None
    # Printable ASCII without space: no header injection, no unicode look-alikes.
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in value):
        return None
    if "\\" in value or "#" in value:
        return None
    return value
