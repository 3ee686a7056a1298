"""Everything the OAuth endpoints share, built once per process by the server.

Endpoints are functions of ``(ctx, request)``; the context carries the immutable config and the
collaborators (store, repository, signer, users, clock) plus the two side effects every endpoint
may need: revoking an access token everywhere, and emitting a security event.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bastion.authserver.config import AuthConfig
from bastion.authserver.oauth.client_auth import ClientAuthenticator
from bastion.authserver.oauth.ports import Signer, Users
from bastion.authserver.oauth.records import RefreshFamily
from bastion.authserver.oauth.refresh import RefreshService
from bastion.authserver.oauth.repo import OAuthRepo
from bastion.authserver.oauth.rfc9068 import AccessTokenIssuer, AccessTokenVerifier
from bastion.core.clock import Clock
from bastion.core.revocation import RevocationState
from bastion.events.bus import Event, EventBus
from bastion.store.base import Revocation, Store
from bastion.store.memory import revocation_change

log = logging.getLogger("bastion.authserver")

#: Pushes a committed control event to other nodes (Redis); failures only delay it.
Push = Callable[[Event], Awaitable[None]]


async def no_push(event: Event) -> None:
    """Without Redis, nodes learn changes from the store's change feed."""


@dataclass
class OAuthContext:
    """The collaborators of the endpoints (see the module docstring)."""

    config: AuthConfig
    clock: Clock
    store: Store
    repo: OAuthRepo
    signer: Signer
    users: Users | None
    clients: ClientAuthenticator
    access: AccessTokenIssuer
    verifier: AccessTokenVerifier
    refresh: RefreshService
    bus: EventBus
    revocations: RevocationState
    push: Push = no_push

    @property
    def issuer(self) -> str:
        return self.config.issuer

    def url(self, path: str) -> str:
        return self.config.issuer + path

    async def revoke_access_token(self, jti: str, expires_at: float) -> None:
        """Deny ``jti`` until it expires, here and on every gateway node.

        Stored first (the change feed carries it to every node that polls), then applied to
        this process and pushed through Redis for the nodes that listen there.
        """
        now = self.clock.now()
        if expires_at <= now:
            return  # already useless
        rev = Revocation(
            kind="jti",
            value=jti,
            issuer=self.issuer,
            not_before=None,
            expires_at=expires_at,
            created_at=now,
        )
        await self.store.add_revocation(rev)
        kind, payload = revocation_change(rev)
        event: Event = {**payload, "type": kind}
        self.revocations.apply(event)
        self.bus.publish("control", event)
        try:
            await self.push(event)
        except Exception as exc:  # the feed delivers it anyway
            log.warning("revocation not pushed to Redis (%s)", type(exc).__name__)

    async def refresh_reused(self, family: RefreshFamily) -> None:
        """A refresh family was revoked for reuse: its last access token goes too, and the
        security team hears of it (RFC 9700 §4.14.2)."""
        if family.access_jti and family.access_exp:
            await self.revoke_access_token(family.access_jti, family.access_exp)
        self.security_event(
            "oauth.refresh_token_reuse",
            **{"client.id": family.client_id, "user.id": family.subject, "family": family.id},
        )

    def security_event(self, action: str, **fields: Any) -> None:
        """Publish a security event (topic ``security``) and log it; never a token in it."""
        event: Event = {
            "event.kind": "alert",
            "event.category": "authentication",
            "event.action": action,
            "service.name": "bastion-authserver",
            "@timestamp": self.clock.now(),
            **fields,
        }
        log.warning("security event %s %s", action, fields)
        self.bus.publish("security", event)
