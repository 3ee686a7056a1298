"""OpenAPI enforcement through the real gateway (TLS-less listener, test upstream, SQLite
ownership resolver): each attack is sent over HTTP and must never reach the upstream. Plus the
PostgreSQL ownership resolver against the real server."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from bastion.core.clock import ManualClock
from bastion.gateway.layers.authz.config import SqlResolverConfig
from bastion.gateway.layers.authz.resolvers import CachedResolver, ResolverError
from tests.support.gateway import GatewayHarness
from tests.support.postgres import pg_schema

pytestmark = pytest.mark.integration

BANK = Path(__file__).resolve().parents[1] / "fixtures" / "openapi" / "bank.yaml"


def bank_route(tmp_path: Path, *, enforce: bool = True) -> dict[str, Any]:
    """The bank document's route, with a SQLite ownership resolver (invoice 1 is alice's,
    2 is bob's); ``enforce=False``: the three layers in shadow mode."""
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, user_id TEXT)")
        conn.executemany("INSERT INTO invoices VALUES (?, ?)", [(1, "alice"), (2, "bob")])
    conn.close()
    resolver = {
        "name": "invoices",
        "type": "sql",
        "database": f"sqlite:///{db}",
        "query": "SELECT user_id FROM invoices WHERE id = ?",
    }
    return {
        "name": "bank",
        "path_prefix": "/bank",
        "strip_prefix": True,
        "openapi": {"spec": str(BANK), "enforce": enforce},
        # Enforced, the test upstream's echo (which no response schema declares) is blocked.
        "response_filter": {"enforce": False} if not enforce else {"enabled": False},
        "authz": {"enforce": enforce, "resolvers": [resolver]},
    }


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[GatewayHarness]:
    h = GatewayHarness(tmp_path, extra_routes=[bank_route(tmp_path)])
    try:
        yield h
    finally:
        h.close()


