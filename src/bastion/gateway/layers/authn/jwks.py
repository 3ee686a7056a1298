"""The verification keys of one token issuer: a JWKS URL refreshed in the background, a JWKS
file, or one shared HMAC secret.

Availability rules (fail closed):

* keys from a URL are *fresh* for ``jwks_refresh`` after the last successful fetch; if fetches
  fail after that, the last good keys stay usable for ``jwks_stale_max`` more seconds
  (stale-if-error), then every lookup fails until a fetch succeeds again;
* a token with an unknown ``kid`` may trigger one refetch (:meth:`JwksKeys.refetch_for_unknown_kid`):
  concurrent callers share one fetch and at most one such fetch runs per
  ``unknown_kid_cooldown``, so forged ``kid`` values cannot make us hammer the endpoint;
* a JWKS never supplies symmetric keys: ``oct`` keys and keys marked ``use: enc`` are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet, OctKey

from bastion.core.clock import Clock
from bastion.gateway.layers.authn.config import IssuerConfig

__all__ = ["MAX_JWKS_BYTES", "JwksError", "JwksKeys"]

log = logging.getLogger("bastion.authn.jwks")

MAX_JWKS_BYTES = 1024 * 1024
_RETRY_AFTER_FAILURE = 30.0  # s: background retry when a fetch failed (capped by jwks_refresh)


class JwksError(Exception):
    """A JWKS could not be fetched or understood (the message never holds key material)."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: a JWKS URL is configured exactly, and a redirect could downgrade to http."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def parse_jwks(raw: bytes) -> dict[str, Key]:
    """Signature keys by ``kid`` from JWKS JSON bytes; raises :class:`JwksError`.

    Symmetric (``oct``) and encryption-only keys are dropped: a published key set must never
    yield an HMAC key (that is the algorithm-confusion attack).
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise JwksError("JWKS is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise JwksError("JWKS has no 'keys' list")
    keys = [k for k in data["keys"] if isinstance(k, dict) and k.get("kty") != "oct"]
    if not keys:
        raise JwksError("JWKS holds no asymmetric key")
    try:
        key_set = KeySet.import_key_set({"keys": keys})
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise JwksError(f"JWKS key rejected: {type(exc).__name__}") from None
    out: dict[str, Key] = {}
    for key in key_set:
        if key.key_type == "oct" or key.get("use") == "enc" or key.kid is None:
            continue
        out.setdefault(key.kid, key)
    if not out:
        raise JwksError("JWKS holds no signature key")
    return out


def _fetch_url(url: str, timeout: float) -> bytes:
    """Blocking GET of a JWKS (run in a thread); at most ``MAX_JWKS_BYTES``."""
    req = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310 - scheme checked in IssuerConfig
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            if resp.status != 200:
                raise JwksError(f"JWKS endpoint answered {resp.status}")
            body: bytes = resp.read(MAX_JWKS_BYTES + 1)
    except OSError as exc:  # URLError, HTTPError, timeouts, refused connections
        raise JwksError(f"JWKS fetch failed: {type(exc).__name__}") from None
    if len(body) > MAX_JWKS_BYTES:
        raise JwksError("JWKS larger than 1 MiB")
    return body


class JwksKeys:
    """The current verification keys of one issuer.

    ``on_change`` is called after the key set changed (rotation), e.g. to clear a verified-token
    cache. ``clock.monotonic()`` measures freshness, so tests can move time.
    """

    def __init__(
        self,
        config: IssuerConfig,
        clock: Clock,
        *,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._on_change = on_change
        self._url = str(config.jwks_url) if config.jwks_url is not None else None
        self._keys: dict[str, Key] = {}
        self._last_success: float | None = None
        self._last_unknown_kid_fetch: float | None = None
        self._inflight: asyncio.Task[bool] | None = None
        self._task: asyncio.Task[None] | None = None
        if config.hmac_secret is not None:
            secret = config.hmac_secret.get_secret_value().encode("utf-8")
            self._keys = {"": OctKey.import_key(secret)}
        #: True when :meth:`available` is True whatever the time: keys that no fetch can age
        #: (a JWKS file, an HMAC secret) are held. Per-request callers test it first.
        self.always_available = self._url is None and bool(self._keys)

    @property
    def is_hmac(self) -> bool:
        """True when this issuer signs with a shared secret (HS256/384/512 only)."""
        return self.config.hmac_secret is not None

    async def start(self) -> None:
        """Load the file, or fetch the URL once and start the background refresh.

        A failed first fetch is logged, not raised: lookups fail closed until a fetch succeeds.
        A missing or invalid ``jwks_file`` raises :class:`JwksError` (a start-up error).
        """
        if self.config.jwks_file is not None:
            try:
                raw = await asyncio.to_thread(Path(self.config.jwks_file).read_bytes)
            except OSError as exc:
                raise JwksError(f"cannot read jwks_file: {exc.strerror}") from None
            self._install(parse_jwks(raw))
            return
        if self._url is None or self._task is not None:
            return
        if not self._url.startswith("https:"):
            log.warning(
                "issuer %s: JWKS fetched over plain HTTP (unsafe_allow_http_jwks)",
                self.config.issuer,
            )
        ok = await self.refresh()
        self._task = asyncio.create_task(self._refresh_loop(ok), name=f"jwks:{self.config.issuer}")

    async def aclose(self) -> None:
        """Stop the background refresh (an in-flight fetch thread finishes on its own)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def available(self) -> bool:
        """Whether keys may be used now (fresh, or stale within ``jwks_stale_max``)."""
        if self._url is None:
            return bool(self._keys)
        last = self._last_success
        if last is None:
            return False
        cfg = self.config
        return self._clock.monotonic() - last <= cfg.jwks_refresh + cfg.jwks_stale_max

    def key_for(self, kid: str | None) -> Key | None:
        """The key for ``kid`` (for an HMAC issuer: its one key), or None — also when the keys
        are past their stale limit. A token without ``kid`` matches only a one-key set."""
        keys = self._keys
        if self._url is not None and not self.available():
            return None
        if self.is_hmac:
            return keys[""]
        if kid is None:
            return next(iter(keys.values())) if len(keys) == 1 else None
        return keys.get(kid)

    def refetch_possible(self) -> bool:
        """Whether :meth:`refetch_for_unknown_kid` would fetch (or join a fetch) now, rather
        than return False at once (no URL, or inside the cooldown)."""
        if self._url is None:
            return False
        if self._inflight is not None:
            return True
        last = self._last_unknown_kid_fetch
        return last is None or self._clock.monotonic() - last >= self.config.unknown_kid_cooldown

    async def refetch_for_unknown_kid(self) -> bool:
        """Fetch again because a token named an unknown ``kid``; True if a fetch succeeded.

        Joins a fetch already in flight; otherwise fetches at most once per
        ``unknown_kid_cooldown`` and returns False without fetching inside it.
        """
        if self._url is None:
            return False
        if self._inflight is not None:
            return await asyncio.shield(self._inflight)
        now = self._clock.monotonic()
        last = self._last_unknown_kid_fetch
        if last is not None and now - last < self.config.unknown_kid_cooldown:
            return False
        self._last_unknown_kid_fetch = now
        return await self.refresh()

    async def refresh(self) -> bool:
        """Fetch the JWKS now (single-flight); True on success. Never raises on fetch errors."""
        if self._url is None:
            return False
        if self._inflight is None:
            self._inflight = asyncio.create_task(self._fetch_and_install(self._url))
        return await asyncio.shield(self._inflight)

    async def _fetch_and_install(self, url: str) -> bool:
        try:
            raw = await asyncio.to_thread(_fetch_url, url, self.config.jwks_timeout)
            keys = parse_jwks(raw)
        except JwksError as exc:
            log.warning("issuer %s: %s; keeping the last good keys", self.config.issuer, exc)
            return False
        finally:
            self._inflight = None
        self._last_success = self._clock.monotonic()
        self._install(keys)
        return True

    def _install(self, keys: dict[str, Key]) -> None:
        changed = _fingerprint(keys) != _fingerprint(self._keys)
        self._keys = keys
        self.always_available = self._url is None and bool(keys)
        if changed:
            log.info("issuer %s: key set now %s", self.config.issuer, sorted(keys))
            if self._on_change is not None:
                self._on_change()

    async def _refresh_loop(self, ok: bool) -> None:
        while True:
            interval = self.config.jwks_refresh
            await asyncio.sleep(interval if ok else min(interval, _RETRY_AFTER_FAILURE))
            ok = await self.refresh()


def _fingerprint(keys: dict[str, Key]) -> frozenset[tuple[str, bytes]]:
    """Public identity of a key set: kid and public parameters (never private ones)."""
    return frozenset(
        (kid, orjson.dumps(k.as_dict(private=False), option=orjson.OPT_SORT_KEYS))
        for kid, k in keys.items()
    )
