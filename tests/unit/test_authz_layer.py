"""The authz layer: scopes (OR of requirements, AND within one), roles, public operations,
ownership rules on parameters, claims and body fields — and the attack they stop, swapped
object ids —, the SQL resolver on a real SQLite file, the HTTP resolver on a local asyncio
server, the resolver cache under a ManualClock, fail-closed resolver errors, shadow mode."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httptools
import orjson
import pytest

from bastion.core.clock import ManualClock
from bastion.core.exchange import Exchange, Headers, Principal, Reply, RequestView
from bastion.errors import ConfigError
from bastion.events.bus import EventBus
from bastion.gateway.layers.authz.config import AuthzConfig
from bastion.gateway.layers.authz.layer import AuthzLayer, Requirement, policy_for
from bastion.gateway.layers.authz.resolvers import CachedResolver, ResolverError, as_text
from bastion.gateway.layers.base import NEEDS_IO, NeedsIo
from bastion.gateway.layers.openapi.config import OpenApiConfig
from bastion.gateway.layers.openapi.layer import OpenApiLayer
from bastion.openapi.spec import OpenApiSpec, load_spec

BANK = Path(__file__).resolve().parents[1] / "fixtures" / "openapi" / "bank.yaml"
JSON = [("content-type", "application/json")]
# The bank document names the resolver "invoices"; tests that do not use it get this one.
UNUSED_RESOLVER = {
    "name": "invoices",
    "type": "http",
    "url": "http://127.0.0.1:9",
    "path": "/o/{id}",
}


@pytest.fixture(scope="module")
def spec() -> OpenApiSpec:
    return load_spec(str(BANK))


def principal(
    sub: str = "alice",
    scopes: str = "read",
    roles: tuple[str, ...] = (),
    kind: str = "jwt",
    **claims: Any,
) -> Principal:
    return Principal(
        kind=kind,
        subject=sub,
        client_id="app",
        scopes=frozenset(scopes.split()),
        roles=frozenset(roles),
        claims={"sub": sub, **claims},
    )


class Setup:
    """An openapi + authz pair over the bank document, with a bus that records events."""

    def __init__(self, spec: OpenApiSpec, clock: ManualClock | None = None, **authz: Any) -> None:
        self.bus = EventBus()
        self.events: list[dict[str, Any]] = []
        self.bus.subscribe("security", self.events.append)
        self.clock = clock or ManualClock()
        self.openapi = OpenApiLayer(OpenApiConfig(spec=str(BANK)), spec)
        authz.setdefault("resolvers", [UNUSED_RESOLVER])
        self.authz = AuthzLayer(AuthzConfig(**authz), spec, bus=self.bus, clock=self.clock)

    async def call(
        self,
        method: str,
        target: str,
        who: Principal | None,
        body: dict[str, Any] | None = None,
    ) -> tuple[Exchange, Reply | None]:
        path, _, query = target.partition("?")
        raw = orjson.dumps(body) if body is not None else b""
        headers = Headers(list(JSON) if body is not None else [])
        view = RequestView(method, path, query, headers, "203.0.113.9", body=raw)
        ex = Exchange(view, "rid", time.monotonic(), time.time(), route_name="bank")
        ex.principal = who
        reply = await self.openapi.on_request(ex)
        assert reply is None, reply.body if reply else None
        return ex, await self.authz.on_request(ex)


def status(reply: Reply | None) -> int:
    return 0 if reply is None else reply.status


def code(reply: Reply | None) -> str:
    assert reply is not None
    return str(orjson.loads(reply.body)["code"])


# -- BFLA: scopes and roles -----------------------------------------------------------------------
async def test_public_operation_needs_no_principal(spec: OpenApiSpec) -> None:
    s = Setup(spec)
    assert (await s.call("GET", "/v1/health", None))[1] is None


async def test_secured_operation_without_principal_is_401(spec: OpenApiSpec) -> None:
    s = Setup(spec)
    ex, reply = await s.call("GET", "/v1/accounts/me", None)
    assert status(reply) == 401
    assert reply is not None
    assert ("www-authenticate", 'Bearer realm="bastion"') in reply.headers
    assert ex.reason == "authn.failed"


async def test_scopes_or_between_requirements(spec: OpenApiSpec) -> None:
    s = Setup(spec)
    body = {"name": "new"}
    # updateAccount: bearer [write] OR key [accounts:write]
    assert (
        status((await s.call("PATCH", "/v1/accounts/alice", principal(scopes="write"), body))[1])
        == 0
    )
    key = principal(scopes="accounts:write", kind="api_key")
    assert status((await s.call("PATCH", "/v1/accounts/alice", key, body))[1]) == 0
    ex, reply = await s.call("PATCH", "/v1/accounts/alice", principal(scopes="read"), body)
    assert (status(reply), code(reply)) == (403, "access.forbidden")
    assert ex.diagnosis == (
        "authz: updateAccount needs api_key/jwt with scopes write "
        "or api_key with scopes accounts:write"
    )
    # A JWT holding the API key requirement's scope cannot present the apiKey scheme.
    reply = (await s.call("PATCH", "/v1/accounts/alice", principal(scopes="accounts:write"), body))[
        1
    ]
    assert (status(reply), code(reply)) == (403, "access.forbidden")


async def test_scopes_and_within_a_requirement(spec: OpenApiSpec) -> None:
    s = Setup(spec)
    body = {"account_id": "acc-1", "amount_cents": 5}
    both = principal(scopes="read invoices:write", accounts=["acc-1"])
    assert status((await s.call("POST", "/v1/invoices", both, body))[1]) == 0
    one = principal(scopes="invoices:write", accounts=["acc-1"])
    assert status((await s.call("POST", "/v1/invoices", one, body))[1]) == 403


async def test_document_level_security_applies(spec: OpenApiSpec) -> None:
    s = Setup(spec)
    assert status((await s.call("GET", "/v1/accounts/me", principal(scopes="read")))[1]) == 0
    assert status((await s.call("GET", "/v1/accounts/me", principal(scopes="other")))[1]) == 403


async def test_roles(spec: OpenApiSpec) -> None:
    s = Setup(spec)
    assert status((await s.call("GET", "/v1/admin/users", principal(roles=("support",))))[1]) == 0
    ex, reply = await s.call("GET", "/v1/admin/users", principal(roles=("user",)))
    assert status(reply) == 403
    assert ex.diagnosis == "authz: listUsers needs a role of admin support"


def test_policy_of_operations_without_declarations(spec: OpenApiSpec) -> None:
    from bastion.openapi.spec import compile_document

    document = {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "components": {"securitySchemes": {"k": {"type": "apiKey", "in": "header", "name": "k"}}},
        "paths": {
            "/none": {"get": {"responses": {"200": {"description": "ok"}}}},
            "/optional": {
                "get": {"security": [{}, {"k": []}], "responses": {"200": {"description": "ok"}}}
            },
            "/any": {"get": {"security": [{"k": []}], "responses": {"200": {"description": "ok"}}}},
        },
    }
    ops = {op.path_template: policy_for(op) for op in compile_document(document).operations}
    assert ops["/none"].needs_principal
    assert ops["/none"].requirements == ()
    assert not ops["/optional"].needs_principal
    assert ops["/any"].needs_principal
    assert ops["/any"].requirements == (Requirement(frozenset(), frozenset({"api_key"})),)


def _mixed_spec(schemes: dict[str, Any], security: list[dict[str, list[str]]]) -> OpenApiSpec:
    from bastion.openapi.spec import compile_document

    document = {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "components": {
            "securitySchemes": schemes,
            "x-shared": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        },
        "paths": {
            "/x": {"get": {"security": security, "responses": {"200": {"description": "ok"}}}}
        },
    }
    return compile_document(document)


BEARER = {"type": "http", "scheme": "bearer"}
KEY = {"type": "apiKey", "in": "header", "name": "X-API-Key"}


@pytest.mark.parametrize(
    ("schemes", "security", "allowed", "refused"),
    [
        # The attack: an empty apiKey requirement beside a scoped bearer one. Before the
        # scheme was compared, any JWT got in through {key: []}.
        (
            {"bearer": BEARER, "key": KEY},
            [{"bearer": ["admin"]}, {"key": []}],
            [("jwt", "admin"), ("api_key", "")],
            [("jwt", ""), ("jwt", "read")],
        ),
        (
            {"jwt": {**BEARER, "bearerFormat": "JWT"}},
            [{"jwt": ["read"]}],
            [("jwt", "read")],
            [("api_key", "read")],  # an API key is no JWT, whatever its scopes
        ),
        (
            {"oauth": {"type": "oauth2", "flows": {}}, "oidc": {"type": "openIdConnect"}},
            [{"oauth": ["read"]}, {"oidc": []}],
            [("jwt", ""), ("jwt", "read")],
            [("api_key", "read")],
        ),
        (  # schemes Bastion verifies no credential for: never met
            {"basic": {"type": "http", "scheme": "basic"}, "mtls": {"type": "mutualTLS"}},
            [{"basic": []}, {"mtls": []}],
            [],
            [("jwt", ""), ("api_key", "")],
        ),
        (  # every scheme of one requirement: the kinds that can present them all
            {"bearer": BEARER, "key": KEY},
            [{"bearer": ["a"], "key": ["b"]}],
            [("api_key", "a b")],
            [("jwt", "a b"), ("api_key", "a")],
        ),
        (  # a scheme named by a YAML integer key (1:), required as "1"
            {1: KEY},
            [{"1": ["read"]}],
            [("api_key", "read")],
            [("jwt", "read")],
        ),
        (  # a scheme given by $ref
            {"key": {"$ref": "#/components/x-shared"}},
            [{"key": ["read"]}],
            [("api_key", "read")],
            [("jwt", "read")],
        ),
    ],
)
async def test_the_scheme_must_be_one_the_principal_can_present(
    schemes: dict[str, Any],
    security: list[dict[str, list[str]]],
    allowed: list[tuple[str, str]],
    refused: list[tuple[str, str]],
) -> None:
    s = Setup(_mixed_spec(schemes, security))
    for kind, scopes in allowed:
        assert status((await s.call("GET", "/x", principal(scopes=scopes, kind=kind)))[1]) == 0
    for kind, scopes in refused:
        _ex, reply = await s.call("GET", "/x", principal(scopes=scopes, kind=kind))
        assert (status(reply), code(reply)) == (403, "access.forbidden"), (kind, scopes)


# -- BOLA: rules on parameters, claims and bodies -------------------------------------------------
async def test_swapped_account_id_is_refused(spec: OpenApiSpec) -> None:
    """The attack: alice asks for bob's account by changing the id in the path."""
    s = Setup(spec)
    assert status((await s.call("GET", "/v1/accounts/alice", principal("alice")))[1]) == 0
    ex, reply = await s.call("GET", "/v1/accounts/bob", principal("alice"))
    assert (status(reply), code(reply)) == (403, "access.forbidden")
    assert ex.annotations["bola_denied"] == {"param": "path.account_id", "object_id": "bob"}
    assert ex.diagnosis == "authz: getAccount owner rule path.account_id: not the owner"
    [event] = s.events
    assert event["event"]["action"] == "bola_denied"
    assert event["user"] == {"id": "alice"}
    assert event["bastion"] == {
        "route": "bank",
        "operation": "getAccount",
        "param": "path.account_id",
        "object_id": "bob",
        "enforced": True,
    }


