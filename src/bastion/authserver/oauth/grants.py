"""The token endpoint's grants (RFC 6749 §4), registered by name. No implicit grant and no
password grant (OAuth 2.1 §10): they are not in the registry, so they are
``unsupported_grant_type``.

A grant is ``async (ctx, client, form) -> bytes`` (the JSON response body). Scopes follow
RFC 6749 §3.3: a requested scope must be a subset of what the client (or the original grant)
holds; none requested means all of it. The ``resource`` parameter (RFC 8707) picks one of the
client's audiences.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from bastion.authserver.oauth import rfc7636
from bastion.authserver.oauth.context import OAuthContext
from bastion.authserver.oauth.errors import OAuthError
from bastion.authserver.oauth.oidc import id_token_claims
from bastion.authserver.oauth.records import AuthorizationCode, OAuthClient, RefreshFamily
from bastion.authserver.oauth.refresh import new_family_id
from bastion.authserver.oauth.rfc9068 import new_jti

Form = Mapping[str, list[str]]
Grant = Callable[[OAuthContext, OAuthClient, Form], Awaitable[bytes]]
MAX_PARAM_CHARS = 8192


def param(form: Form, name: str, *, required: bool = False) -> str | None:
    """One form parameter (RFC 6749 §3.2: at most once), bounded in length."""
    got = form.get(name)
    if not got:
        if required:
            raise OAuthError("invalid_request", f"{name} is required")
        return None
    if len(got) > 1:
        raise OAuthError("invalid_request", f"{name} given more than once")
    if len(got[0]) > MAX_PARAM_CHARS:
        raise OAuthError("invalid_request", f"{name} is too long")
    return got[0]


def required(form: Form, name: str) -> str:
    value = param(form, name, required=True)
    if value is None:  # param raised already; this narrows the type
        raise OAuthError("invalid_request", f"{name} is required")
    return value


def narrow_scope(requested: str | None, allowed: tuple[str, ...] | frozenset[str]) -> str:
    """The granted scope string: ``requested`` if it is a subset of ``allowed``, all of
    ``allowed`` if nothing was requested; otherwise ``invalid_scope``."""
    if requested is None:
        return " ".join(sorted(allowed))
    asked = requested.split()
    if not asked or any(not s.isprintable() or '"' in s or "\\" in s for s in asked):
        raise OAuthError("invalid_scope", "malformed scope")
    if not set(asked) <= set(allowed):
        raise OAuthError("invalid_scope", "scope not allowed for this client")
    return " ".join(sorted(set(asked)))


def audience_for(ctx: OAuthContext, client: OAuthClient, resource: str | None) -> tuple[str, ...]:
    """``aud`` of the client's access tokens: the requested ``resource`` (one of the client's
    audiences), else all of them, else the server's default audience, else the issuer."""
    allowed = client.audiences or (
        (ctx.config.default_audience,) if ctx.config.default_audience else (ctx.issuer,)
    )
    if resource is None:
        return allowed
    if resource not in allowed:
        raise OAuthError("invalid_target", "resource not allowed for this client")
    return (resource,)


def _require_grant(client: OAuthClient, grant: str) -> None:
    if grant not in client.grant_types:
        raise OAuthError("unauthorized_client", "grant type not allowed for this client")


def _response(
    access: str, ttl: int, scope: str, refresh: str | None = None, id_token: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"access_token": access, "token_type": "Bearer", "expires_in": ttl}
    if scope:
        body["scope"] = scope
    if refresh is not None:
        body["refresh_token"] = refresh
    if id_token is not None:
        body["id_token"] = id_token
    return body


async def client_credentials(ctx: OAuthContext, client: OAuthClient, form: Form) -> bytes:
    """RFC 6749 §4.4: a confidential client acting for itself; ``sub`` is the client id."""
    if client.public:
        raise OAuthError("unauthorized_client", "public clients cannot use client_credentials")
    _require_grant(client, "client_credentials")
    scope = narrow_scope(param(form, "scope"), client.scopes)
    audience = audience_for(ctx, client, param(form, "resource"))
    issued = await ctx.access.issue(
        subject=client.id, client_id=client.id, audience=audience, scope=scope
    )
    return orjson.dumps(_response(issued.token, ctx.access.ttl, scope))


