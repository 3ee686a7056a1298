"""A tiny cookie-keeping client that calls the users service's handlers directly."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from bastion.authserver.http import Request, Response
from bastion.authserver.users import UsersConfig
from bastion.authserver.users.config import PasswordHashConfig
from bastion.authserver.users.repo import MemoryUserRepo, UserRepo
from bastion.authserver.users.service import UserService
from bastion.core.clock import ManualClock

ISSUER = "https://as.example"
#: The floor of the config (OWASP minimum), so tests stay fast.
FAST_HASH = PasswordHashConfig(time_cost=2, memory_cost=19456, parallelism=1)
PASSWORD = "correct horse battery"

_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


def make_service(
    repo: UserRepo | None = None, clock: ManualClock | None = None, **overrides: object
) -> UserService:
    config = UsersConfig.model_validate({"password_hash": FAST_HASH, **overrides})
    return UserService(
        config, repo or MemoryUserRepo(), issuer=ISSUER, clock=clock or ManualClock()
    )


def csrf_of(resp: Response) -> str:
    m = _CSRF.search(resp.body.decode())
    assert m is not None, resp.body
    return m.group(1)


class Browser:
    """Keeps cookies between calls, like a browser on one origin."""

    def __init__(
        self,
        service: UserService,
        ip: str = "192.0.2.1",
        handle: Callable[[Request], Awaitable[Response]] | None = None,
    ) -> None:
        self.service = service
        self.ip = ip
        self.jar: dict[str, str] = {}
        #: A whole server's ``handle`` (None: the service's own routes only).
        self.handle = handle

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None, **kw: object
    ) -> Request:
        path, _, query = path.partition("?")
        headers = {"origin": self.service.issuer} if method == "POST" else {}
        headers.update(kw.pop("headers", {}) or {})  # type: ignore[call-overload]
        if self.jar:
            headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        body = b""
        if form is not None:
            body = urlencode(form).encode()
            headers["content-type"] = "application/x-www-form-urlencoded"
        return Request(
            method,
            path,
            headers=headers,
            query_string=query.encode(),
            body=kw.pop("body", body),  # type: ignore[arg-type]
            client_ip=self.ip,
        )

    async def send(self, req: Request) -> Response:
        if self.handle is not None:
            resp = await self.handle(req)
        else:
            resp = await self.service.routes[(req.method, req.path)](req)
        for name, value in resp.headers:
            if name == "set-cookie":
                cookie = value.split(";", 1)[0]
                key, _, val = cookie.partition("=")
                if "Max-Age=0" in value:
                    self.jar.pop(key, None)
                else:
                    self.jar[key] = val
        return resp

    async def get(self, path: str) -> Response:
        return await self.send(self.request("GET", path))

    async def post(self, path: str, form: dict[str, str], **kw: object) -> Response:
        return await self.send(self.request("POST", path, form, **kw))

    async def login(self, username: str, password: str = PASSWORD, return_to: str = "") -> Response:
        page = await self.get(
            "/login" + (f"?{urlencode({'return_to': return_to})}" if return_to else "")
        )
        form = {"csrf_token": csrf_of(page), "username": username, "password": password}
        if return_to:
            form["return_to"] = return_to
        return await self.post("/login", form)

    @property
    def session_id(self) -> str | None:
        return self.jar.get(self.service.cookies.session)

    async def current(self):  # type: ignore[no-untyped-def]
        return await self.service.current(self.request("GET", "/authorize"))
