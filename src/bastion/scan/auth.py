"""Identities from ``scan-auth.yaml``: who the scanner is, and how it logs in.

::

    version: 1
    login:                          # shared login endpoint (optional)
      path: /api/login              # on the target (or an absolute URL)
      method: POST
      format: json                  # json | form
      username_field: username
      password_field: password
      token_path: access_token      # dotted path to the token in the JSON answer
      expires_in_path: expires_in   # optional; else the JWT's exp, else no expiry
      header: Authorization         # where the token goes
      scheme: Bearer                # prefix ('' for none)
    identities:
      user_a:                       # required
        id: "2"                     # the user's id in the API (optional; BOLA uses it)
        login: {username: bob, password: "${BOB_PASSWORD}"}
      user_b:                       # required
        headers: {x-bastion-subject: "3"}            # static headers
      admin:                        # optional
        api_key: {name: X-API-Key, in: header, value: "${ADMIN_KEY}"}   # in: header|query|cookie
      service:                      # any other name: available to checks by name
        client_credentials:
          token_url: https://auth.example/oauth/token   # its origin is allowed for this only
          client_id: scanner
          client_secret: "${CLIENT_SECRET}"
          scope: read write
          auth_method: basic        # basic | post

``${NAME}`` is replaced from the environment (so secrets stay out of the file); a missing
variable is an error. A per-identity ``login`` may override any key of the shared one.

Tokens are fetched lazily and again before they expire (30 s margin) or when the target
answers 401 to a request that carried them (at most once per identity per 5 s, so a check
that expects 401s does not burn the budget on logins).
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import yaml
from joserfc import jws
from joserfc.errors import JoseError

from bastion.scan.errors import LoginFailed, RequestFailed, ScanUsageError
from bastion.scan.redact import Redactor

if TYPE_CHECKING:
    from bastion.scan.client import ScanClient

__all__ = ["AuthConfig", "Identity", "LoginSpec", "load_auth", "parse_auth"]

USER_A = "user_a"
USER_B = "user_b"
ADMIN = "admin"
ANONYMOUS = "anonymous"
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_EXPIRY_MARGIN = 30.0
_RELOGIN_COOLDOWN = 5.0


@dataclass(frozen=True, slots=True)
class LoginSpec:
    """A username/password login endpoint and where its answer keeps the token."""

    path: str = "/login"
    method: str = "POST"
    format: str = "json"
    username_field: str = "username"
    password_field: str = "password"  # noqa: S105 - a field name
    token_path: str = "access_token"  # noqa: S105 - a JSON path
    expires_in_path: str = "expires_in"
    header: str = "Authorization"
    scheme: str = "Bearer"
    username: str = ""
    password: str = ""


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    token_url: str
    client_id: str
    client_secret: str
    scope: str = ""
    auth_method: str = "basic"


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    value: str
    location: str = "header"


@dataclass(frozen=True, slots=True)
class IdentitySpec:
    """One identity as configured (exactly one of login, client_credentials, api_key,
    headers)."""

    name: str
    user_id: str | None = None
    login: LoginSpec | None = None
    client_credentials: ClientCredentials | None = None
    api_key: ApiKey | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """The parsed ``scan-auth.yaml``."""

    identities: dict[str, IdentitySpec]
    login: LoginSpec | None = None  # the shared login endpoint, if any


def _expand(value: Any, where: str) -> str:
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        raise ScanUsageError(f"scan-auth: {where}: expected a string")
    text = str(value)

    def sub(m: re.Match[str]) -> str:
        found = os.environ.get(m.group(1))
        if found is None:
            raise ScanUsageError(
                f"scan-auth: {where}: environment variable {m.group(1)} is not set"
            )
        return found

    return _ENV.sub(sub, text)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScanUsageError(f"scan-auth: {where}: expected a mapping")
    return value


def _login(raw: dict[str, Any], base: LoginSpec | None, where: str) -> LoginSpec:
    known = set(LoginSpec.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise ScanUsageError(f"scan-auth: {where}: unknown key {sorted(unknown)[0]!r}")
    values = {k: _expand(v, f"{where}.{k}") for k, v in raw.items()}
    spec = LoginSpec(**{**(_asdict(base) if base else {}), **values})
    if spec.format not in ("json", "form"):
        raise ScanUsageError(f"scan-auth: {where}.format: json or form, not {spec.format!r}")
    return spec


def _asdict(spec: LoginSpec) -> dict[str, str]:
    return {k: getattr(spec, k) for k in LoginSpec.__dataclass_fields__}


def parse_auth(doc: Any) -> AuthConfig:
    """Validate a parsed scan-auth document; ScanUsageError names the first problem."""
    root = _mapping(doc, "the file")
    unknown = set(root) - {"version", "login", "identities"}
    if unknown:
        raise ScanUsageError(f"scan-auth: unknown top-level key {sorted(unknown)[0]!r}")
    shared = _login(_mapping(root["login"], "login"), None, "login") if "login" in root else None
    ids = _mapping(root.get("identities"), "identities")
    identities: dict[str, IdentitySpec] = {}
    for name, raw in ids.items():
        where = f"identities.{name}"
        body = _mapping(raw, where)
        kinds = [k for k in ("login", "client_credentials", "api_key", "headers") if k in body]
        if len(kinds) != 1:
            raise ScanUsageError(
                f"scan-auth: {where}: needs exactly one of login, client_credentials, api_key, "
                "headers"
            )
        extra = set(body) - {"id", *kinds}
        if extra:
            raise ScanUsageError(f"scan-auth: {where}: unknown key {sorted(extra)[0]!r}")
        user_id = _expand(body["id"], f"{where}.id") if "id" in body else None
        kind = kinds[0]
        spec = IdentitySpec(name=str(name), user_id=user_id)
        if kind == "login":
            login = _login(_mapping(body["login"], f"{where}.login"), shared, f"{where}.login")
            if not login.username or not login.password:
                raise ScanUsageError(f"scan-auth: {where}.login: username and password needed")
            spec = IdentitySpec(name=str(name), user_id=user_id, login=login)
        elif kind == "client_credentials":
            cc = _mapping(body[kind], f"{where}.{kind}")
            try:
                creds = ClientCredentials(
                    **{k: _expand(v, f"{where}.{kind}.{k}") for k, v in cc.items()}
                )
            except TypeError:
                raise ScanUsageError(
                    f"scan-auth: {where}.{kind}: token_url, client_id, client_secret "
                    "(scope, auth_method) expected"
                ) from None
            if creds.auth_method not in ("basic", "post"):
                raise ScanUsageError(f"scan-auth: {where}.{kind}.auth_method: basic or post")
            spec = IdentitySpec(name=str(name), user_id=user_id, client_credentials=creds)
        elif kind == "api_key":
            ak = _mapping(body[kind], f"{where}.{kind}")
            key = ApiKey(
                name=_expand(ak.get("name"), f"{where}.{kind}.name"),
                value=_expand(ak.get("value"), f"{where}.{kind}.value"),
                location=_expand(ak.get("in", "header"), f"{where}.{kind}.in"),
            )
            if key.location not in ("header", "query", "cookie"):
                raise ScanUsageError(f"scan-auth: {where}.{kind}.in: header, query or cookie")
            spec = IdentitySpec(name=str(name), user_id=user_id, api_key=key)
        else:
            hs = _mapping(body[kind], f"{where}.{kind}")
            spec = IdentitySpec(
                name=str(name),
                user_id=user_id,
                headers=tuple((str(k), _expand(v, f"{where}.{kind}.{k}")) for k, v in hs.items()),
            )
        identities[str(name)] = spec
    for required in (USER_A, USER_B):
        if required not in identities:
            raise ScanUsageError(f"scan-auth: identities.{required} is required")
    if ANONYMOUS in identities:
        raise ScanUsageError("scan-auth: 'anonymous' is reserved (no credentials)")
    return AuthConfig(identities=identities, login=shared)


def load_auth(path: Path) -> AuthConfig:
    """Read and validate scan-auth.yaml (ScanUsageError when it cannot be used)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScanUsageError(f"--auth: {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ScanUsageError(f"--auth: {path}: invalid YAML ({type(exc).__name__})") from None
    return parse_auth(doc)


def _dig(doc: Any, dotted: str) -> Any:
    for part in dotted.split(".") if dotted else ():
        if isinstance(doc, dict):
            doc = doc.get(part)
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            return None
    return doc


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWS-compact token, read without verifying (we only need to know
    when to log in again), or None."""
    if token.count(".") != 2:
        return None
    try:
        payload = jws.extract_compact(token.encode()).payload
        claims = orjson.loads(payload)
    except (JoseError, ValueError, TypeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


@dataclass
class Identity:
    """A configured identity at run time: its credentials, fetched when needed."""

    spec: IdentitySpec
    client: ScanClient
    redactor: Redactor
    token: str | None = None
    expires_at: float | None = None
    fetched_at: float = 0.0
    logins: int = 0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def user_id(self) -> str | None:
        return self.spec.user_id

    @property
    def username(self) -> str | None:
        return self.spec.login.username if self.spec.login else None

    @property
    def password(self) -> str | None:
        return self.spec.login.password if self.spec.login else None

    @property
    def uses_token(self) -> bool:
        return self.spec.login is not None or self.spec.client_credentials is not None

    def _expired(self) -> bool:
        return self.expires_at is not None and time.time() > self.expires_at - _EXPIRY_MARGIN

    async def credentials(self) -> tuple[list[tuple[str, str]], dict[str, str]]:
        """``(headers, query params)`` to send as this identity, logging in when needed."""
        spec = self.spec
        if spec.api_key is not None:
            key = spec.api_key
            if key.location == "query":
                return [], {key.name: key.value}
            if key.location == "cookie":
                return [("cookie", f"{key.name}={key.value}")], {}
            return [(key.name, key.value)], {}
        if not self.uses_token:
            return list(spec.headers), {}
        if self.token is None or self._expired():
            await self.refresh()
        if self.token is None:
            raise LoginFailed(f"{self.name}: no token after login")
        if spec.login is not None:
            value = f"{spec.login.scheme} {self.token}" if spec.login.scheme else self.token
            return [(spec.login.header, value)], {}
        return [("authorization", f"Bearer {self.token}")], {}

    def may_relogin(self) -> bool:
        """Whether a 401 may trigger a new login now (token-based, outside the cooldown)."""
        return self.uses_token and time.monotonic() - self.fetched_at > _RELOGIN_COOLDOWN

    async def refresh(self) -> None:
        """Log in (again); LoginFailed says why without showing a secret. Concurrent callers
        share one login: whoever waited for the lock reuses the token just fetched."""
        seen = self.fetched_at
        async with self._lock:
            if self.fetched_at != seen and self.token is not None and not self._expired():
                return
            if self.spec.login is not None:
                token, expires_in = await self._password_login(self.spec.login)
            elif self.spec.client_credentials is not None:
                token, expires_in = await self._client_credentials(self.spec.client_credentials)
            else:
                return
            self.token = token
            self.redactor.add(token)
            self.fetched_at = time.monotonic()
            self.logins += 1
            if expires_in is not None:
                self.expires_at = time.time() + expires_in
            else:
                self.expires_at = jwt_expiry(token)

    async def _password_login(self, login: LoginSpec) -> tuple[str, float | None]:
        fields = {login.username_field: login.username, login.password_field: login.password}
        try:
            if login.format == "json":
                reply = await self.client.request(
                    login.method, login.path, json=fields, identity=self.name
                )
            else:
                reply = await self.client.request(
                    login.method, login.path, data=fields, identity=self.name
                )
        except RequestFailed as exc:
            raise LoginFailed(f"{self.name}: login at {login.path}: {exc}") from None
        return self._token_from(
            reply.status, reply.json(), login.token_path, login.expires_in_path, login.path
        )

    async def _client_credentials(self, cc: ClientCredentials) -> tuple[str, float | None]:
        form = {"grant_type": "client_credentials"}
        if cc.scope:
            form["scope"] = cc.scope
        headers: dict[str, str] = {}
        if cc.auth_method == "basic":
            raw = f"{cc.client_id}:{cc.client_secret}".encode()
            headers["authorization"] = "Basic " + base64.b64encode(raw).decode()
        else:
            form["client_id"] = cc.client_id
            form["client_secret"] = cc.client_secret
        if "://" in cc.token_url:
            self.client.allow_origin(cc.token_url)
        try:
            reply = await self.client.request(
                "POST", cc.token_url, data=form, headers=headers, identity=self.name
            )
        except RequestFailed as exc:
            raise LoginFailed(f"{self.name}: token request: {exc}") from None
        return self._token_from(
            reply.status, reply.json(), "access_token", "expires_in", cc.token_url
        )

    def _token_from(
        self, status: int, doc: Any, token_path: str, exp_path: str, where: str
    ) -> tuple[str, float | None]:
        if not 200 <= status < 300:
            raise LoginFailed(f"{self.name}: {where} answered {status}")
        token = _dig(doc, token_path)
        if not isinstance(token, str) or not token:
            raise LoginFailed(f"{self.name}: {where}: no token at {token_path!r} in the answer")
        exp = _dig(doc, exp_path)
        expires_in = (
            float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
        )
        return token, expires_in


def build_identities(
    config: AuthConfig, client: ScanClient, redactor: Redactor
) -> dict[str, Identity]:
    """Run-time identities for ``config``; every configured secret is registered with
    ``redactor`` at once."""
    out: dict[str, Identity] = {}
    for name, spec in config.identities.items():
        if spec.login is not None:
            redactor.add(spec.login.password, keep_prefix=False)
        if spec.client_credentials is not None:
            redactor.add(spec.client_credentials.client_secret, keep_prefix=False)
        if spec.api_key is not None:
            redactor.add(spec.api_key.value)
        for _k, v in spec.headers:
            if len(v) >= 12:  # a token-like header value; short ones (a user id) stay readable
                redactor.add(v)
        out[name] = Identity(spec, client, redactor)
    return out