async def test_enumeration_through_many_ids_is_refused_each_time(spec: OpenApiSpec) -> None:
    s = Setup(spec)
    for n in range(20):
        reply = (await s.call("GET", f"/v1/accounts/user{n}", principal("alice")))[1]
        assert status(reply) == 403
    assert [e["bastion"]["object_id"] for e in s.events] == [f"user{n}" for n in range(20)]


async def test_hide_existence_answers_404(spec: OpenApiSpec) -> None:
    s = Setup(spec, hide_existence=True)
    reply = (await s.call("GET", "/v1/accounts/bob", principal("alice")))[1]
    assert (status(reply), code(reply)) == (404, "route.not_found")


async def test_claim_rules(spec: OpenApiSpec) -> None:
    s = Setup(spec)
    member = principal(org_id=42)
    assert status((await s.call("GET", "/v1/orgs/42/accounts", member))[1]) == 0
    assert status((await s.call("GET", "/v1/orgs/43/accounts", member))[1]) == 403
    # No such claim (an API key has no claims): refused, never skipped.
    api_key = principal(kind="api_key")
    ex, reply = await s.call("GET", "/v1/orgs/42/accounts", api_key)
    assert status(reply) == 403
    assert ex.diagnosis.endswith("claims.org_id missing")


async def test_body_field_in_list_claim(spec: OpenApiSpec) -> None:
    """Creating an invoice on someone else's account through the body is refused."""
    s = Setup(spec)
    who = principal(scopes="read invoices:write", accounts=["acc-1", "acc-2"])
    mine = {"account_id": "acc-2", "amount_cents": 5}
    assert status((await s.call("POST", "/v1/invoices", who, mine))[1]) == 0
    theirs = {"account_id": "acc-9", "amount_cents": 5}
    ex, reply = await s.call("POST", "/v1/invoices", who, theirs)
    assert status(reply) == 403
    assert ex.annotations["bola_denied"] == {"param": "body.account_id", "object_id": "acc-9"}
    not_a_list = principal(scopes="read invoices:write", accounts="acc-2")
    assert status((await s.call("POST", "/v1/invoices", not_a_list, mine))[1]) == 403


