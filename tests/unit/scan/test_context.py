"""ScanContext: identities, safety enforcement, the ledger and redacted evidence."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from bastion.scan.checks.base import ANONYMOUS, USER_A, USER_B, Check, ScanContext
from bastion.scan.errors import OffOrigin, SafetyRefused
from bastion.scan.model import Confidence, Severity
from bastion.scan.session import ScanOptions, open_session
from bastion.scan.spec import ScanSpec

OPTS = ScanOptions(rate=1000.0, canary=False)


class Probe(Check):
    id = "probe"
    title = "Probe"
    owasp = "API1"
    cwe = "CWE-639"
    remediation = "Fix it."


async def test_send_as_identities_logs_in_and_labels(
    spec: ScanSpec, auth: Any, transport: httpx.ASGITransport
) -> None:
    async with open_session(spec, "http://testserver", auth, OPTS, transport=transport) as ctx:
        mine = await ctx.send("GET", "/notes", identity=USER_A)
        assert mine.status == 200
        assert mine.json()[0]["text"] == "alice secret"
        theirs = await ctx.send("GET", "/notes", identity=USER_B)
        assert theirs.json() == []
        anon = await ctx.send("GET", "/notes", identity=ANONYMOUS)
        assert anon.status == 401
        assert ctx.client.budget.used == 5  # two logins, three requests
        assert mine.identity == USER_A


async def test_relogin_after_401(
    spec: ScanSpec, auth: Any, transport: httpx.ASGITransport, app: Any
) -> None:
    async with open_session(spec, "http://testserver", auth, OPTS, transport=transport) as ctx:
        await ctx.send("GET", "/notes")
        app.state.data["tokens"].clear()  # the server forgets every token
        ident = ctx.identity(USER_A)
        ident.fetched_at -= 60  # outside the re-login cooldown
        again = await ctx.send("GET", "/notes")
        assert again.status == 200
        assert ident.logins == 2


async def test_safety_refuses_foreign_delete_and_account_reset(
    spec: ScanSpec, auth: Any, transport: httpx.ASGITransport, app: Any
) -> None:
    async with open_session(spec, "http://testserver", auth, OPTS, transport=transport) as ctx:
        used = ctx.client.budget.used
        with pytest.raises(SafetyRefused):
            await ctx.send("DELETE", "/notes/1", identity=USER_B)
        with pytest.raises(SafetyRefused):
            await ctx.send("POST", "/revoke-all")
        assert ctx.client.budget.used == used  # nothing sent
        assert "1" in app.state.data["notes"]
        created = await ctx.send("POST", "/notes", json={"text": "mine"})
        assert created.status == 201
        path = f"/notes/{created.json()['id']}"
        assert ctx.ledger.owns("/api" + path)
        gone = await ctx.send("DELETE", path, identity=USER_B)
        assert gone.status == 204
        assert ctx.ledger.objects[0].deleted


async def test_off_origin_redirect_not_followed(
    spec: ScanSpec, auth: Any, transport: httpx.ASGITransport
) -> None:
    async with open_session(spec, "http://testserver", auth, OPTS, transport=transport) as ctx:
        with pytest.raises(OffOrigin):
            await ctx.send(
                "GET", "/redirect", params={"to": "http://evil.example/x"}, follow_redirects=True
            )
        plain = await ctx.send("GET", "/redirect", params={"to": "http://evil.example/x"})
        assert plain.status == 302
        with pytest.raises(OffOrigin):
            await ctx.send("GET", "http://evil.example/")


async def test_finding_evidence_is_redacted(
    spec: ScanSpec, auth: Any, transport: httpx.ASGITransport
) -> None:
    async with open_session(spec, "http://testserver", auth, OPTS, transport=transport) as ctx:
        reply = await ctx.send("GET", "/notes/1", identity=USER_B)
        token = ctx.identity(USER_B).token
        assert token
        op, _ = ctx.spec.match("GET", "/notes/1")
        f = Probe().finding(
            ctx,
            op,
            f"read with {token}",
            severity=Severity.HIGH,
            confidence=Confidence.CERTAIN,
            evidence=(reply,),
            key="read",
        )
        ctx.report(f)
        ctx.report(f)
        assert len(ctx.findings) == 1
        text = f.evidence[0].as_text() + f.detail
        assert token not in text
        assert "redacted" in text
        assert f.operation == "GET /notes/{note_id}"
        assert isinstance(ctx, ScanContext)


async def test_concurrent_requests_share_one_login(
    spec: ScanSpec, auth: Any, transport: httpx.ASGITransport, app: Any
) -> None:
    import asyncio

    async with open_session(spec, "http://testserver", auth, OPTS, transport=transport) as ctx:
        replies = await asyncio.gather(*(ctx.send("GET", "/notes") for _ in range(5)))
        assert all(r.status == 200 for r in replies)
        assert ctx.identity(USER_A).logins == 1
        assert app.state.data["logins"] == 1


async def test_root_paths_are_checked_by_the_safety_policy_too(
    spec: ScanSpec, auth: Any, transport: httpx.ASGITransport
) -> None:
    async with open_session(spec, "http://testserver", auth, OPTS, transport=transport) as ctx:
        with pytest.raises(SafetyRefused):
            await ctx.send("DELETE", "/admin/users/1", from_root=True)
        with pytest.raises(SafetyRefused):
            await ctx.send("POST", "/admin/reset", from_root=True)
        probe = await ctx.send("GET", "/.env", from_root=True, identity=ANONYMOUS)
        assert probe.status == 404
        assert probe.path == "/.env"
        assert ctx.allowed("DELETE", "/notes/1").allowed is False
        assert ctx.allowed("GET", "/notes/1").allowed is True


async def test_identity_helpers(spec: ScanSpec, auth: Any, transport: httpx.ASGITransport) -> None:
    from bastion.scan.errors import ScanUsageError

    async with open_session(spec, "http://testserver", auth, OPTS, transport=transport) as ctx:
        assert ctx.has(ANONYMOUS)
        assert ctx.has(USER_B)
        assert not ctx.has("admin")
        with pytest.raises(ScanUsageError, match="admin"):
            ctx.identity("admin")
        token = await ctx.token(USER_A)
        assert token is not None
        assert token.startswith("tok-1-")
        assert ctx.can_spend(10)
        assert not ctx.can_spend(10_000)
        op, _ = ctx.spec.match("POST", "/notes")
        assert op is not None
        assert ctx.sample_body(op) == {"text": "hello"}
        assert ctx.sample_body(op, all_properties=True) == {"text": "hello"}
        get, _ = ctx.spec.match("GET", "/notes/1")
        assert get is not None
        assert ctx.fill_path(get) == "/notes/1"
        assert ctx.fill_path(get, {"note_id": "a/b"}) == "/notes/a%2Fb"
        assert ctx.sample_body(get) is None
        check = Probe()
        ctx.skip(check, "not today", get)
        assert ctx.skips[-1].operation == "GET /notes/{note_id}"


async def test_target_locality(spec: ScanSpec, auth: Any) -> None:
    async with open_session(spec, "http://127.0.0.1:9", auth, OPTS) as ctx:
        assert ctx.target_is_local
    async with open_session(spec, "https://api.example", auth, OPTS) as ctx:
        assert not ctx.target_is_local


async def test_query_api_key_merges_with_the_checks_parameters(spec: ScanSpec) -> None:
    from bastion.scan.auth import parse_auth

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.query.decode())
        return httpx.Response(200, json=[])

    auth = parse_auth(
        {
            "identities": {
                "user_a": {"api_key": {"name": "key", "in": "query", "value": "k-aaaaaaaaaaaa"}},
                "user_b": {"headers": {"x": "1"}},
            }
        }
    )
    transport = httpx.MockTransport(handler)
    async with open_session(spec, "http://t.test", auth, OPTS, transport=transport) as ctx:
        await ctx.send("GET", "/notes", params={"q": "1"})
        await ctx.send("GET", "/notes", params=[("q", "1"), ("q", "2")])
        await ctx.send("GET", "/notes", params=[("key", "mine")])
        await ctx.send("GET", "/notes")
    assert seen == [
        "key=k-aaaaaaaaaaaa&q=1",
        "q=1&q=2&key=k-aaaaaaaaaaaa",
        "key=mine",
        "key=k-aaaaaaaaaaaa",
    ]


async def test_base_path_not_doubled_when_the_target_has_it(spec: ScanSpec, auth: Any) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json=[])

    transport = httpx.MockTransport(handler)
    for target in ("http://t.test", "http://t.test/api", "http://t.test/gw/api/"):
        async with open_session(spec, target, auth, OPTS, transport=transport) as ctx:
            await ctx.send("GET", "/notes", identity=ANONYMOUS)
    assert seen == ["/api/notes", "/api/notes", "/gw/api/notes"]


@pytest.mark.parametrize(
    ("target", "location", "recorded"),
    [
        ("http://t.test", "/api/notes/7", "/api/notes/7"),
        ("http://t.test", "http://t.test:80/api/notes/7", "/api/notes/7"),
        ("http://t.test", "notes/7", "/api/notes/7"),
        ("http://t.test/gw", "/gw/api/notes/7", "/api/notes/7"),
        ("http://t.test/gw", None, "/api/notes/9"),
        ("http://t.test", "http://elsewhere.test/api/notes/7", "/api/notes/9"),
    ],
)
async def test_created_objects_are_recorded_relative_to_the_target(
    spec: ScanSpec, auth: Any, target: str, location: str | None, recorded: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"location": location} if location else {}
        return httpx.Response(201, json={"id": 9}, headers=headers)

    transport = httpx.MockTransport(handler)
    async with open_session(spec, target, auth, OPTS, transport=transport) as ctx:
        await ctx.send("POST", "/notes", json={"text": "x"}, identity=ANONYMOUS)
        assert [o.path for o in ctx.ledger.objects] == [recorded]
        assert ctx.allowed("DELETE", recorded.removeprefix("/api")).allowed
