"""Key rotation with the gateway's own JWT verifier validating throughout: no rejection during
scheduled and manual rotations, no unknown-kid refetch needed (the publish lead did the work),
and after an emergency rotation the withdrawn key's tokens are refused at the next fetch."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from bastion.authserver.keys import KeyManager, KeysConfig, open_key_manager
from bastion.core.clock import ManualClock
from bastion.core.revocation import RevocationState
from bastion.gateway.layers.authn.jwt import JwtVerifier, TokenRejected
from bastion.store.memory import MemoryStore
from tests.unit.jwt_factory import JwksServer, issuer_config

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]

ISS = "https://auth.test"
AUD = "https://api.test"
LIFETIME = 300.0
GATEWAY_REFRESH = 300.0  # the gateway's jwks_refresh default, equal to our jwks_max_age


class Rig:
    """The auth server's key manager, its /jwks (a loopback server holding its current JWKS),
    and a gateway verifier whose periodic refresh the test drives on the simulated clock."""

    def __init__(self, manager: KeyManager, server: JwksServer, verifier: JwtVerifier) -> None:
        self.manager, self.server, self.verifier = manager, server, verifier
        self.clock: ManualClock = manager._clock  # type: ignore[assignment]
        self.last_gateway_fetch = self.clock.monotonic()
        self.scheduled_fetches = 1  # the one at start

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.manager.tick()
        self.server.document = await self.manager.jwks()
        if self.clock.monotonic() - self.last_gateway_fetch >= GATEWAY_REFRESH:
            assert await self.verifier.keys(ISS).refresh()
            self.last_gateway_fetch = self.clock.monotonic()
            self.scheduled_fetches += 1

    async def token(self) -> str:
        now = self.clock.now()
        claims = {"iss": ISS, "sub": "client-1", "aud": AUD, "iat": int(now)}
        claims |= {"exp": int(now + LIFETIME), "jti": secrets.token_hex(8), "client_id": "c1"}
        return await self.manager.sign(claims, typ="at+jwt")

    async def verify(self, token: str) -> None:
        await self.verifier.verify(
            token, audience=AUD, allowed_issuers=None, before_crypto=lambda: True
        )


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    clock = ManualClock()
    manager = await open_key_manager(
        KeysConfig.model_validate({"rotation_interval": "1h", "jwks_max_age": "5m"}),
        MemoryStore(),
        token_max_lifetime=LIFETIME,
        clock=clock,
    )
    server = JwksServer(await manager.jwks()).start()
    cfg = issuer_config(
        issuer=ISS,
        audiences=[AUD],
        algorithms=["ES256"],
        jwks_url=server.url,
        unsafe_allow_http_jwks=True,
        jwks_refresh=GATEWAY_REFRESH,
        unknown_kid_cooldown=30,
    )
    verifier = JwtVerifier([cfg], clock, RevocationState(clock))
    await verifier.start()
    try:
        yield Rig(manager, server, verifier)
    finally:
        await verifier.aclose()
        server.stop()


async def test_no_rejection_through_scheduled_and_manual_rotations(rig: Rig) -> None:
    live: list[tuple[float, str]] = []
    kids: set[str] = set()
    for step in range(int(4 * 3600 / 20)):
        await rig.advance(20)
        if step == 300:
            await rig.manager.rotate()
        token = await rig.token()
        kids.add((await rig.manager.jwks())["keys"][0]["kid"])  # the active key comes first
        live = [(exp, t) for exp, t in live if exp > rig.clock.now() + 1]
        live.append((rig.clock.now() + LIFETIME, token))
        await rig.verify(token)  # the newest token
        await rig.verify(live[0][1])  # and the oldest still valid one
    assert len(kids) >= 5  # four scheduled rotations and a manual one
    # Every fetch was a scheduled one: the gateway never met a kid it did not know yet.
    assert rig.server.hits == rig.scheduled_fetches


async def test_emergency_rotation_cuts_the_old_key_off_at_the_next_fetch(rig: Rig) -> None:
    old_token = await rig.token()
    await rig.verify(old_token)
    await rig.manager.rotate(emergency=True)
    await rig.advance(1)
    new_token = await rig.token()
    # The gateway does not know the new kid yet: it fetches once, at once, and accepts.
    hits = rig.server.hits
    await rig.verify(new_token)
    assert rig.server.hits == hits + 1
    # That fetch withdrew the old key: its unexpired token is refused now.
    with pytest.raises(TokenRejected):
        await rig.verify(old_token)
