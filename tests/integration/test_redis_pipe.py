"""The gateway's own Redis connection (store/redis_pipe.py) against the real Redis: replies in
order under pipelining, error replies, AUTH/SELECT/CLIENT SETNAME, timeouts that close the
connection, reconnecting, and the rate limiter surviving a script cache flush."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from redis.asyncio import Redis

from bastion.events.redis_bus import redis_client
from bastion.gateway.layers.ratelimit.backend import LimitSpec
from bastion.gateway.layers.ratelimit.redis_backend import RedisRateLimitBackend
from bastion.store.redis_pipe import RedisPipe, RedisReplyError, settings_of
from tests.support.cluster import REDIS_URL

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]


async def test_pipelined_commands_get_their_own_replies(client: Redis, prefix: str) -> None:
    pipe = RedisPipe.from_client(client)
    try:
        key = f"{prefix}counter"
        replies = await asyncio.gather(*(pipe.call("INCR", key) for _ in range(200)))
        assert replies == list(range(1, 201))
        assert await pipe.call("GET", key) == b"200"
        assert await pipe.call("GET", f"{prefix}missing") is None
    finally:
        await pipe.aclose()
        await client.delete(f"{prefix}counter")


async def test_error_reply_raises_and_the_connection_stays_usable(client: Redis) -> None:
    pipe = RedisPipe.from_client(client)
    try:
        with pytest.raises(RedisReplyError, match="unknown command"):
            await pipe.call("NO-SUCH-COMMAND")
        assert await pipe.call("PING") == b"PONG"
    finally:
        await pipe.aclose()


async def test_select_and_client_name_come_from_the_url(prefix: str) -> None:
    named = redis_client(REDIS_URL.rsplit("/", 1)[0] + "/3", timeout=1.0, name="pipe-test")
    pipe = RedisPipe.from_client(named)
    plain = Redis.from_url(REDIS_URL.rsplit("/", 1)[0] + "/3")
    try:
        await pipe.call("SET", f"{prefix}db3", "x", "PX", 5000)
        assert await plain.get(f"{prefix}db3") == b"x"
        clients = await plain.client_list()
        assert any(c.get("name") == "pipe-test" and c.get("db") == "3" for c in clients)
    finally:
        await pipe.aclose()
        await plain.delete(f"{prefix}db3")
        await plain.aclose()
        await named.aclose()


async def test_a_wrong_password_is_an_error_that_does_not_repeat_it() -> None:
    secret = "not-the-password-0123"
    client = redis_client(f"redis://:{secret}@127.0.0.1:6379/0", timeout=1.0)
    pipe = RedisPipe.from_client(client)
    try:
        with pytest.raises(RedisReplyError) as info:
            await pipe.call("PING")
        assert secret not in str(info.value)
        assert secret not in repr(pipe.settings)
    finally:
        await pipe.aclose()
        await client.aclose()


async def test_timeout_closes_the_connection_and_the_next_call_reconnects(
    prefix: str,
) -> None:
    slow = redis_client(REDIS_URL, timeout=0.2)
    pipe = RedisPipe.from_client(slow)
    try:
        with pytest.raises(TimeoutError):
            await pipe.call("BLPOP", f"{prefix}never", 1)
        # The late reply of BLPOP must not be taken for the answer to this PING.
        assert await pipe.call("PING") == b"PONG"
        assert await pipe.call("ECHO", "after") == b"after"
    finally:
        await pipe.aclose()
        await slow.aclose()


async def test_unreachable_redis_raises_oserror() -> None:
    dead = redis_client("redis://127.0.0.1:1/0", timeout=0.2)
    pipe = RedisPipe.from_client(dead)
    try:
        with pytest.raises(ConnectionRefusedError):
            await pipe.call("PING")
    finally:
        await pipe.aclose()
        await dead.aclose()


async def test_limiter_reloads_its_script_after_a_flush(client: Redis, prefix: str) -> None:
    backend = RedisRateLimitBackend(client, prefix=prefix)
    try:
        spec = LimitSpec(1.0, 2)
        assert (await backend.check(spec, ("r", 0, "ip", "x"), 0.0)).allowed
        await client.script_flush()
        assert (await backend.check(spec, ("r", 0, "ip", "x"), 0.0)).allowed
        assert not (await backend.check(spec, ("r", 0, "ip", "x"), 0.0)).allowed
        assert not backend.degraded
    finally:
        await backend.aclose()


def test_settings_of_tls_and_unix_urls() -> None:
    tls = settings_of(Redis.from_url("rediss://u:pw@redis.internal:6380/2"))
    assert (tls.host, tls.port, tls.db, tls.username, tls.password) == (
        "redis.internal",
        6380,
        2,
        "u",
        "pw",
    )
    assert tls.tls is not None
    assert tls.tls.verify_mode == ssl.CERT_REQUIRED
    assert tls.tls.check_hostname
    lax = settings_of(Redis.from_url("rediss://redis.internal/0?ssl_cert_reqs=none"))
    assert lax.tls is not None
    assert lax.tls.verify_mode == ssl.CERT_NONE
    unix = settings_of(Redis.from_url("unix:///run/redis.sock?db=1"))
    assert (unix.path, unix.db, unix.tls) == ("/run/redis.sock", 1, None)
    assert "pw" not in repr(tls)


def test_works_on_uvloop_as_the_gateway_runs_it(prefix: str) -> None:
    """The gateway runs on uvloop, whose transports do not subclass asyncio.Transport: the
    limiter must reach Redis there, not fall back to its local share."""
    import uvloop

    async def go() -> tuple[bool, int, object]:
        client = redis_client(REDIS_URL, timeout=1.0)
        backend = RedisRateLimitBackend(client, prefix=prefix)
        try:
            result = await backend.check(LimitSpec(1.0, 2), ("r", 0, "ip", "uv"), 0.0)
            pipe = RedisPipe.from_client(client)
            try:
                pong = await pipe.call("PING")
            finally:
                await pipe.aclose()
            return backend.degraded, backend.round_trips, (result.allowed, pong)
        finally:
            await backend.aclose()
            await client.aclose()

    degraded, trips, outcome = uvloop.run(go())
    assert not degraded
    assert trips == 1
    assert outcome == (True, b"PONG")