async def test_shadow_mode_records_but_lets_through(spec: OpenApiSpec) -> None:
    s = Setup(spec, enforce=False)
    ex, reply = await s.call("GET", "/v1/accounts/bob", principal("alice"))
    assert reply is None
    assert ex.annotations["bola_denied"] == {"param": "path.account_id", "object_id": "bob"}
    assert ex.annotations["authz_shadow"].startswith("access.forbidden: ")
    assert s.events[0]["bastion"]["enforced"] is False
    assert (ex.decision, ex.reason) == ("allow", "")
    ex, reply = await s.call("GET", "/v1/admin/users", principal())
    assert reply is None
    assert ex.annotations["authz_shadow"].startswith("access.forbidden")
    ex, reply = await s.call("GET", "/v1/accounts/me", None)
    assert reply is None
    assert ex.annotations["authz_shadow"].startswith("authn.failed")


def test_unknown_resolver_name_is_a_config_error(spec: OpenApiSpec) -> None:
    with pytest.raises(ConfigError) as info:
        AuthzLayer(AuthzConfig(), spec, bus=EventBus(), clock=ManualClock())
    assert info.value.problems[0] == (
        "authz.resolvers: x-bastion-owner of getInvoice names resolver 'invoices', "
        "which is not configured"
    )


# -- the SQL resolver -----------------------------------------------------------------------------
@pytest.fixture
def invoices_db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL)")
        db.executemany(
            "INSERT INTO invoices VALUES (?, ?)", [(1, "alice"), (2, "bob"), (3, "alice")]
        )
    db.close()
    return path


