"""What the OAuth endpoints need from the signing keys and the users, as protocols.

The real implementations are :func:`bastion.authserver.keys.open_key_manager` and
:func:`bastion.authserver.users.open_user_service`; tests may pass anything with this shape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from joserfc.jwk import KeySet

from bastion.authserver.http import Request, Response
from bastion.authserver.users.model import Authentication, UserInfo

Handler = Callable[[Request], Awaitable[Response]]


class Signer(Protocol):
    """Signs our tokens with the active key and publishes the JWKS (the KEYS contract)."""

    jwks_max_age: int

    async def sign(self, claims: dict[str, Any], *, typ: str) -> str: ...

    async def jwks(self) -> dict[str, Any]: ...

    async def public_key_set(self) -> KeySet: ...

    async def tick(self) -> None: ...


class Users(Protocol):
    """Login pages, the signed-in user, user lookups (the USERS contract)."""

    routes: Mapping[tuple[str, str], Handler]
    on_disable: list[Callable[[str], Awaitable[None]]]

    async def current(self, request: Request) -> Authentication | None: ...

    def login_url(self, return_to: str) -> str: ...

    async def get_user(self, user_id: str) -> UserInfo | None: ...
