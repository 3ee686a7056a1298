"""Signing-key rotation with a gateway validating throughout: not one token refused.

The real key manager (KEYS) signs; our /jwks is served over a real loopback socket by uvicorn;
the gateway's own JwtVerifier fetches it. Time is a ManualClock shared by all three. The gateway
refreshes its JWKS only once per JWKS lifetime (``jwks_max_age``) and is never allowed the
unknown-``kid`` rescue: every kid must be known before the first token it signs arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
import uvicorn
from joserfc import jws

from bastion.authserver.asgi import AuthAsgiApp
from bastion.authserver.keys import KeysConfig, open_key_manager
from bastion.authserver.oauth.repo import MemoryOAuthRepo
from bastion.authserver.server import AuthServer, build_context
from bastion.core.clock import ManualClock
from bastion.core.revocation import RevocationState
from bastion.events.bus import EventBus
from bastion.gateway.layers.authn.config import IssuerConfig
from bastion.gateway.layers.authn.jwt import JwtVerifier, TokenRejected
from bastion.store.memory import MemoryStore
from tests.unit.authserver.oauth.harness import API, ISSUER, FakeUsers, Harness, body, config

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]

JWKS_MAX_AGE = 300.0
STEP = 60.0


@contextlib.asynccontextmanager
async def serving(server: AuthServer) -> AsyncIterator[int]:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    cfg = uvicorn.Config(
        AuthAsgiApp(server), lifespan="off", log_level="warning", access_log=False, loop="none"
    )
    cfg.load()
    userver = uvicorn.Server(cfg)
    userver.lifespan = cfg.lifespan_class(cfg)
    await userver.startup(sockets=[sock])
    task = asyncio.get_running_loop().create_task(userver.main_loop())
    try:
        yield port
    finally:
        userver.should_exit = True
        await task
        await userver.shutdown()


async def test_rotations_never_make_the_gateway_refuse_a_valid_token() -> None:
    clock = ManualClock()
    store = MemoryStore()
    await store.open()
    keys_cfg = KeysConfig(jwks_max_age=JWKS_MAX_AGE, rotation_interval=3600)
    manager = await open_key_manager(keys_cfg, store, token_max_lifetime=300, clock=clock)
    cfg = config(keys=keys_cfg.model_dump(), token_rate_limit={"rate": 10**6, "burst": 10**6})
    repo = MemoryOAuthRepo()
    ctx = build_context(cfg, store, repo, manager, FakeUsers(), clock=clock, bus=EventBus())
    server = AuthServer(ctx)
    h = Harness(server, None, FakeUsers(), clock, repo, store, EventBus(), [])  # type: ignore[arg-type]
    secret = await h.register()

    async with serving(server) as port:
        issuer = IssuerConfig(
            issuer=ISSUER,
            jwks_url=f"http://127.0.0.1:{port}/jwks",  # type: ignore[arg-type]
            unsafe_allow_http_jwks=True,
            audiences=[API],
            jwks_refresh=86400,  # refreshed by hand below, once per JWKS lifetime
            unknown_kid_cooldown=86400,
        )
        gateway = JwtVerifier([issuer], clock, RevocationState(clock))
        await gateway.start()
        jwks = gateway.keys(ISSUER)
        rescues = 0
        real_refetch = jwks.refetch_for_unknown_kid

        async def counted() -> bool:
            nonlocal rescues
            rescues += 1
            return await real_refetch()

        jwks.refetch_for_unknown_kid = counted  # type: ignore[method-assign]
        try:
            live: list[tuple[float, str]] = []
            kids: set[str] = set()
            since_refresh = 0.0
            for step in range(int(4 * 3600 / STEP)):
                clock.advance(STEP)
                await manager.tick()
                if step == 100:
                    await manager.rotate()  # an operator's orderly rotation on top
                since_refresh += STEP
                if since_refresh >= JWKS_MAX_AGE:
                    await jwks.refresh()
                    since_refresh = 0.0
                reply = await h.token("svc", secret)
                assert reply.status == 200, reply.body
                token = body(reply)["access_token"]
                kids.add(str(jws.extract_compact(token.encode()).protected["kid"]))
                live.append((clock.now(), token))
                live = [(t, tok) for t, tok in live if clock.now() - t < 300]
                for _, tok in live:
                    try:
                        await gateway.verify(
                            tok, audience=API, allowed_issuers=None, before_crypto=lambda: True
                        )
                    except TokenRejected as exc:
                        pytest.fail(f"step {step}: the gateway refused a valid token: {exc}")
        finally:
            await gateway.aclose()
    assert len(kids) >= 4  # the first key, three scheduled rotations and one by hand
    assert rescues == 0
