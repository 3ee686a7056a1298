"""The authn layer: turns a bearer JWT or an API key into ``exchange.principal``, or answers 401.

Every authentication failure gives the client the same opaque ``401`` problem with
``WWW-Authenticate: Bearer realm="bastion"``; the real reason goes to ``exchange.diagnosis``
for the audit record. Failures are counted per client IP (credential stuffing): once the
route's ``failed_attempts_limit`` is exhausted the IP gets ``429`` until the bucket refills.
Signature checks (token-cache misses) are bounded per client IP by ``verify_limit``, so a flood
of unique well-formed tokens cannot burn the CPU.

:meth:`AuthnLayer.check` decides without I/O: a verified-token cache hit, a token verified on the
spot (its key known), an API key held in memory, and every failure that needs no I/O. It returns
NEEDS_IO only for a JWT whose ``kid`` a JWKS refetch may resolve and an API key whose id only
the store knows; :meth:`AuthnLayer.on_request` then awaits the same steps. Both decide alike.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from urllib.parse import parse_qsl

from bastion.core.clock import Clock
from bastion.core.exchange import Exchange, Principal, Reply
from bastion.core.gcra import LocalLimiter
from bastion.errors import AuthenticationFailed, ConfigError, Forbidden, RateLimited
from bastion.gateway.layers.authn import apikeys, jwt
from bastion.gateway.layers.authn.apikeys import ApiKeyIndex
from bastion.gateway.layers.authn.config import AuthnConfig
from bastion.gateway.layers.authn.jwt import JwtVerifier, TokenRejected
from bastion.gateway.layers.base import NEEDS_IO, Layer, NeedsIo

__all__ = ["AuthnLayer"]

WWW_AUTHENTICATE = ("www-authenticate", 'Bearer realm="bastion"')
# Parameter names that carry credentials in other products; compared lower-cased.
_QUERY_CREDENTIAL_NAMES = frozenset({"access_token", "api_key", "apikey", "api-key", "x-api-key"})
_JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.", re.ASCII)
_MAX_QUERY_FIELDS = 1000
#: Authorization header values remembered with the JWT they carry (see AuthnLayer.check).
BEARER_MEMO_SIZE = 4096


#: Diagnoses of refusals caused by this node, not by the client's credential.
NODE_FAULTS = frozenset(
    {
        apikeys.STORE_UNAVAILABLE,
        apikeys.STATE_NOT_CURRENT,
        jwt.KEYS_UNAVAILABLE,
        jwt.STATE_NOT_CURRENT,
    }
)


def credential_in_query(query: str) -> bool:
    """Whether a raw query string carries something that looks like a credential.

    Percent-encoding is undone first, so ``%62sk_…`` is caught too. A query with more than
    ``_MAX_QUERY_FIELDS`` fields counts as suspicious (fail closed).
    """
    if not query:
        return False
    if (
        "%" not in query
        and "bsk_" not in query
        and "eyJ" not in query
        and query.count("&") < _MAX_QUERY_FIELDS
    ):
        # Without percent-encoding a credential shows in the raw query: a name of
        # _QUERY_CREDENTIAL_NAMES holds "api" or "access_token" once lower-cased (str.lower works
        # character by character), a suspect value starts with "bsk_" or "eyJ". Most queries
        # have none of these and need no parsing.
        lower = query.lower()
        if "api" not in lower and "access_token" not in lower:
            return False
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=_MAX_QUERY_FIELDS)
    except ValueError:
        return True
    for name, value in pairs:
        if name.strip().lower() in _QUERY_CREDENTIAL_NAMES:
            return True
        v = value.strip()
        if v.startswith("bsk_") or _JWT_LIKE.match(v):
            return True
    return False


# What _credential found: ("jwt" | "api_key", credential) or ("", reason of the refusal).
_Found = tuple[str, str]
_NO_CREDENTIALS: _Found = ("", "no credentials")
_SEVERAL: _Found = ("", "several credentials")
_BAD_SCHEME: _Found = ("", "unsupported authorization scheme")
_API_KEY_NOT_ACCEPTED: _Found = ("", "api_key: not accepted on route")
_JWT_NOT_ACCEPTED: _Found = ("", "jwt: not accepted on route")


def _sync_twin_applies(
    obj: JwtVerifier | ApiKeyIndex, base: type[JwtVerifier] | type[ApiKeyIndex]
) -> bool:
    """Whether ``obj.verify_now`` applies every check ``obj.verify`` does: not when a subclass
    overrides ``verify`` (adding checks, e.g. a freshness guard) but not ``verify_now``. Then
    the layer awaits ``verify`` for every credential of that kind."""
    cls = type(obj)
    return cls.verify is base.verify or cls.verify_now is not base.verify_now


class AuthnLayer(Layer):
    """Authenticates each request of one route with the methods its config allows.

    ``jwt`` / ``api_keys`` are shared by all routes and must be given when the route accepts
    that method (ConfigError otherwise). ``failed_attempts`` / ``verify_budget`` may be passed
    to share the per-IP limiters between routes; by default each route has its own, built from
    its config.
    """

    name = "authn"

    def __init__(
        self,
        config: AuthnConfig,
        *,
        jwt: JwtVerifier | None,
        api_keys: ApiKeyIndex | None,
        clock: Clock,
        failed_attempts: LocalLimiter | None = None,
        verify_budget: LocalLimiter | None = None,
    ) -> None:
        methods = frozenset(config.methods)
        if "jwt" in methods and jwt is None:
            raise ConfigError(["authn.methods: 'jwt' is accepted but no issuer is configured"])
        if "api_key" in methods and api_keys is None:
            raise ConfigError(["authn.methods: 'api_key' is accepted but api_keys is not set up"])
        self._methods = methods
        self._jwt = jwt if "jwt" in methods else None
        self._api_keys = api_keys if "api_key" in methods else None
        self._jwt_now = (
            self._jwt.verify_now
            if self._jwt is not None and _sync_twin_applies(self._jwt, JwtVerifier)
            else None
        )
        self._api_keys_now = (
            self._api_keys.verify_now
            if self._api_keys is not None and _sync_twin_applies(self._api_keys, ApiKeyIndex)
            else None
        )
        self._clock = clock
        self._audience = config.audience
        self._issuers = frozenset(config.issuers) if config.issuers is not None else None
        self._required_scopes = frozenset(config.required_scopes)
        fa, vl = config.failed_attempts_limit, config.verify_limit
        # "is None", not "or": an empty LocalLimiter is falsy (it has __len__).
        if failed_attempts is None:
            failed_attempts = LocalLimiter(fa.emission_interval, fa.effective_burst)
        if verify_budget is None:
            verify_budget = LocalLimiter(vl.emission_interval, vl.effective_burst)
        self._failed = failed_attempts
        self._failed_tats = failed_attempts.tats
        self._failed_max = failed_attempts.max_keys
        self._verify_budget = verify_budget
        # Authorization header value -> the JWT _credential finds in it, for values whose token
        # was accepted (so only valid tokens fill it); bounded, emptied when full.
        self._bearer_jwts: dict[str, str] = {}

    def check(self, ex: Exchange) -> Reply | NeedsIo | None:
        """Set ``ex.principal`` and continue, answer 401 / 403 / 429, or NEEDS_IO when only a
        JWKS refetch or the store can decide (see the module docstring)."""
        if not self._methods:
            return None
        req = ex.request
        ip = req.client_ip or req.peer_ip
        # Refusals before any credential is looked at: a credential in the query string, and
        # a client IP locked out by failed attempts.
        query = req.query
        if query and credential_in_query(query):
            return self._fail(ex, ip, "credential in query string")
        # LocalLimiter.peek inline: an IP without failures (no TAT) while the table has room
        # is always allowed (an empty table: no recent failure at all); otherwise ask it.
        failed_tats = self._failed_tats
        if failed_tats and (ip in failed_tats or len(failed_tats) >= self._failed_max):
            now = self._clock.monotonic()
            if not self._failed.peek(ip, now):
                return self._locked_out(ex, ip, now)
        # The one Authorization header of the usual request (None when there is no credential
        # header, several, or an X-API-Key: _credential sorts those out). A value whose bearer
        # JWT was accepted before maps to that credential (what _credential finds in it).
        found = None
        for name, value in req.headers.items:
            if name == "authorization" or name == "x-api-key":
                if found is not None or name != "authorization":
                    found = None
                    break
                found = value
        credential = self._bearer_jwts.get(found) if found is not None else None
        jwt_now = self._jwt_now
        if credential is not None and jwt_now is not None:
            # The usual request: a JWT accepted before, answered by the verified-token cache.
            try:
                principal = jwt_now(credential, self._audience, self._issuers)
            except TokenRejected as exc:
                return self._fail(ex, ip, exc.reason)
            if principal is not None:
                ex.principal = principal
                if self._required_scopes:
                    return self._check_scopes(ex, principal)
                return None
            # No longer cached: verified below (remembered already).
            kind = "jwt"
            found = None
        else:
            kind, credential = self._credential(ex)
        if kind == "jwt":
            if jwt_now is None:
                return NEEDS_IO
            try:
                principal = jwt_now(credential, self._audience, self._issuers)
                if principal is None:  # not cached: verify it here if its key is known
                    principal = jwt_now(
                        credential, self._audience, self._issuers, self._budget_for(ip)
                    )
            except TokenRejected as exc:
                return self._fail(ex, ip, exc.reason)
            if principal is None:
                return NEEDS_IO
            if found is not None:  # a single Authorization header, not remembered yet
                self._remember_bearer(found, credential)
        elif kind == "api_key":
            keys_now = self._api_keys_now
            if keys_now is None:
                return NEEDS_IO
            done = keys_now(credential)
            if done is None:
                return NEEDS_IO
            principal = done[0]
            if principal is None:
                return self._fail(ex, ip, done[1])
        else:
            return self._fail(ex, ip, credential)
        ex.principal = principal
        if self._required_scopes:
            return self._check_scopes(ex, principal)
        return None

    async def on_request(self, ex: Exchange) -> Reply | None:
        """:meth:`check`, then, when it needs I/O, the same steps awaiting a JWKS refetch or
        the store."""
        result = self.check(ex)
        if result is not NEEDS_IO:
            return result  # type: ignore[return-value]
        # Nothing was decided and nothing awaited since check(): the gate passed.
        ip = ex.request.client_ip or ex.request.peer_ip
        kind, credential = self._credential(ex)
        jwt, api_keys = self._jwt, self._api_keys
        if kind == "jwt" and jwt is not None:
            try:
                principal = await jwt.verify(
                    credential,
                    audience=self._audience,
                    allowed_issuers=self._issuers,
                    before_crypto=self._budget_for(ip),
                )
            except TokenRejected as exc:
                return self._fail(ex, ip, exc.reason)
        elif kind == "api_key" and api_keys is not None:
            found, reason = await api_keys.verify(credential)
            if found is None:
                return self._fail(ex, ip, reason)
            principal = found
        else:  # not reached: check() needs I/O only for those two (credential is the reason)
            return self._fail(ex, ip, credential)
        ex.principal = principal
        if self._required_scopes:
            return self._check_scopes(ex, principal)
        return None

    def _locked_out(self, ex: Exchange, ip: str, now: float) -> Reply:
        locked = self._failed.evaluate(ip, now)
        retry_after = str(max(1, math.ceil(locked.retry_after)))
        return ex.deny(
            RateLimited(
                diagnosis="too many failed authentications",
                headers=[("retry-after", retry_after)],
            )
        )

    def _credential(self, ex: Exchange) -> _Found:
        """The one credential of the request and its kind, or ("", why it is refused)."""
        # One pass over the headers: exactly one credential header may be present.
        found_name = ""
        found = ""
        for name, value in ex.request.headers.items:
            if name == "authorization" or name == "x-api-key":
                if found_name:
                    return _SEVERAL
                found_name, found = name, value
        if not found_name:
            return _NO_CREDENTIALS
        if found_name == "x-api-key":
            if self._api_keys is None:
                return _API_KEY_NOT_ACCEPTED
            return "api_key", found.strip()
        if found.startswith("Bearer "):  # the usual spelling: same result, fewer steps
            credential = found[7:].strip()
        else:
            scheme, _, credential = found.strip().partition(" ")
            if scheme.lower() != "bearer":
                return _BAD_SCHEME
            credential = credential.strip()
        if not credential or " " in credential:
            return _BAD_SCHEME
        if credential.startswith("bsk_"):
            if self._api_keys is None:
                return _API_KEY_NOT_ACCEPTED
            return "api_key", credential
        if self._jwt is None:
            return _JWT_NOT_ACCEPTED
        return "jwt", credential

    def _remember_bearer(self, value: str, credential: str) -> None:
        memo = self._bearer_jwts
        if value not in memo:
            if len(memo) >= BEARER_MEMO_SIZE:
                memo.clear()
            memo[value] = credential

    def _budget_for(self, ip: str) -> Callable[[], bool]:
        """The per-IP verify budget, charged right before a signature check (cache misses)."""
        budget, clock = self._verify_budget, self._clock

        def before_crypto() -> bool:
            return budget.check(ip, clock.monotonic()).allowed

        return before_crypto

    def _check_scopes(self, ex: Exchange, principal: Principal) -> Reply | None:
        missing = self._required_scopes - principal.scopes
        if missing:
            return ex.deny(Forbidden(diagnosis=f"missing scopes: {' '.join(sorted(missing))}"))
        return None

    def _fail(self, ex: Exchange, ip: str, reason: str) -> Reply:
        # Refusals that are this node's fault (store, keys or revocation state unavailable) are
        # still refusals (fail closed), but must not lock out a client that retries through an
        # outage.
        if reason not in NODE_FAULTS:
            self._failed.check(ip, self._clock.monotonic())
        return ex.deny(AuthenticationFailed(diagnosis=reason, headers=[WWW_AUTHENTICATE]))