async def authorization_code(ctx: OAuthContext, client: OAuthClient, form: Form) -> bytes:
    """RFC 6749 §4.1.3 with PKCE (RFC 7636 §4.6) required for every client.

    Everything the request must prove is checked before the code is touched: that the code is
    this client's, unexpired, for this ``redirect_uri``, and that the ``code_verifier`` matches.
    A party that only saw the code (an access log, a ``Referer``) therefore can neither burn it
    (the legitimate redemption still works) nor, by presenting it as some other client, revoke
    what the legitimate redemption issued. Only then is the code consumed, in one atomic
    statement bound to the client, that also records the refresh family and access-token
    ``jti`` about to be issued; a second redemption with the right verifier finds them and
    revokes both (RFC 6749 §4.1.2, RFC 9700 §4.5).
    """
    _require_grant(client, "authorization_code")
    code = required(form, "code")
    redirect_uri = param(form, "redirect_uri")
    verifier = param(form, "code_verifier")
    now = ctx.clock.now()
    hashed = code_hash(code)
    stored = await ctx.repo.get_code(hashed)
    if (
        stored is None
        or stored.client_id != client.id
        or stored.expires_at <= now
        or (redirect_uri or "") != stored.redirect_uri
        or not rfc7636.verify(verifier, stored.code_challenge)
    ):
        raise OAuthError("invalid_grant", "authorization code is invalid")
    family_id = new_family_id() if "refresh_token" in client.grant_types else None
    jti = new_jti()
    # The token's own exp is read from the clock a moment later: one second of margin keeps
    # a revocation from ending before the token does.
    exp = int(now) + ctx.access.ttl + 1
    record, first = await ctx.repo.consume_code(hashed, client.id, now, (family_id, jti, exp))
    if record is None:
        raise OAuthError("invalid_grant", "authorization code is invalid")
    if not first:
        await _replayed(ctx, record)
        raise OAuthError("invalid_grant", "authorization code is invalid")
    audience = audience_for(ctx, client, None)
    access = await ctx.access.issue(
        subject=record.subject,
        client_id=client.id,
        audience=audience,
        scope=record.scope,
        jti=jti,
        extra=login_claims(record.auth_time, record.amr, record.acr),
    )
    refresh = None
    if family_id is not None:
        refresh = await ctx.refresh.start_family(
            family_id=family_id,
            client_id=client.id,
            subject=record.subject,
            scope=record.scope,
            audience=audience,
            auth_time=record.auth_time,
            amr=record.amr,
            acr=record.acr,
            access_jti=access.jti,
            access_exp=access.exp,
        )
    if await ctx.repo.code_replayed(record.code_hash):
        # A replay arrived while this first use was issuing: it may have found nothing to
        # revoke yet, so this side revokes what it just issued.
        await _replayed(ctx, record)
        raise OAuthError("invalid_grant", "authorization code is invalid")
    id_token = None
    if "openid" in record.scope.split():
        claims = id_token_claims(
            ctx,
            client_id=client.id,
            subject=record.subject,
            auth_time=record.auth_time,
            amr=record.amr,
            acr=record.acr,
            nonce=record.nonce,
        )
        id_token = await ctx.signer.sign(claims, typ="JWT")
    return orjson.dumps(_response(access.token, ctx.access.ttl, record.scope, refresh, id_token))


async def _replayed(ctx: OAuthContext, record: AuthorizationCode) -> None:
    """A code used twice: revoke what its first use issued and raise the alarm."""
    now = ctx.clock.now()
    if record.family_id is not None:
        await ctx.repo.revoke_family(record.family_id, now, "code_replay")
    if record.access_jti is not None and record.access_exp is not None:
        await ctx.revoke_access_token(record.access_jti, record.access_exp)
    ctx.security_event(
        "oauth.code_replay", **{"client.id": record.client_id, "user.id": record.subject}
    )


async def refresh_token(ctx: OAuthContext, client: OAuthClient, form: Form) -> bytes:
    """RFC 6749 §6 with rotation (see :mod:`bastion.authserver.oauth.refresh`)."""
    _require_grant(client, "refresh_token")
    token = required(form, "refresh_token")
    requested = param(form, "scope")

    async def build(family: RefreshFamily, new_token: str) -> tuple[dict[str, Any], str, float]:
        # A family outlives neither its user nor an administrator's lock, even if revoking the
        # families at the lock failed or the user row was removed behind the server's back.
        user = await ctx.users.get_user(family.subject) if ctx.users is not None else None
        if user is None or user.disabled:
            raise OAuthError("invalid_grant", "refresh token is invalid, expired or revoked")
        scope = narrow_scope(requested, tuple(family.scope.split()))
        # The family's login, not a new one: a refresh never makes a login look recent.
        access = await ctx.access.issue(
            subject=family.subject,
            client_id=client.id,
            audience=family.audience,
            scope=scope,
            extra=login_claims(family.auth_time, family.amr, family.acr),
        )
        return _response(access.token, ctx.access.ttl, scope, new_token), access.jti, access.exp

    return await ctx.refresh.refresh(token, client, build)


def login_claims(auth_time: float, amr: tuple[str, ...], acr: str) -> dict[str, Any]:
    """RFC 9068 §2.2.1 claims of the user's login behind a token: when (``auth_time``) and how
    (``amr``, ``acr``). Resource servers such as the admin API decide on them (MFA required,
    step-up by ``auth_time``), so they come from the stored code or refresh family only."""
    claims: dict[str, Any] = {"auth_time": int(auth_time), "amr": list(amr)}
    if acr:
        claims["acr"] = acr
    return claims


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


#: grant_type -> grant. Adding a grant is adding an entry here.
GRANTS: dict[str, Grant] = {
    "client_credentials": client_credentials,
    "authorization_code": authorization_code,
    "refresh_token": refresh_token,
}
