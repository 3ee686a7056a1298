"""A whole authorization server in memory for the OAuth unit tests.

The signer and the user service are small fakes with the KEYS and USERS contracts' shape (see
``bastion.authserver.oauth.ports``); keys are generated at test time.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import orjson
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from bastion.authserver.config import AuthConfig
from bastion.authserver.http import Request, Response
from bastion.authserver.oauth import rfc7636
from bastion.authserver.oauth.client_auth import new_client_secret, secret_record
from bastion.authserver.oauth.records import OAuthClient
from bastion.authserver.oauth.repo import MemoryOAuthRepo, OAuthRepo
from bastion.authserver.server import AuthServer, build_context
from bastion.authserver.users.model import Authentication, UserInfo
from bastion.core.clock import ManualClock
from bastion.events.bus import EventBus
from bastion.store.base import Store
from bastion.store.memory import MemoryStore

ISSUER = "https://auth.example"
PEPPER = "p" * 40
API = "https://api.example"


class FakeSigner:
    """Signs with the active EC key; ``rotate`` adds and activates a new one."""

    jwks_max_age = 300

    def __init__(self) -> None:
        self.keys: list[ECKey] = []
        self.active = -1
        self.rotate()

    def rotate(self) -> str:
        kid = f"k{len(self.keys)}-{secrets.token_hex(4)}"
        self.keys.append(ECKey.generate_key("P-256", parameters={"kid": kid}))
        self.active = len(self.keys) - 1
        return kid

    async def sign(self, claims: dict[str, Any], *, typ: str) -> str:
        key = self.keys[self.active]
        return jwt.encode({"alg": "ES256", "kid": key.kid, "typ": typ}, claims, key)

    async def jwks(self) -> dict[str, Any]:
        return {"keys": [k.as_dict(private=False) for k in self.keys]}

    async def public_key_set(self) -> KeySet:
        return KeySet.import_key_set(await self.jwks())  # type: ignore[arg-type]

    async def tick(self) -> None:
        return None


@dataclass
class FakeUsers:
    routes: dict[Any, Any] = field(default_factory=dict)
    on_disable: list[Any] = field(default_factory=list)
    signed_in: Authentication | None = None
    users: dict[str, UserInfo] = field(default_factory=dict)

    async def current(self, request: Request) -> Authentication | None:
        return self.signed_in

    def login_url(self, return_to: str) -> str:
        return "/login?" + urlencode({"return_to": return_to})

    async def get_user(self, user_id: str) -> UserInfo | None:
        return self.users.get(user_id)

    def sign_in(self, user_id: str = "u1", *, at: float = 1_700_000_000.0) -> None:
        self.users[user_id] = UserInfo(user_id, "alice", "alice@example.com", "Alice", (), False)
        self.signed_in = Authentication(user_id, "alice", ("pwd", "otp"), "urn:bastion:acr:mfa", at)


def config(**overrides: Any) -> AuthConfig:
    doc: dict[str, Any] = {"issuer": ISSUER, "client_secret_pepper": PEPPER}
    doc.update(overrides)
    return AuthConfig.model_validate(doc)


@dataclass
class Harness:
    server: AuthServer
    signer: FakeSigner
    users: FakeUsers
    clock: ManualClock
    repo: OAuthRepo
    store: Store
    bus: EventBus
    events: list[tuple[str, dict[str, Any]]]

    @property
    def ctx(self) -> Any:
        return self.server.ctx

    async def register(
        self,
        client_id: str = "svc",
        *,
        auth_method: str = "client_secret_basic",
        grant_types: tuple[str, ...] = ("client_credentials",),
        scopes: tuple[str, ...] = ("read", "write"),
        redirect_uris: tuple[str, ...] = (),
        audiences: tuple[str, ...] = (API,),
        jwks: dict[str, Any] | None = None,
        introspect: bool = False,
    ) -> str:
        """Register a client; returns its secret ("" for public and private_key_jwt clients)."""
        now = self.clock.now()
        secret = new_client_secret() if auth_method.startswith("client_secret") else ""
        stored = (secret_record(PEPPER.encode(), secret, now),) if secret else ()
        await self.repo.put_client(
            OAuthClient(
                id=client_id,
                name=client_id,
                auth_method=auth_method,
                secrets=stored,
                jwks=jwks,
                redirect_uris=redirect_uris,
                grant_types=grant_types,
                scopes=scopes,
                audiences=audiences,
                created_at=now,
                updated_at=now,
                introspect=introspect,
            )
        )
        return secret

    async def post(
        self,
        path: str,
        form: dict[str, str] | list[tuple[str, str]],
        *,
        basic: tuple[str, str] | None = None,
        ip: str = "192.0.2.1",
        headers: dict[str, str] | None = None,
    ) -> Response:
        h = {"content-type": "application/x-www-form-urlencoded"}
        if basic is not None:
            raw = f"{quote(basic[0], safe='')}:{quote(basic[1], safe='')}".encode()
            h["authorization"] = "Basic " + base64.b64encode(raw).decode()
        h.update(headers or {})
        return await self.server.handle(
            Request("POST", path, h, body=urlencode(form).encode(), client_ip=ip)
        )

    async def get(
        self, path: str, query: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> Response:
        qs = urlencode(query or {}).encode()
        return await self.server.handle(
            Request("GET", path, headers or {}, query_string=qs, client_ip="192.0.2.1")
        )

    async def token(self, client_id: str, secret: str, **form: str) -> Response:
        return await self.post(
            "/token", {"grant_type": "client_credentials", **form}, basic=(client_id, secret)
        )

    async def claims(self, token: str) -> dict[str, Any]:
        decoded = jwt.decode(token, await self.signer.public_key_set())
        return dict(decoded.claims)

    async def code_flow(
        self,
        client_id: str,
        redirect_uri: str,
        *,
        scope: str = "openid profile",
        nonce: str | None = "n-1",
    ) -> tuple[str, str]:
        """Run /authorize for the signed-in user; returns (code, verifier)."""
        verifier = secrets.token_urlsafe(48)
        query = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": "s-1",
            "code_challenge": rfc7636.s256_challenge(verifier),
            "code_challenge_method": "S256",
        }
        if nonce is not None:
            query["nonce"] = nonce
        reply = await self.get("/authorize", query)
        assert reply.status == 303, reply.body
        params = location_params(reply)
        return params["code"], verifier

    async def redeem_code(
        self, client_id: str, secret: str, redirect_uri: str, code: str, verifier: str
    ) -> Response:
        """POST /token with the authorization code (client_secret_basic)."""
        return await self.post(
            "/token",
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            },
            basic=(client_id, secret),
        )


def body(response: Response) -> Any:
    return orjson.loads(response.body)


def location_params(response: Response) -> dict[str, str]:
    location = response.header("location")
    assert location is not None
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def make_harness(
    *, store: Store | None = None, repo: OAuthRepo | None = None, **cfg: Any
) -> Harness:
    clock = ManualClock()
    signer = FakeSigner()
    users = FakeUsers()
    bus = EventBus()
    events: list[tuple[str, dict[str, Any]]] = []
    bus.subscribe("security", lambda e: events.append(("security", e)))
    bus.subscribe("control", lambda e: events.append(("control", e)))
    store = store or MemoryStore()
    await store.open()
    repo = repo or MemoryOAuthRepo()
    ctx = build_context(config(**cfg), store, repo, signer, users, clock=clock, bus=bus)
    server = AuthServer(ctx)
    return Harness(server, signer, users, clock, repo, store, bus, events)