def sql_resolver(path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": "invoices",
        "type": "sql",
        "database": f"sqlite:///{path}",
        "query": "SELECT user_id FROM invoices WHERE id = ?",
        **extra,
    }


async def test_sql_resolver_stops_swapped_invoice_ids(spec: OpenApiSpec, invoices_db: Path) -> None:
    s = Setup(spec, resolvers=[sql_resolver(invoices_db)])
    try:
        assert status((await s.call("GET", "/v1/invoices/1", principal("alice")))[1]) == 0
        ex, reply = await s.call("GET", "/v1/invoices/2", principal("alice"))
        assert status(reply) == 403
        assert ex.annotations["bola_denied"] == {"param": "path.invoice_id", "object_id": "2"}
        # An id that does not exist is refused like one that is not ours.
        assert status((await s.call("GET", "/v1/invoices/99", principal("alice")))[1]) == 403
        # A list of ids: every one must be ours.
        assert (
            status((await s.call("GET", "/v1/batch/invoices?ids=1,3", principal("alice")))[1]) == 0
        )
        assert (
            status((await s.call("GET", "/v1/batch/invoices?ids=1,2", principal("alice")))[1])
            == 403
        )
    finally:
        await s.authz.aclose()


async def test_sql_resolver_cache_and_ttl(spec: OpenApiSpec, invoices_db: Path) -> None:
    clock = ManualClock()
    s = Setup(spec, clock, resolvers=[sql_resolver(invoices_db, cache_ttl=30, negative_ttl=5)])
    try:
        alice = principal("alice")
        assert status((await s.call("GET", "/v1/invoices/1", alice))[1]) == 0
        with sqlite3.connect(invoices_db) as db:  # the invoice changes hands
            db.execute("UPDATE invoices SET user_id = 'bob' WHERE id = 1")
            db.execute("INSERT INTO invoices VALUES (7, 'alice')")
        db.close()
        assert status((await s.call("GET", "/v1/invoices/1", alice))[1]) == 0  # cached
        clock.advance(31)
        assert status((await s.call("GET", "/v1/invoices/1", alice))[1]) == 403  # re-read
        # A negative answer is cached for its shorter TTL.
        assert status((await s.call("GET", "/v1/invoices/8", alice))[1]) == 403
        with sqlite3.connect(invoices_db) as db:
            db.execute("INSERT INTO invoices VALUES (8, 'alice')")
        db.close()
        assert status((await s.call("GET", "/v1/invoices/8", alice))[1]) == 403
        clock.advance(6)
        assert status((await s.call("GET", "/v1/invoices/8", alice))[1]) == 0
    finally:
        await s.authz.aclose()


