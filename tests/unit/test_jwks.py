"""JwksKeys against a real local JWKS server: refresh, unknown-kid refetch with cooldown and
single flight, stale-if-error then fail closed, size cap, and the keys a JWKS may not supply."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from joserfc.jwk import OctKey

from bastion.core.clock import ManualClock
from bastion.gateway.layers.authn.jwks import MAX_JWKS_BYTES, JwksError, JwksKeys, parse_jwks
from tests.unit.jwt_factory import HMAC_SECRET, JwksServer, ec_key, issuer_config, jwks, rsa_key


@pytest.fixture
def server() -> Iterator[JwksServer]:
    srv = JwksServer(jwks(ec_key("k1"))).start()
    yield srv
    srv.stop()


def url_keys(server: JwksServer, clock: ManualClock, **kw: object) -> JwksKeys:
    cfg = issuer_config(
        jwks_url=server.url,
        unsafe_allow_http_jwks=True,
        jwks_refresh=300,
        jwks_stale_max=600,
        unknown_kid_cooldown=30,
        jwks_timeout=2,
        **kw,
    )
    return JwksKeys(cfg, clock)


async def test_start_fetches_once_and_serves_keys(server: JwksServer) -> None:
    keys = url_keys(server, ManualClock())
    await keys.start()
    try:
        assert server.hits == 1
        assert keys.available()
        assert not keys.always_available  # fetched keys age: available() decides
        k1 = keys.key_for("k1")
        assert k1 is not None
        assert k1.key_type == "EC"
        assert keys.key_for("nope") is None
        assert keys.key_for(None) is k1  # a one-key set serves kid-less tokens
    finally:
        await keys.aclose()


async def test_unknown_kid_refetches_once_then_cooldown(server: JwksServer) -> None:
    clock = ManualClock()
    keys = url_keys(server, clock)
    await keys.start()
    try:
        server.document = jwks(ec_key("k1"), ec_key("k2"))
        assert keys.key_for("k2") is None
        assert await keys.refetch_for_unknown_kid() is True
        assert server.hits == 2
        assert keys.key_for("k2") is not None
        # A forged kid right after: no fetch inside the cooldown.
        assert await keys.refetch_for_unknown_kid() is False
        clock.advance(29)
        assert await keys.refetch_for_unknown_kid() is False
        assert server.hits == 2
        clock.advance(1)
        assert await keys.refetch_for_unknown_kid() is True
        assert server.hits == 3
    finally:
        await keys.aclose()


async def test_concurrent_unknown_kid_refetches_share_one_fetch(server: JwksServer) -> None:
    keys = url_keys(server, ManualClock())
    await keys.start()
    try:
        results = await asyncio.gather(*(keys.refetch_for_unknown_kid() for _ in range(20)))
        assert server.hits == 2
        assert results.count(True) >= 1
    finally:
        await keys.aclose()


async def test_endpoint_down_stale_keys_then_fail_closed(server: JwksServer) -> None:
    clock = ManualClock()
    keys = url_keys(server, clock)
    await keys.start()
    try:
        server.status = 503
        clock.advance(300)  # freshness over; the refresh fails
        assert await keys.refresh() is False
        assert keys.key_for("k1") is not None  # stale-if-error
        clock.advance(600)  # exactly at the stale limit: still usable
        assert keys.key_for("k1") is not None
        clock.advance(1)
        assert not keys.available()
        assert keys.key_for("k1") is None  # fail closed
        assert keys.key_for(None) is None
        server.status = 200
        assert await keys.refresh() is True
        assert keys.key_for("k1") is not None
    finally:
        await keys.aclose()


async def test_endpoint_down_at_start_fails_closed(server: JwksServer) -> None:
    server.status = 500
    keys = url_keys(server, ManualClock())
    await keys.start()  # logged, not raised
    try:
        assert not keys.available()
        assert keys.key_for("k1") is None
    finally:
        await keys.aclose()


async def test_unreachable_endpoint_fails_closed() -> None:
    srv = JwksServer(jwks(ec_key("k1")))
    url = srv.url
    srv.stop()  # nothing listens on this port any more
    cfg = issuer_config(jwks_url=url, unsafe_allow_http_jwks=True, jwks_timeout=1)
    keys = JwksKeys(cfg, ManualClock())
    await keys.start()
    try:
        assert keys.key_for("k1") is None
    finally:
        await keys.aclose()


@pytest.mark.parametrize(
    "body",
    [
        b"x" * (MAX_JWKS_BYTES + 1),
        b"not json",
        b"[]",
        b'{"keys": "nope"}',
        b'{"keys": []}',
        b'{"keys": [{"kty": "RSA", "kid": "bad", "n": "AQAB"}]}',
    ],
)
async def test_bad_documents_keep_the_last_good_keys(server: JwksServer, body: bytes) -> None:
    clock = ManualClock()
    keys = url_keys(server, clock)
    await keys.start()
    try:
        server.body = body
        assert await keys.refresh() is False
        assert keys.key_for("k1") is not None
    finally:
        await keys.aclose()


def test_a_jwks_never_supplies_symmetric_or_encryption_keys() -> None:
    oct_key = OctKey.generate_key(256, parameters={"kid": "hmac"})
    enc = rsa_key("enc")
    doc = jwks(ec_key("sig"), enc)
    doc["keys"][1]["use"] = "enc"
    doc["keys"].append(oct_key.as_dict(private=True))
    keys = parse_jwks(json.dumps(doc).encode())
    assert set(keys) == {"sig"}
    with pytest.raises(JwksError):
        parse_jwks(json.dumps({"keys": [oct_key.as_dict(private=True)]}).encode())


async def test_rotation_calls_on_change_only_when_keys_differ(server: JwksServer) -> None:
    changes: list[int] = []
    cfg = issuer_config(jwks_url=server.url, unsafe_allow_http_jwks=True)
    keys = JwksKeys(cfg, ManualClock(), on_change=lambda: changes.append(1))
    await keys.start()
    try:
        assert changes == [1]
        assert await keys.refresh()
        assert changes == [1]  # same document
        server.document = jwks(ec_key("k9"))
        assert await keys.refresh()
        assert changes == [1, 1]
        assert keys.key_for("k1") is None
        assert keys.key_for("k9") is not None
    finally:
        await keys.aclose()


async def test_background_refresh_runs_and_stops(server: JwksServer) -> None:
    cfg = issuer_config(jwks_url=server.url, unsafe_allow_http_jwks=True, jwks_refresh=1)
    keys = JwksKeys(cfg, ManualClock())
    await keys.start()
    await asyncio.sleep(1.3)
    await keys.aclose()
    hits = server.hits
    assert hits >= 2
    await asyncio.sleep(1.1)
    assert server.hits == hits


async def test_jwks_file(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(rsa_key("r1"))))
    keys = JwksKeys(issuer_config(jwks_file=str(path), algorithms=["RS256"]), ManualClock())
    assert not keys.always_available  # nothing loaded yet
    await keys.start()
    assert keys.available()
    assert keys.always_available  # a file's keys never age
    assert keys.key_for("r1") is not None
    assert await keys.refetch_for_unknown_kid() is False


async def test_missing_jwks_file_is_a_startup_error(tmp_path: Path) -> None:
    keys = JwksKeys(issuer_config(jwks_file=str(tmp_path / "none.json")), ManualClock())
    with pytest.raises(JwksError):
        await keys.start()


async def test_hmac_issuer_holds_one_oct_key() -> None:
    cfg = issuer_config(hmac_secret=HMAC_SECRET, algorithms=["HS256"])
    keys = JwksKeys(cfg, ManualClock())
    await keys.start()
    assert keys.is_hmac
    assert keys.available()
    assert keys.always_available
    key = keys.key_for("whatever")
    assert isinstance(key, OctKey)
    assert keys.key_for(None) is key
    assert await keys.refetch_for_unknown_kid() is False
