"""A small client of the admin API for the CLI: bearer token from a private file, JSON in and
out, problem+json turned into one :class:`AdminApiError`.

The token file must be readable by its owner only (mode 0600 or stricter): a token that other
local users can read is refused before it is sent anywhere. The token never appears in an
error message.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

import httpx

#: Where the CLI looks for the token when no file is named.
DEFAULT_TOKEN_FILE = Path("~/.config/bastion/admin-token")
MAX_TOKEN_FILE_BYTES = 16 * 1024


class AdminApiError(Exception):
    """The admin API refused the call or could not be reached; ``code`` is the problem's
    stable code (``transport.error`` when nothing answered)."""

    def __init__(self, status: int, code: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        #: The problem's ``detail`` (or ``title``) alone, for a message worded by the caller.
        self.detail = detail


def read_token_file(path: Path) -> str:
    """The token in ``path``; ValueError (message fit for a user) when the file is missing,
    readable by others, too large or empty."""
    path = path.expanduser()
    try:
        info = path.stat()
    except OSError:
        raise ValueError(f"token file {str(path)!r} not found") from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"token file {str(path)!r} is not a regular file")
    if info.st_mode & 0o077:
        raise ValueError(
            f"token file {str(path)!r} is readable by others (mode {info.st_mode & 0o777:o}); "
            "chmod 600 it"
        )
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise ValueError(f"token file {str(path)!r} belongs to another user")
    if info.st_size > MAX_TOKEN_FILE_BYTES:
        raise ValueError(f"token file {str(path)!r} is too large")
    token = path.read_text(encoding="utf-8").strip()
    if not token or any(c.isspace() for c in token):
        raise ValueError(f"token file {str(path)!r} does not hold one token")
    return token


def admin_url(control: Any) -> str:
    """The base URL of the admin API served at ``control.bind`` of a config's ``control``
    section (https when it has a TLS certificate); ValueError when there is no section."""
    if control is None:
        raise ValueError("the config has no 'control' section; use --url")
    scheme = "https" if control.tls_cert else "http"
    return f"{scheme}://{control.bind}"


class AdminClient:
    """Calls ``/admin/v1`` at ``base_url`` with ``token``. ``transport`` is for tests (an
    ``httpx.ASGITransport`` over the app)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        # httpx logs every request at INFO; the CLI configures INFO, and its stderr must carry
        # one line per error, not request lines (which name key and user ids).
        httpx_log = logging.getLogger("httpx")
        if httpx_log.getEffectiveLevel() < logging.WARNING:
            httpx_log.setLevel(logging.WARNING)
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/admin/v1",
            headers={"authorization": f"Bearer {token}"},
            transport=transport,
            timeout=timeout,
            follow_redirects=False,
        )

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        """The JSON answer of one operation; AdminApiError for a problem or no answer."""
        params = {k: str(v) for k, v in (query or {}).items() if v is not None}
        try:
            r = await self._client.request(method, path, json=body, params=params)
        except httpx.HTTPError as exc:
            raise AdminApiError(
                0, "transport.error", f"admin API unreachable ({type(exc).__name__})"
            ) from None
        try:
            data = r.json()
        except ValueError:
            data = None
        if r.status_code >= 400:
            code = data.get("code", "unknown") if isinstance(data, dict) else "unknown"
            detail = data.get("detail") or data.get("title") if isinstance(data, dict) else None
            raise AdminApiError(
                r.status_code,
                code,
                f"{r.status_code} {code}: {detail or r.reason_phrase}",
                str(detail or r.reason_phrase),
            )
        return data

    async def pages(
        self, path: str, query: dict[str, Any] | None = None, limit: int = 200
    ) -> list[Any]:
        """Every item of a paged list (follows ``next_cursor``; at most 100 pages)."""
        items: list[Any] = []
        cursor: Any = None
        for _ in range(100):
            page = await self.call(
                "GET", path, query={**(query or {}), "limit": limit, "cursor": cursor}
            )
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if cursor is None:
                break
        return items