async def test_sql_resolver_errors_fail_closed(spec: OpenApiSpec, tmp_path: Path) -> None:
    s = Setup(spec, resolvers=[sql_resolver(tmp_path / "missing.db")])
    try:
        ex, reply = await s.call("GET", "/v1/invoices/1", principal("alice"))
        assert (status(reply), code(reply)) == (503, "authz.resolver_unavailable")
        assert ex.diagnosis.startswith("authz: resolver invoices: sqlite:")
    finally:
        await s.authz.aclose()
    s = Setup(spec, resolver_error_status=403, resolvers=[sql_resolver(tmp_path / "missing.db")])
    try:
        reply = (await s.call("GET", "/v1/invoices/1", principal("alice")))[1]
        assert (status(reply), code(reply)) == (403, "access.forbidden")
    finally:
        await s.authz.aclose()


def test_sql_resolver_config_checks() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="exactly one '\\?'"):
        AuthzConfig(
            resolvers=[
                {
                    "name": "r",
                    "type": "sql",
                    "database": "sqlite:///x.db",
                    "query": "SELECT a FROM t",
                }
            ]
        )
    with pytest.raises(ValidationError, match="\\$1"):
        AuthzConfig(
            resolvers=[
                {
                    "name": "r",
                    "type": "sql",
                    "database": "postgresql://h/db",
                    "query": "SELECT a FROM t WHERE id = ?",
                }
            ]
        )
    with pytest.raises(ValidationError, match="must be a SELECT"):
        AuthzConfig(
            resolvers=[
                {
                    "name": "r",
                    "type": "sql",
                    "database": "sqlite:///x.db",
                    "query": "DELETE FROM t WHERE id = ?",
                }
            ]
        )
    r = {"name": "r", "type": "http", "url": "http://127.0.0.1:1", "path": "/o/{id}"}
    with pytest.raises(ValidationError, match="unique"):
        AuthzConfig(resolvers=[r, r])
    with pytest.raises(ValidationError, match="contain \\{id\\}"):
        AuthzConfig(
            resolvers=[{"name": "r", "type": "http", "url": "http://127.0.0.1:1", "path": "/o"}]
        )


