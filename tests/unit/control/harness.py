"""The admin API in-process for tests: a memory store, a manual clock, a signing key made at
test time, and tokens signed with it (as our authorization server would after an MFA login)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from bastion.authserver.users.config import PasswordHashConfig, UsersConfig
from bastion.authserver.users.service import UserService, open_user_service
from bastion.control.admin import AdminTokenVerifier, build_admin_api
from bastion.control.admin.app import AdminApi
from bastion.control.admin.roles import ADMIN_ROLES
from bastion.control.admin.service import AdminContext
from bastion.control.keys import KeyService
from bastion.core.clock import ManualClock
from bastion.events.bus import Event
from bastion.store.memory import MemoryStore

ISSUER = "https://auth.test"
AUDIENCE = "https://admin.test"
NOW = 1_700_000_000.0


@dataclass
class Harness:
    store: MemoryStore
    clock: ManualClock
    key: ECKey
    api: AdminApi
    ctx: AdminContext
    pushed: list[Event] = field(default_factory=list)

    def token(self, sub: str = "alice", roles: tuple[str, ...] = ("owner",), **claims: Any) -> str:
        """A valid MFA admin token at the clock's time; ``None`` claim values remove a claim."""
        now = int(self.clock.now())
        body: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "exp": now + 300,
            "iat": now,
            "jti": f"jti-{sub}-{now}",
            "client_id": "bastion-cli",
            "roles": list(roles),
            "amr": ["pwd", "otp"],
            "auth_time": now - 60,
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        header = {"alg": "ES256", "typ": "at+jwt", "kid": self.key.kid}
        return jwt.encode(header, body, self.key, algorithms=["ES256"])

    def client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.api.app, client=("198.51.100.7", 4711))
        return httpx.AsyncClient(transport=transport, base_url="http://admin.test")

    def auth(self, token: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"}


#: argon2id at the floor the config allows: users tests hash passwords quickly.
FAST_HASH = PasswordHashConfig(time_cost=2, memory_cost=19456, parallelism=1)


async def with_users(h: Harness) -> UserService:
    """Give the harness a user directory on its store; admin roles need MFA there."""
    config = UsersConfig(password_hash=FAST_HASH, mfa_required_roles=ADMIN_ROLES)
    service = await open_user_service(config, h.store, issuer=ISSUER, clock=h.clock)
    h.ctx.users = service
    return service


def make_harness(store: MemoryStore | None = None) -> Harness:
    store = store or MemoryStore()
    clock = ManualClock(NOW)
    key = ECKey.generate_key("P-256", parameters={"kid": "admin-test-1"})
    keyset = KeySet([ECKey.import_key(key.as_dict(private=False))])
    pushed: list[Event] = []

    async def keys() -> KeySet:
        return keyset

    async def publish(event: Event) -> None:
        pushed.append(event)

    from bastion.control.admin.repo import control_repo

    keys_service = KeyService(store, b"p" * 32, clock=clock, publish=publish)
    ctx = AdminContext(
        store=store,
        repo=control_repo(store),
        clock=clock,
        publish=publish,
        issuer=ISSUER,
        keys=keys_service,
    )
    verifier = AdminTokenVerifier(issuer=ISSUER, audience=AUDIENCE, keys=keys, clock=clock)
    api = build_admin_api(ctx, verifier)
    return Harness(store, clock, key, api, ctx, pushed)
