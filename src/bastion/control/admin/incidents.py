"""Incident actions: revoke everything an application holds, block an address or network.

Both commit to the store first (each write appends its change to the change feed in the same
transaction, so a node that misses the push still applies it on its next poll), then push the
change through the publisher (Redis in distributed mode) so every node applies it at once.

``revoke-application`` revokes every API key of the application that is not revoked yet;
every access token whose ``sub`` is the application (client-credentials tokens) issued before
now, by a ``subject`` revocation that lasts as long as the longest access token can; every
access token issued *to* the application (its ``client_id`` claim, whoever the user), issued
before now, by a ``client`` revocation of the same length; and every refresh-token family issued
to the application's OAuth client id (users' logins through it), with the last access token of
each (``jti`` revocations, kept for nodes that predate the ``client`` kind): a stolen client
cannot keep acting for its users through tokens it already holds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bastion.control.admin.service import AdminContext, Call, Result, visible_application
from bastion.core.ipblocks import MAX_BLOCK_SECONDS, parse_network
from bastion.errors import InvalidRequest
from bastion.store.base import IpBlock, Revocation
from bastion.store.memory import revocation_change

#: The longest access-token lifetime our authorization server issues (RFC 9068 tokens live at
#: most one hour), plus clock skew: a subject revocation must outlive every token it covers.
TOKEN_MAX_LIFETIME = 3600.0 + 300.0
#: Networks wider than these are refused: blocking a /0 would take every client offline.
MIN_PREFIX = {4: 8, 6: 32}


async def revoke_application(ctx: AdminContext, call: Call) -> Result:
    body = call.body or {}
    app = await visible_application(ctx, call, body["application"])
    now = ctx.clock.now()
    keys = await ctx.store.list_api_keys(app.id)
    revoked: list[str] = []
    for key in keys:
        if key.revoked_at is None and await ctx.store.revoke_api_key(key.id, now):
            revoked.append(key.id)
            await ctx.publish({"type": "api_key.revoked", "key_id": key.id, "at": now})
    families = []
    if ctx.oauth is not None:
        families = await ctx.oauth.revoke_client_families(app.id, now, "incident")
    access = await revoke_last_access_tokens(ctx, families, now)
    for rev_kind in ("subject", "client"):
        rev = Revocation(
            kind=rev_kind,
            value=app.id,
            issuer=ctx.issuer,
            not_before=now,
            expires_at=now + TOKEN_MAX_LIFETIME,
            created_at=now,
        )
        await ctx.store.add_revocation(rev)
        kind, payload = revocation_change(rev)
        await ctx.publish({**payload, "type": kind})
    result = {
        "application": app.id,
        "revoked_keys": revoked,
        "revoked_refresh_families": len(families),
        "revoked_access_jtis": access,
        "tokens_issued_before": now,
        "reason": body["reason"],
    }
    await ctx.record(
        call,
        target_type="application",
        target_id=app.id,
        before={"active_keys": [k.id for k in keys if k.revoked_at is None]},
        after=result,
    )
    return 200, result


async def revoke_last_access_tokens(ctx: AdminContext, families: Iterable[Any], now: float) -> int:
    """Revoke (by ``jti``, until it expires) the last access token of each revoked refresh
    family that is still live, and push each revocation; how many were revoked."""
    count = 0
    for family in families:
        jti, exp = getattr(family, "access_jti", None), getattr(family, "access_exp", None)
        if not jti or not exp or exp <= now:
            continue
        rev = Revocation(
            kind="jti",
            value=jti,
            issuer=ctx.issuer,
            not_before=None,
            expires_at=exp,
            created_at=now,
        )
        await ctx.store.add_revocation(rev)
        kind, payload = revocation_change(rev)
        await ctx.publish({**payload, "type": kind})
        count += 1
    return count


async def block_ip(ctx: AdminContext, call: Call) -> Result:
    body = call.body or {}
    try:
        net = parse_network(body["cidr"])
    except ValueError:
        raise InvalidRequest("body/cidr: not an IP address or CIDR network") from None
    if net.prefixlen < MIN_PREFIX[net.version]:
        raise InvalidRequest(
            f"body/cidr: at most a /{MIN_PREFIX[net.version]} may be blocked at once"
        )
    seconds = int(body["duration_seconds"])
    if not 0 < seconds <= MAX_BLOCK_SECONDS:  # the schema says so too; kept for direct callers
        raise InvalidRequest("body/duration_seconds: out of range")
    now = ctx.clock.now()
    block = IpBlock(cidr=str(net), reason=body["reason"], created_at=now, expires_at=now + seconds)
    await ctx.store.add_ip_block(block)
    await ctx.publish(
        {
            "type": "ip.blocked",
            "cidr": block.cidr,
            "until": block.expires_at,
            "reason": block.reason,
        }
    )
    result = {"cidr": block.cidr, "until": block.expires_at, "reason": block.reason}
    await ctx.record(call, target_type="network", target_id=block.cidr, after=result)
    return 201, result