# -- the HTTP resolver ----------------------------------------------------------------------------
class OwnerService:
    """A local asyncio HTTP server answering ``GET /owners/<id>`` from a dict."""

    def __init__(self) -> None:
        self.owners: dict[str, Any] = {"1": "alice", "2": "bob", "5": ["alice", "carol"]}
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.mode = "ok"  # ok | error | slow | garbage
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.get_running_loop().create_server(
            lambda: _Conn(self), "127.0.0.1", 0
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self.server is not None
        for task in self.tasks:
            task.cancel()
        self.server.close()
        await self.server.wait_closed()


class _Conn(asyncio.Protocol):
    def __init__(self, service: OwnerService) -> None:
        self.service = service
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[str, str] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_message_complete(self) -> None:
        task = asyncio.get_running_loop().create_task(
            self.answer(self.url.decode(), dict(self.headers))
        )
        self.service.tasks.add(task)
        task.add_done_callback(self.service.tasks.discard)
        self.url, self.headers = b"", {}

    async def answer(self, path: str, headers: dict[str, str]) -> None:
        svc = self.service
        svc.paths.append(path)
        svc.headers.append(headers)
        object_id = path.rsplit("/", 1)[-1]
        status, body = 200, b""
        if svc.mode == "error":
            status, body = 500, b"boom"
        elif svc.mode == "slow":
            await asyncio.sleep(2)
        elif svc.mode == "garbage":
            body = b"<html>"
        elif object_id in svc.owners:
            body = orjson.dumps({"owner": svc.owners[object_id]})
        else:
            status, body = 404, b"{}"
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(
                f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )


@pytest.fixture
async def owner_service() -> AsyncIterator[OwnerService]:
    svc = OwnerService()
    await svc.start()
    try:
        yield svc
    finally:
        await svc.close()


def http_resolver(svc: OwnerService, **extra: Any) -> dict[str, Any]:
    return {
        "name": "invoices",
        "type": "http",
        "url": f"http://127.0.0.1:{svc.port}/internal",
        "path": "/owners/{id}",
        "authorization": "Bearer internal-token",
        **extra,
    }


async def test_http_resolver(spec: OpenApiSpec, owner_service: OwnerService) -> None:
    s = Setup(spec, resolvers=[http_resolver(owner_service)])
    try:
        alice = principal("alice")
        assert status((await s.call("GET", "/v1/invoices/1", alice))[1]) == 0
        assert status((await s.call("GET", "/v1/invoices/5", alice))[1]) == 0  # shared object
        assert status((await s.call("GET", "/v1/invoices/2", alice))[1]) == 403
        assert status((await s.call("GET", "/v1/invoices/3", alice))[1]) == 403  # 404 upstream
        assert owner_service.paths == [f"/internal/owners/{n}" for n in (1, 5, 2, 3)]
        assert owner_service.headers[0]["authorization"] == "Bearer internal-token"
        # Cached: no second call for the same object.
        assert status((await s.call("GET", "/v1/invoices/1", alice))[1]) == 0
        assert len(owner_service.paths) == 4
    finally:
        await s.authz.aclose()


async def test_http_resolver_keeps_the_id_in_one_path_segment(owner_service: OwnerService) -> None:
    from bastion.gateway.layers.authz.config import HttpResolverConfig
    from bastion.gateway.layers.authz.resolvers import HttpLookup

    lookup = HttpLookup(HttpResolverConfig(**http_resolver(owner_service)))
    try:
        assert await lookup.lookup("../admin?all=1") == frozenset()
        assert owner_service.paths == ["/internal/owners/..%2Fadmin%3Fall%3D1"]
    finally:
        await lookup.aclose()


@pytest.mark.parametrize("mode", ["error", "garbage", "slow"])
async def test_http_resolver_errors_fail_closed(
    spec: OpenApiSpec, owner_service: OwnerService, mode: str
) -> None:
    owner_service.mode = mode
    s = Setup(spec, resolvers=[http_resolver(owner_service, timeout=0.2)])
    try:
        ex, reply = await s.call("GET", "/v1/invoices/1", principal("alice"))
        assert (status(reply), code(reply)) == (503, "authz.resolver_unavailable")
        assert "internal-token" not in ex.diagnosis
    finally:
        await s.authz.aclose()


async def test_http_resolver_down_fails_closed(spec: OpenApiSpec) -> None:
    svc = OwnerService()
    svc.port = 9  # discard: nothing listens
    s = Setup(spec, resolvers=[http_resolver(svc, timeout=0.5)])
    try:
        reply = (await s.call("GET", "/v1/invoices/1", principal("alice")))[1]
        assert status(reply) == 503
    finally:
        await s.authz.aclose()


# -- the cache ------------------------------------------------------------------------------------
class CountingLookup:
    def __init__(self, answers: dict[str, frozenset[str]], delay: float = 0.0) -> None:
        self.answers = answers
        self.calls: list[Any] = []
        self.delay = delay

    async def lookup(self, object_id: Any) -> frozenset[str]:
        self.calls.append(object_id)
        if self.delay:
            await asyncio.sleep(self.delay)
        if object_id == "boom":
            raise ResolverError("backend down")
        return self.answers.get(str(object_id), frozenset())

    async def aclose(self) -> None:
        return None


async def test_cache_coalesces_bounds_and_does_not_cache_errors() -> None:
    clock = ManualClock()
    lookup = CountingLookup(
        {"1": frozenset({"a"}), "2": frozenset({"b"}), "3": frozenset({"c"})}, delay=0.01
    )
    r = CachedResolver("r", lookup, clock, ttl=10, negative_ttl=1, size=2, timeout=1)
    results = await asyncio.gather(*(r.owners(1, "1") for _ in range(5)))
    assert results == [frozenset({"a"})] * 5
    assert lookup.calls == [1]  # five concurrent requests, one lookup
    await r.owners(2, "2")
    await r.owners(3, "3")
    assert len(r) == 2  # bounded: "1" was evicted
    await r.owners(1, "1")
    assert lookup.calls == [1, 2, 3, 1]
    for _ in range(2):
        with pytest.raises(ResolverError, match="backend down"):
            await r.owners("boom", "boom")
    assert lookup.calls.count("boom") == 2
    slow = CachedResolver(
        "s", CountingLookup({}, delay=1), clock, ttl=10, negative_ttl=1, size=2, timeout=0.05
    )
    with pytest.raises(ResolverError, match=r"no answer within 0\.05s"):
        await slow.owners(1, "1")


def test_ids_compare_as_text() -> None:
    assert [as_text(v) for v in ("5", 5, 5.0, True, 1.5, None, [1])] == [
        "5",
        "5",
        "5",
        "true",
        "1.5",
        None,
        None,
    ]


# -- the synchronous contract ---------------------------------------------------------------------
def decided(result: Reply | NeedsIo | None) -> int:
    """The status ``check`` decided (0: continue); fails when it asked for I/O."""
    assert not isinstance(result, NeedsIo)
    return status(result)


def _matched(s: Setup, method: str, target: str, who: Principal | None) -> Exchange:
    path, _, query = target.partition("?")
    view = RequestView(method, path, query, Headers([]), "203.0.113.9")
    ex = Exchange(view, "rid", time.monotonic(), time.time(), route_name="bank")
    ex.principal = who
    assert s.openapi.check(ex) is None
    return ex


async def test_check_decides_scopes_roles_and_claims_without_io(spec: OpenApiSpec) -> None:
    s = Setup(spec)
    cases = [
        ("GET", "/v1/health", None, 0),
        ("GET", "/v1/accounts/me", None, 401),
        ("GET", "/v1/accounts/me", principal(scopes="other"), 403),
        ("GET", "/v1/admin/users", principal(roles=("support",)), 0),
        ("GET", "/v1/admin/users", principal(roles=("user",)), 403),
        ("GET", "/v1/accounts/alice", principal("alice"), 0),
        ("GET", "/v1/accounts/bob", principal("alice"), 403),  # BOLA by claim: no lookup
    ]
    for method, target, who, expected in cases:
        ex = _matched(s, method, target, who)
        result = s.authz.check(ex)
        assert decided(result) == expected, target
        again = _matched(s, method, target, who)
        assert status(await s.authz.on_request(again)) == expected
        assert ex.annotations.get("bola_denied") == again.annotations.get("bola_denied")
    assert len(s.events) == 2  # one bola_denied event per denied request, check or on_request


async def test_check_answers_owners_from_the_resolver_cache_and_needs_io_on_a_miss(
    spec: OpenApiSpec, invoices_db: Path
) -> None:
    clock = ManualClock()
    s = Setup(spec, clock, resolvers=[sql_resolver(invoices_db, cache_ttl=30, negative_ttl=5)])
    alice = principal("alice")
    try:
        ex = _matched(s, "GET", "/v1/invoices/1", alice)
        assert s.authz.check(ex) is NEEDS_IO  # not cached yet: the runner awaits on_request
        assert await s.authz.on_request(ex) is None
        assert s.authz.check(_matched(s, "GET", "/v1/invoices/1", alice)) is None  # cached
        ex = _matched(s, "GET", "/v1/invoices/2", alice)
        assert s.authz.check(ex) is NEEDS_IO
        assert status(await s.authz.on_request(ex)) == 403
        ex = _matched(s, "GET", "/v1/invoices/2", alice)
        assert decided(s.authz.check(ex)) == 403  # the denial, from the cache
        assert ex.annotations["bola_denied"] == {"param": "path.invoice_id", "object_id": "2"}
        # A list: 1 is cached and ours, 3 is not cached: nothing is recorded before the lookup.
        ex = _matched(s, "GET", "/v1/batch/invoices?ids=1,3", alice)
        events = len(s.events)
        assert s.authz.check(ex) is NEEDS_IO
        assert "bola_denied" not in ex.annotations
        assert len(s.events) == events
        assert await s.authz.on_request(ex) is None
        assert s.authz.check(_matched(s, "GET", "/v1/batch/invoices?ids=3,1", alice)) is None
        # The first id that is not ours decides, before ids that would need a lookup.
        ex = _matched(s, "GET", "/v1/batch/invoices?ids=2,9", alice)
        assert decided(s.authz.check(ex)) == 403
        assert ex.annotations["bola_denied"]["object_id"] == "2"
        clock.advance(31)  # expired: looked up again
        assert s.authz.check(_matched(s, "GET", "/v1/invoices/1", alice)) is NEEDS_IO
    finally:
        await s.authz.aclose()


async def test_on_request_without_a_cache_looks_each_id_up_once(
    spec: OpenApiSpec, invoices_db: Path
) -> None:
    s = Setup(spec, resolvers=[sql_resolver(invoices_db, cache_ttl=0, negative_ttl=0)])
    alice = principal("alice")
    try:
        ex = _matched(s, "GET", "/v1/batch/invoices?ids=1,3,1", alice)
        assert s.authz.check(ex) is NEEDS_IO
        assert await s.authz.on_request(ex) is None
        ex = _matched(s, "GET", "/v1/batch/invoices?ids=1,3,2", alice)
        assert status(await s.authz.on_request(ex)) == 403
        assert ex.annotations["bola_denied"]["object_id"] == "2"
        assert s.authz.check(_matched(s, "GET", "/v1/invoices/1", alice)) is NEEDS_IO
    finally:
        await s.authz.aclose()
