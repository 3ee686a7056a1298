"""The serving side's pure pieces: settings resolution, the store-backed revocation check, the
JWKS fetcher failing closed, and the CLI's one-line config error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from joserfc.jwk import ECKey

from bastion.cli.main import main
from bastion.config.load import parse_config
from bastion.control.serve import JwksFetcher, control_settings, revocation_check
from bastion.core.clock import ManualClock
from bastion.errors import AuthenticationFailed, ConfigError
from bastion.store.base import Revocation
from bastion.store.memory import MemoryStore
from tests.unit.jwt_factory import JwksServer, jwks


def test_settings_need_an_issuer_and_keys() -> None:
    with pytest.raises(ConfigError, match=r"control\.issuer"):
        control_settings(parse_config({"control": {}}, {}))
    with pytest.raises(ConfigError, match=r"control\.jwks_url"):
        control_settings(parse_config({"control": {"issuer": "https://a.test"}}, {}))
    cfg = parse_config(
        {"control": {"issuer": "https://a.test", "jwks_url": "https://a.test/jwks"}}, {}
    )
    assert control_settings(cfg).issuer == "https://a.test"
    with pytest.raises(ConfigError):
        parse_config({"control": {"bind": "nope"}}, {})
    with pytest.raises(ConfigError):
        parse_config({"control": {"unknown": 1}}, {})


async def test_revocation_check_reads_the_store() -> None:
    store = MemoryStore()
    await store.open()
    clock = ManualClock(1000.0)
    check = revocation_check(store, clock)
    claims: dict[str, Any] = {"sub": "u1", "jti": "j1", "iat": 900}
    assert not await check(claims)
    await store.add_revocation(Revocation("jti", "j1", None, None, 2000.0, 1000.0))
    assert await check(claims)
    assert not await check({**claims, "jti": "j2"})
    await store.add_revocation(Revocation("subject", "u1", None, 950.0, 2000.0, 1000.0))
    assert await check({**claims, "jti": "j2"})  # issued before not_before
    assert not await check({**claims, "jti": "j2", "iat": 960})  # issued after: a new login
    assert await check({"sub": "u1", "jti": "j3"})  # no iat: fail closed


async def test_jwks_fetcher_caches_and_fails_closed() -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"})
    server = JwksServer(jwks(key)).start()
    try:
        clock = ManualClock()
        fetch = JwksFetcher(server.url, 60, clock)
        assert [k.kid for k in (await fetch()).keys] == ["k1"]
        await fetch()
        assert server.hits == 1
        server.status = 500
        clock.advance(61)
        assert [k.kid for k in (await fetch()).keys] == ["k1"]  # last good set, once
        clock.advance(120)
        with pytest.raises(AuthenticationFailed):
            await fetch()
        cold = JwksFetcher(server.url, 60, clock)
        with pytest.raises(AuthenticationFailed):
            await cold()
    finally:
        server.stop()


def test_cli_reports_a_config_problem_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("store: memory://\ncontrol: {}\n")
    with pytest.raises(SystemExit) as info:
        main(["control", "serve", "-c", str(path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "control.issuer" in err
    assert "Traceback" not in err


async def test_embedded_admin_api_starts_publishes_on_the_bus_and_stops(tmp_path: Path) -> None:
    """``bastion up``'s way of serving the admin API: in this process, on a given bus; a
    taken port is an OSError for the caller (not a process exit), and stopping closes it."""
    import socket

    import httpx

    from bastion.control.serve import bus_publisher, start_control_server
    from bastion.events.bus import EventBus

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = parse_config(
        {
            "store": f"sqlite:///{tmp_path / 'c.db'}",
            "control": {
                "bind": f"127.0.0.1:{port}",
                "issuer": "https://a.test",
                "jwks_url": "https://a.test/jwks",
            },
        },
        {},
    )
    bus = EventBus()
    running = await start_control_server(cfg, bus=bus)
    try:
        assert running.address == ("127.0.0.1", port)
        async with httpx.AsyncClient() as c:
            doc = await c.get(f"http://127.0.0.1:{port}/admin/v1/openapi.json")
            assert doc.json()["openapi"] == "3.1.0"
            assert (await c.get(f"http://127.0.0.1:{port}/admin/v1/me")).status_code == 401
        with pytest.raises(OSError, match="in use"):
            await start_control_server(cfg, bus=bus)  # the port is taken
    finally:
        await running.aclose()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as c:
            await c.get(f"http://127.0.0.1:{port}/admin/v1/openapi.json")
    seen: list[dict[str, Any]] = []
    bus.subscribe("control", seen.append)
    await bus_publisher(cfg, bus)({"type": "ip.blocked", "cidr": "203.0.113.0/24"})
    assert seen == [{"type": "ip.blocked", "cidr": "203.0.113.0/24"}]


async def test_revocation_check_honours_client_bars() -> None:
    """An application revoked by the incident action: its earlier admin tokens stop working."""
    store = MemoryStore()
    await store.open()
    check = revocation_check(store, ManualClock(1000.0))
    claims: dict[str, Any] = {"sub": "u1", "jti": "j1", "iat": 900, "client_id": "console"}
    assert not await check(claims)
    await store.add_revocation(Revocation("client", "console", None, 950.0, 2000.0, 1000.0))
    assert await check(claims)
    assert await check({"sub": "u1", "jti": "j2", "iat": 900, "azp": "console"})
    assert not await check({**claims, "iat": 960})  # issued after the bar
    assert not await check({**claims, "client_id": "other"})
    assert await check({"sub": "u1", "jti": "j3", "client_id": "console"})  # no iat: closed
