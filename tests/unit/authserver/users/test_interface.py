"""The contract the OAuth server codes against: factory, types, login_url, current."""

from __future__ import annotations

from bastion.authserver.http import Request
from bastion.authserver.users import (
    Authentication,
    UserInfo,
    UsersConfig,
    open_user_service,
)
from bastion.store.memory import MemoryStore


async def test_factory_gives_a_service_with_the_contract() -> None:
    service = await open_user_service(UsersConfig(), MemoryStore(), issuer="https://as.example")
    assert isinstance(service.on_disable, list)
    assert await service.get_user("nobody") is None
    assert await service.current(Request("GET", "/authorize")) is None
    assert service.login_url("/authorize?client_id=a&state=b") == (
        "/login?return_to=%2Fauthorize%3Fclient_id%3Da%26state%3Db"
    )
    assert service.login_url("https://evil.example/authorize?x") == "/login"
    assert Authentication.__dataclass_fields__.keys() == {
        "user_id",
        "username",
        "amr",
        "acr",
        "auth_time",
    }
    assert UserInfo.__dataclass_fields__.keys() == {
        "id",
        "username",
        "email",
        "name",
        "roles",
        "disabled",
    }
