"""The gateway refuses every access token issued to a revoked client before the revocation.

Issue 7's incident action "revoke every key and token of an application": the control plane
stores a ``client`` revocation and pushes ``client.revoked``; a gateway node that applies it
refuses, with an opaque 401, every token whose ``client_id`` (or, without one, ``azp``) is the
client and whose ``iat`` is before the bar — whoever its subject and whatever its jti, cached
or not — and keeps accepting tokens issued after the bar and tokens of other clients.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from joserfc.jwk import OctKey

from bastion.core.clock import ManualClock
from bastion.core.exchange import Exchange, Headers, RequestView
from bastion.core.revocation import RevocationState
from bastion.events.redis_bus import parse_event
from bastion.gateway.layers.authn.apikeys import ApiKeyIndex
from bastion.gateway.layers.authn.config import AuthnConfig
from bastion.gateway.layers.authn.jwt import JwtVerifier
from bastion.gateway.layers.authn.layer import AuthnLayer
from bastion.store.base import Revocation
from bastion.store.memory import MemoryStore, revocation_change
from tests.unit.jwt_factory import HMAC_SECRET, ISSUER, NOW, issuer_config, sign

HS_KEY = OctKey.import_key(HMAC_SECRET.encode())
BAR = NOW - 5  # the incident: tokens issued before this are revoked


class Gateway:
    """One node's authentication: an HMAC issuer, its revocation state and the authn layer."""

    def __init__(self) -> None:
        self.clock = ManualClock(NOW)
        self.revocations = RevocationState(self.clock)
        cfg = issuer_config(hmac_secret=HMAC_SECRET, algorithms=["HS256"])
        self.jwt = JwtVerifier([cfg], self.clock, self.revocations)
        keys = ApiKeyIndex(MemoryStore(), b"k" * 32, self.clock)
        self.layer = AuthnLayer(
            AuthnConfig.model_validate({}), jwt=self.jwt, api_keys=keys, clock=self.clock
        )

    async def status(self, **claims: Any) -> int:
        """200 if the layer lets a token with ``claims`` through, else the reply's status."""
        token = sign(HS_KEY, "HS256", **claims)
        req = RequestView(
            "GET",
            "/v1/things",
            "",
            Headers([("authorization", f"Bearer {token}")]),
            peer_ip="10.0.0.1",
        )
        req.client_ip = "203.0.113.7"
        ex = Exchange(req, request_id="req-1", started=0.0, started_wall=NOW)
        reply = await self.layer.on_request(ex)
        return 200 if reply is None else reply.status


def client_revoked_event(client_id: str = "app-1") -> dict[str, Any]:
    """The event the control plane pushes (the same payload its store change carries)."""
    rev = Revocation("client", client_id, ISSUER, BAR, BAR + 3900, BAR)
    kind, payload = revocation_change(rev)
    return {**payload, "type": kind}


@pytest.fixture
async def gw() -> Gateway:
    gateway = Gateway()
    await gateway.jwt.start()
    return gateway


async def test_token_issued_before_the_bar_is_refused_after_is_accepted(gw: Gateway) -> None:
    old = {"client_id": "app-1", "iat": int(NOW) - 10, "jti": "old"}
    assert await gw.status(**old) == 200  # valid, and now in the verified-token cache
    gw.revocations.apply(client_revoked_event())
    assert await gw.status(**old) == 401  # the cache hit is checked too
    assert await gw.status(client_id="app-1", iat=int(BAR) - 1, jti="fresh-jti") == 401
    assert await gw.status(client_id="app-1", iat=int(BAR), jti="new") == 200
    assert await gw.status(client_id="app-1", iat=int(NOW), jti="newer") == 200


async def test_every_subject_of_the_client_is_covered(gw: Gateway) -> None:
    """The gap the subject revocation left: users' tokens issued to the client (sub is the
    user, jti not the family's last one) are refused too."""
    gw.revocations.apply(client_revoked_event())
    for sub in ("user-1", "user-2", "app-1"):
        assert await gw.status(sub=sub, client_id="app-1", iat=int(NOW) - 10) == 401


async def test_azp_names_the_client_when_client_id_is_absent(gw: Gateway) -> None:
    gw.revocations.apply(client_revoked_event())
    assert await gw.status(client_id=None, azp="app-1", iat=int(NOW) - 10) == 401
    assert await gw.status(client_id=None, azp="app-2", iat=int(NOW) - 10) == 200


async def test_other_clients_are_untouched(gw: Gateway) -> None:
    gw.revocations.apply(client_revoked_event())
    for cid in ("app-2", "APP-1", "app-1 ", "app"):
        assert await gw.status(client_id=cid, iat=int(NOW) - 10) == 200


async def test_a_stored_revocation_loaded_at_start_up_applies_too(gw: Gateway) -> None:
    store = MemoryStore()
    await store.open()
    await store.add_revocation(Revocation("client", "app-1", ISSUER, BAR, BAR + 3900, BAR))
    gw.revocations.load(await store.active_revocations(NOW))
    assert await gw.status(client_id="app-1", iat=int(NOW) - 10) == 401
    assert await gw.status(client_id="app-1", iat=int(NOW)) == 200


async def test_the_event_crosses_the_redis_bus(gw: Gateway) -> None:
    """Redis carries only known control types: ``client.revoked`` must be one of them, or a
    node would learn of the incident only on its next change-feed poll."""
    event = parse_event(orjson.dumps(client_revoked_event()))
    assert event is not None
    gw.revocations.apply(event)
    assert await gw.status(client_id="app-1", iat=int(NOW) - 10) == 401
