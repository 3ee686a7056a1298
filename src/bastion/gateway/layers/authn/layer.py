"""The authn layer: turns a bearer JWT or an API key into ``exchange.principal``, or answers 401.

Every authentication failure gives the client the same opaque ``401`` problem with
``WWW-Authenticate: Bearer realm="bastion"``; the real reason goes to ``exchange.diagnosis``
for the audit record. Failures are counted per client IP (credential stuffing): once the
route's ``failed_attempts_limit`` is exhausted the IP gets ``429`` until the bucket refills.
Signature checks (token-cache misses) are bounded per client IP by ``verify_limit``, so a flood
of unique well-formed tokens cannot burn the CPU.
"""

from __future__ import annotations

import math
import re
from urllib.parse import parse_qsl

from bastion.core.clock import Clock
from bastion.core.exchange import Exchange, Principal, Reply
from bastion.core.gcra import LocalLimiter
from bastion.errors import AuthenticationFailed, ConfigError, Forbidden, RateLimited
from bastion.gateway.layers.authn import apikeys, jwt
from bastion.gateway.layers.authn.apikeys import ApiKeyIndex
from bastion.gateway.layers.authn.config import AuthnConfig
from bastion.gateway.layers.authn.jwt import JwtVerifier, TokenRejected
from bastion.gateway.layers.base import Layer

__all__ = ["AuthnLayer"]

WWW_AUTHENTICATE = ("www-authenticate", 'Bearer realm="bastion"')
# Parameter names that carry credentials in other products; compared lower-cased.
_QUERY_CREDENTIAL_NAMES = frozenset({"access_token", "api_key", "apikey", "api-key", "x-api-key"})
_JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.", re.ASCII)
_MAX_QUERY_FIELDS = 1000


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
        self._verify_budget = verify_budget

    async def on_request(self, ex: Exchange) -> Reply | None:
        """Set ``ex.principal`` and continue, or answer 401 / 403 / 429."""
        if not self._methods:
            return None
        req = ex.request
        ip = req.client_ip or req.peer_ip
        if credential_in_query(req.query):
            return self._fail(ex, ip, "credential in query string")
        now = self._clock.monotonic()
        if not self._failed.peek(ip, now):
            locked = self._failed.evaluate(ip, now)
            retry_after = str(max(1, math.ceil(locked.retry_after)))
            return ex.deny(
                RateLimited(
                    diagnosis="too many failed authentications",
                    headers=[("retry-after", retry_after)],
                )
            )

        principal, reason = await self._authenticate(ex, ip)
        if principal is None:
            return self._fail(ex, ip, reason)
        ex.principal = principal
        missing = self._required_scopes - principal.scopes
        if missing:
            return ex.deny(Forbidden(diagnosis=f"missing scopes: {' '.join(sorted(missing))}"))
        return None

    async def _authenticate(self, ex: Exchange, ip: str) -> tuple[Principal | None, str]:
        # One pass over the headers: exactly one credential header may be present.
        found: tuple[str, str] | None = None
        for name, value in ex.request.headers.items:
            if name == "authorization" or name == "x-api-key":
                if found is not None:
                    return None, "several credentials"
                found = (name, value)
        if found is None:
            return None, "no credentials"
        if found[0] == "x-api-key":
            if self._api_keys is None:
                return None, "api_key: not accepted on route"
            return await self._api_keys.verify(found[1].strip())
        scheme, _, credential = found[1].strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential or " " in credential:
            return None, "unsupported authorization scheme"
        if credential.startswith("bsk_"):
            if self._api_keys is None:
                return None, "api_key: not accepted on route"
            return await self._api_keys.verify(credential)
        if self._jwt is None:
            return None, "jwt: not accepted on route"

        budget, clock = self._verify_budget, self._clock

        def before_crypto() -> bool:
            return budget.check(ip, clock.monotonic()).allowed

        try:
            principal = await self._jwt.verify(
                credential,
                audience=self._audience,
                allowed_issuers=self._issuers,
                before_crypto=before_crypto,
            )
        except TokenRejected as exc:
            return None, exc.reason
        return principal, ""

    def _fail(self, ex: Exchange, ip: str, reason: str) -> Reply:
        # Refusals that are this node's fault (store, keys or revocation state unavailable) are
        # still refusals (fail closed), but must not lock out a client that retries through an
        # outage.
        if reason not in NODE_FAULTS:
            self._failed.check(ip, self._clock.monotonic())
        return ex.deny(AuthenticationFailed(diagnosis=reason, headers=[WWW_AUTHENTICATE]))