def send(
    h: GatewayHarness, method: str, path: str, token: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"}
    raw = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        raw = orjson.dumps(body)
    resp = h.request(method, path, headers=headers, body=raw)
    return resp.status, resp.json() if resp.body else {}


def forwarded(h: GatewayHarness) -> list[str]:
    return [f"{m} {p}" for m, p, *_ in h.upstream.requests]


def test_declared_operation_is_forwarded(bank: GatewayHarness) -> None:
    status, echo = send(bank, "GET", "/bank/v1/accounts/alice", bank.token(sub="alice"))
    assert status == 200
    assert echo["path"] == "/v1/accounts/alice"


def test_undeclared_endpoint_is_refused(bank: GatewayHarness) -> None:
    status, problem = send(bank, "GET", "/bank/v1/internal/debug", bank.token(sub="alice"))
    assert (status, problem["code"]) == (404, "openapi.operation_unknown")
    status, problem = send(bank, "DELETE", "/bank/v1/accounts/alice", bank.token(sub="alice"))
    assert (status, problem["code"]) == (405, "openapi.method_not_allowed")
    assert forwarded(bank) == []


def test_mass_assignment_body_is_refused(bank: GatewayHarness) -> None:
    token = bank.token(sub="alice", scope="read invoices:write", accounts=["acc-1"])
    attack = {"account_id": "acc-1", "amount_cents": 100, "is_admin": True}
    status, problem = send(bank, "POST", "/bank/v1/invoices", token, attack)
    assert (status, problem["code"]) == (400, "openapi.invalid_request")
    assert problem["detail"] == "body/is_admin: not declared"
    assert forwarded(bank) == []
    status, _ = send(
        bank, "POST", "/bank/v1/invoices", token, {"account_id": "acc-1", "amount_cents": 100}
    )
    assert status == 200
    assert forwarded(bank) == ["POST /v1/invoices"]


def test_bola_swap_is_refused(bank: GatewayHarness) -> None:
    events: list[dict[str, Any]] = []
    bank.services.bus.subscribe("security", events.append)
    alice = bank.token(sub="alice")
    assert send(bank, "GET", "/bank/v1/invoices/1", alice)[0] == 200
    status, problem = send(bank, "GET", "/bank/v1/invoices/2", alice)  # bob's invoice
    assert (status, problem["code"]) == (403, "access.forbidden")
    assert forwarded(bank) == ["GET /v1/invoices/1"]
    assert [e["bastion"]["object_id"] for e in events] == ["2"]
    bank.close()
    [denied] = [r for r in bank.audit_records() if r["url"]["path"] == "/bank/v1/invoices/2"]
    assert denied["event"]["reason"] == "access.forbidden"
    assert "owner rule path.invoice_id" in denied["bastion"]["diagnosis"]
    finding = {"param": "path.invoice_id", "object_id": "2"}
    assert denied["bastion"]["findings"] == {"bola_denied": finding}


def test_shadow_mode_changes_no_traffic_and_writes_what_it_found_to_the_audit_log(
    tmp_path: Path,
) -> None:
    route = bank_route(tmp_path, enforce=False)
    h = GatewayHarness(tmp_path, extra_routes=[route])
    try:
        alice = h.token(sub="alice", scope="read")
        attacks = [
            ("GET", "/bank/v1/admin/secrets", None),  # undeclared: a shadow endpoint
            (
                "POST",
                "/bank/v1/invoices",
                {"account_id": "acc-1", "amount_cents": 5, "is_admin": 1},
            ),
            ("GET", "/bank/v1/invoices/2", None),  # bob's invoice
        ]
        for method, path, body in attacks:
            headers = {"Authorization": f"Bearer {alice}", "Accept-Encoding": "gzip"}
            raw = None
            if body is not None:
                headers["Content-Type"] = "application/json"
                raw = orjson.dumps(body)
            resp = h.request(method, path, headers=headers, body=raw)
            assert resp.status == 200, (path, resp.body)
            echo = resp.json()  # the upstream's echo, passed unchanged (undeclared properties)
            assert echo["path"] == path.removeprefix("/bank")
        # Every request reached the upstream, with the client's Accept-Encoding.
        assert forwarded(h) == [f"{m} {p.removeprefix('/bank')}" for m, p, _ in attacks]
        assert all(
            ("accept-encoding", "gzip") in [(k.lower(), v) for k, v in req[3]]
            for req in h.upstream.requests
        )
        h.close()
        records = {r["url"]["path"]: r for r in h.audit_records()}
        found = {path: records[path]["bastion"].get("findings", {}) for _, path, _ in attacks}
    finally:
        h.close()
    admin = found["/bank/v1/admin/secrets"]
    assert admin["shadow_endpoint"] is True
    assert admin["openapi_shadow"].startswith("openapi.operation_unknown")
    invoice = found["/bank/v1/invoices"]
    assert invoice["openapi_shadow"] == ("openapi.invalid_request: body/is_admin: not declared")
    assert invoice["authz_shadow"].startswith("access.forbidden: authz: createInvoice needs")
    swap = found["/bank/v1/invoices/2"]
    assert swap["bola_denied"] == {"param": "path.invoice_id", "object_id": "2"}
    assert swap["authz_shadow"].startswith("access.forbidden: authz:")
    # The upstream's echo is no response the document declares: it would have been blocked.
    assert swap["response_filter"]["would_block"] == (
        "undeclared response: application/json for 200"
    )
    for record in records.values():
        assert record["bastion"]["decision"] == "allow"


def test_missing_scope_is_refused(bank: GatewayHarness) -> None:
    reader = bank.token(sub="alice", scope="read")
    status, problem = send(bank, "PATCH", "/bank/v1/accounts/alice", reader, {"name": "A"})
    assert (status, problem["code"]) == (403, "access.forbidden")
    writer = bank.token(sub="alice", scope="write")
    assert send(bank, "PATCH", "/bank/v1/accounts/alice", writer, {"name": "A"})[0] == 200
    key = bank.create_key("alice", ("accounts:write",))  # an API key's scopes count alike
    assert send(bank, "PATCH", "/bank/v1/accounts/alice", key, {"name": "A"})[0] == 200
    assert forwarded(bank) == ["PATCH /v1/accounts/alice", "PATCH /v1/accounts/alice"]


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    import asyncpg

    async with pg_schema("authz") as url:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("CREATE TABLE invoices (id BIGINT PRIMARY KEY, user_id TEXT)")
            await conn.execute("INSERT INTO invoices VALUES (1, 'alice'), (2, 'bob')")
        finally:
            await conn.close()
        yield url


async def test_postgresql_resolver(pg_url: str) -> None:
    cfg = SqlResolverConfig(
        name="invoices",
        type="sql",
        database=pg_url,
        query="SELECT user_id FROM invoices WHERE id = $1",
    )
    resolver = CachedResolver.from_config(cfg, ManualClock())
    try:
        assert await resolver.owners(1, "1") == frozenset({"alice"})
        assert await resolver.owners(2, "2") == frozenset({"bob"})
        assert await resolver.owners(3, "3") == frozenset()
        with pytest.raises(ResolverError, match="postgresql: ") as info:
            await resolver.owners("not-a-number", "not-a-number")
        assert "127.0.0.1" not in str(info.value)  # never the URL (it may hold a password)
    finally:
        await resolver.aclose()
    down = SqlResolverConfig(
        name="down",
        type="sql",
        database="postgresql://postgres@127.0.0.1:9/test",
        query="SELECT user_id FROM invoices WHERE id = $1",
    )
    resolver = CachedResolver.from_config(down, ManualClock())
    try:
        with pytest.raises(ResolverError, match="postgresql: "):
            await resolver.owners(1, "1")
    finally:
        await resolver.aclose()
