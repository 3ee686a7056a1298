"""A small SaaS API (users and invoices) that Bastion protects in the demo and the tests, and that
``bastion scan`` is measured against.

Callers are identified by the headers the gateway sends upstream: ``x-bastion-subject`` is a
user's id (``2`` is Bob), or, with ``x-bastion-auth: api_key``, the id of a service client (an
integration holding an API key) whose ``x-bastion-scopes`` say what it may do. The API trusts
these headers: only the gateway may reach it (it listens on 127.0.0.1). Without them, a caller
may log in (``POST /api/login``) and send the API's own access token (an HS256 JWT).

Two modes. **Secure** (the default) checks ownership and roles itself, returns user records
without secrets, signs its tokens with a random key and validates every claim, answers every
failed login alike and locks a username after five failures, limits the rate per caller, the
page size and the body size, allows CORS for one origin only, validates every parameter and
answers unexpected errors with a generic 500. **Vulnerable** (``--vulnerable``,
``create_app(vulnerable=True)``) plants the flaws listed with how to trigger them in
``examples/ground_truth.yaml``, one or more per check of ``bastion scan``; each is marked
``FLAW <id>`` below. In both modes the test helpers show stack traces and the API sends
``server: uvicorn`` and ``x-powered-by: saas-api``, which the gateway hides.

The vulnerable mode is safe to run: the OS command injection is emulated (a ``sleep`` after a
shell separator is honoured, nothing is executed), the SQL injection runs on a throw-away
in-memory SQLite copy, the ReDoS input is at most 25 characters and the SSRF fetch has a 2 s
timeout and reads at most 64 KiB.

Test helpers: ``/api/echo`` (what the gateway forwarded), ``/api/boom`` (an upstream 500 with a
traceback), ``/api/slow?ms=N`` and ``/api/big?kb=N`` (a large streamed body); and
``/internal/invoices/{id}/owner``, the endpoint the gateway's ownership resolver asks.

Run it: ``python examples/saas_api.py --port 9001 [--vulnerable]`` (127.0.0.1 only). In tests,
build the ASGI app with :func:`create_app` and a fresh :class:`SaasStore`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import json
import platform
import re
import secrets
import sqlite3
import time
import traceback
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Any, NoReturn
from urllib.parse import urlsplit

import httpx
from argon2 import PasswordHasher
from argon2.exceptions import Argon2Error
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey
from joserfc.jwt import JWTClaimsRegistry
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1_048_576
MAX_SLOW_MS = 60_000
MAX_BIG_KB = 1_048_576
MAX_PAGE = 100
CREATED_AT = "2024-01-15T09:30:00Z"

# Luhn-valid card numbers published by card networks for testing; never real accounts.
TEST_CARDS = (
    "4111111111111111",
    "5555555555554444",
    "378282246310005",
    "4012888888881881",
    "6011111111111117",
    "5105105105105100",
)
FIRST_NAMES = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy")
ECHO_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
#: Fields of a user record that the API returns in secure mode.
PUBLIC_USER_FIELDS = ("id", "name", "email", "role", "is_admin", "phone", "created_at")
#: What vulnerable mode returns on top of them (FLAW user-sensitive-exposure).
SECRET_USER_FIELDS = ("ssn", "card_number", "password_hash")

#: The API's own access tokens (``POST /api/login``).
TOKEN_ISSUER = "saas-api"
TOKEN_AUDIENCE = "saas-api"
TOKEN_TTL = 900
#: FLAW jwt-weak-hmac-key: vulnerable mode signs tokens with a word every wordlist has.
WEAK_TOKEN_KEY = b"secret"
#: FLAW default-admin-credentials: vulnerable mode lets ``admin``/``admin`` in as Alice.
DEFAULT_ADMIN_LOGIN = ("admin", "admin")
#: Secure mode: a username is locked for LOGIN_LOCK_SECONDS after this many failures in a row.
LOGIN_MAX_FAILURES = 5
LOGIN_LOCK_SECONDS = 900
#: Secure mode: requests per caller, method and path in one second (then 429).
RATE_LIMIT = 10
#: Secure mode: where webhooks may point.
WEBHOOK_HOSTS = frozenset({"hooks.example.test"})
#: Longest invoice search (``q``) accepted, in both modes.
MAX_QUERY_CHARS = 25
INVOICE_STATUSES = ("open", "paid", "void")
FILENAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: FLAW redos-invoice-search: nested quantifiers, exponential on "aaaa…!".
BACKTRACKING_WORDS = re.compile(r"(\w+\s?)*")
#: What the emulated shell of FLAW command-injection-export honours: a separator, then sleep.
SHELL_SLEEP = re.compile(r"(?:;|\|\|?|&&?|\$\(|`)\s*sleep\s+(\d{1,2})")

# Example-grade Argon2id cost: cheap enough that tests seed ten users in milliseconds.
_HASHER = PasswordHasher(time_cost=1, memory_cost=4096, parallelism=1)
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


def seed_password(user_id: int) -> str:
    """The password of a seeded user (``demo-password-2`` is Bob's): documented test data."""
    return f"demo-password-{user_id}"


@dataclass
class User:
    """A user record as the upstream stores it, sensitive fields included."""

    id: int
    name: str
    email: str
    role: str
    phone: str
    ssn: str
    card_number: str
    password_hash: str
    created_at: str = CREATED_AT

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass
class Invoice:
    """An invoice; ``user_id`` is its owner."""

    id: int
    user_id: int
    amount_cents: int
    currency: str
    status: str
    description: str
    created_at: str = CREATED_AT


class BadInput(Exception):
    """A request the API refuses: ``status`` and a short, public message."""

    def __init__(
        self, status: int, error: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = headers


class ServerFault(Exception):
    """An unexpected error in vulnerable mode, answered with its traceback (a 500)."""

    def __init__(self, trace: str) -> None:
        super().__init__("server fault")
        self.trace = trace


def fake_password_hash(seed: str) -> str:
    """A bcrypt-shaped string derived from ``seed``: looks like a hash, is not one of anything."""
    alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    digest = hashlib.sha512(seed.encode()).digest()
    return "$2b$12$" + "".join(alphabet[b % 64] for b in digest[:53])


class SaasStore:
    """In-memory users and invoices, seeded deterministically (same ids and values every run;
    user ``i`` logs in with its email and :func:`seed_password`). Ids are never reused."""

    def __init__(self, users: int = 10, invoices_per_user: int = 3) -> None:
        self.users: dict[int, User] = {}
        self.invoices: dict[int, Invoice] = {}
        #: Argon2id hashes of the login passwords, by user id (the ``password_hash`` field is a
        #: decoy for data-exposure detectors, not a credential).
        self.credentials: dict[int, str] = {}
        self._user_ids = 0
        self._invoice_ids = 0
        for i in range(1, users + 1):
            name = FIRST_NAMES[(i - 1) % len(FIRST_NAMES)]
            self.add_user(name if i <= len(FIRST_NAMES) else f"{name} {i}", f"user{i}@example.test")
            self.set_password(i, seed_password(i))
        for user_id in range(1, users + 1):
            for k in range(invoices_per_user):
                self.add_invoice(user_id, 1000 * user_id + 250 * k + 99, "EUR", f"Plan {k + 1}")

    def add_user(self, name: str, email: str, role: str | None = None) -> User:
        """Create a user with seeded sensitive fields; the first user is the admin."""
        self._user_ids += 1
        i = self._user_ids
        user = User(
            id=i,
            name=name,
            email=email,
            role=role or ("admin" if i == 1 else "user"),
            phone=f"+1-555-01{i % 100:02d}",
            ssn=f"{100 + 7 * i % 565:03d}-{10 + i % 90:02d}-{1000 + 37 * i % 9000:04d}",
            card_number=TEST_CARDS[(i - 1) % len(TEST_CARDS)],
            password_hash=fake_password_hash(f"user-{i}"),
        )
        self.users[i] = user
        return user

    def set_password(self, user_id: int, password: str) -> None:
        self.credentials[user_id] = _HASHER.hash(password)

    def by_email(self, email: str) -> User | None:
        wanted = email.strip().casefold()
        return next((u for u in self.users.values() if u.email.casefold() == wanted), None)

    def password_ok(self, user: User | None, password: str) -> bool:
        """Whether ``password`` is ``user``'s; the same Argon2 work when there is no user, so
        the time of an answer does not tell whether the username exists."""
        digest = self.credentials.get(user.id) if user is not None else None
        try:
            return _HASHER.verify(digest or _DUMMY_HASH, password) and digest is not None
        except Argon2Error:
            return False

    def add_invoice(self, user_id: int, amount_cents: int, currency: str, desc: str) -> Invoice:
        """Create an open invoice owned by ``user_id``."""
        self._invoice_ids += 1
        invoice = Invoice(self._invoice_ids, user_id, amount_cents, currency, "open", desc)
        self.invoices[invoice.id] = invoice
        return invoice

    def delete_user(self, user_id: int) -> None:
        """Remove a user and the invoices they own."""
        self.users.pop(user_id, None)
        self.credentials.pop(user_id, None)
        for invoice_id in [i.id for i in self.invoices.values() if i.user_id == user_id]:
            del self.invoices[invoice_id]


class Tokens:
    """The API's access tokens. Secure: HS256 under a random 256-bit key, ``iss``, ``aud``,
    ``exp`` and ``sub`` required and checked. Vulnerable: the key is ``secret``, ``alg: none`` is
    accepted and no claim but ``sub`` is looked at."""

    def __init__(self, *, vulnerable: bool) -> None:
        self.vulnerable = vulnerable
        with warnings.catch_warnings():  # joserfc warns about short keys: that is the flaw
            warnings.simplefilter("ignore")
            self.key = OctKey.import_key(WEAK_TOKEN_KEY if vulnerable else secrets.token_bytes(32))
        self.claims = JWTClaimsRegistry(
            iss={"essential": True, "value": TOKEN_ISSUER},
            aud={"essential": True, "value": TOKEN_AUDIENCE},
            exp={"essential": True},
            sub={"essential": True},
        )

    def issue(self, user: User) -> str:
        now = int(time.time())
        claims = {
            "iss": TOKEN_ISSUER,
            "aud": TOKEN_AUDIENCE,
            "sub": str(user.id),
            "iat": now,
            "exp": now + TOKEN_TTL,
            "jti": secrets.token_hex(8),
        }
        return jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, self.key)

    def subject(self, token: str) -> str | None:
        """The ``sub`` of a token this API accepts, else None."""
        try:
            if self.vulnerable:
                return self._subject_carelessly(token)
            decoded = jwt.decode(token, self.key, algorithms=["HS256"])
            self.claims.validate(decoded.claims)
        except (JoseError, ValueError, TypeError, KeyError):
            return None
        sub = decoded.claims.get("sub")
        return sub if isinstance(sub, str) else None

    def _subject_carelessly(self, token: str) -> str | None:
        algorithms = ["HS256"]
        if jws.extract_compact(token.encode()).protected.get("alg") == "none":
            algorithms = ["none"]  # FLAW jwt-alg-none: an unsigned token is taken at its word
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            decoded = jwt.decode(token, self.key, algorithms=algorithms)
        # FLAW jwt-claims-not-validated: exp, iss and aud are never checked.
        sub = decoded.claims.get("sub")
        return str(sub) if isinstance(sub, str | int) and not isinstance(sub, bool) else None


class LoginGuard:
    """Secure mode's lockout: failures counted per username (whether it exists or not, so the
    lockout does not reveal accounts); LOGIN_MAX_FAILURES in a row lock it for
    LOGIN_LOCK_SECONDS. A success resets the count."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.failures: dict[str, tuple[int, float]] = {}

    def locked_for(self, username: str) -> int:
        count, since = self.failures.get(username.casefold(), (0, 0.0))
        left = since + LOGIN_LOCK_SECONDS - self.clock()
        if count >= LOGIN_MAX_FAILURES and left > 0:
            return int(left) + 1
        if left <= 0:
            self.failures.pop(username.casefold(), None)
        return 0

    def failed(self, username: str) -> None:
        count, since = self.failures.get(username.casefold(), (0, self.clock()))
        self.failures[username.casefold()] = (count + 1, since)

    def succeeded(self, username: str) -> None:
        self.failures.pop(username.casefold(), None)


class RateLimiter:
    """Secure mode: at most RATE_LIMIT requests per caller, method and path in any second."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.seen: dict[tuple[str, str, str], collections.deque[float]] = {}

    def allow(self, key: tuple[str, str, str]) -> bool:
        now = self.clock()
        window = self.seen.setdefault(key, collections.deque())
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= RATE_LIMIT:
            return False
        window.append(now)
        return True


@dataclass(frozen=True)
class Caller:
    """Who is calling: a user, or a service client (``user`` None) with its scopes."""

    user: User | None
    client: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return self.user is not None and self.user.is_admin


def _error(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status)


def _fault(request: Request) -> NoReturn:
    """An unexpected error (call inside ``except``): vulnerable mode shows the traceback."""
    if _vulnerable(request):  # FLAW stack-trace-disclosure
        raise ServerFault(traceback.format_exc())
    raise BadInput(500, "internal", "internal error")


def _throttle(request: Request) -> None:
    """Secure mode's rate limit (FLAW no-rate-limit: vulnerable mode has none)."""
    if _vulnerable(request):
        return
    headers = request.headers
    who = (
        headers.get("x-bastion-subject")
        or headers.get("authorization")
        or (request.client.host if request.client else "")
    )
    if not request.app.state.limiter.allow((who, request.method, request.url.path)):
        raise BadInput(429, "rate_limited", "too many requests", {"Retry-After": "1"})


async def _json_object(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES and not _vulnerable(request):  # FLAW no-body-size-limit
        raise BadInput(413, "too_large", "request body too large")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        if _vulnerable(request):
            _fault(request)  # the careless parser's error goes out with its traceback
        raise BadInput(400, "invalid_json", "the request body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise BadInput(400, "invalid_json", "the request body must be a JSON object")
    return doc


def _field(doc: dict[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    value = doc.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BadInput(422, "invalid_field", f"{name} must be a {kind.__name__}")
    return value


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadInput(400, "invalid_parameter", f"{name} must be an integer in [{low}, {high}]")
    return int(raw)


def _store(request: Request) -> SaasStore:
    store: SaasStore = request.app.state.store
    return store


def _vulnerable(request: Request) -> bool:
    return bool(request.app.state.vulnerable)


def _caller(request: Request) -> Caller:
    """The caller named by the gateway's identity headers, else by the API's own bearer token;
    401 when there is none we know."""
    subject = request.headers.get("x-bastion-subject", "")
    scopes = frozenset(request.headers.get("x-bastion-scopes", "").split())
    if subject and request.headers.get("x-bastion-auth") == "api_key":
        return Caller(None, subject, scopes)
    if not subject:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            tokens: Tokens = request.app.state.tokens
            subject = tokens.subject(token.strip()) or ""
    user = _store(request).users.get(int(subject)) if subject.isdigit() else None
    if user is None:
        raise BadInput(401, "unauthenticated", "no known caller")
    return Caller(user, subject, scopes)


def _user_caller(request: Request) -> Caller:
    """A user (service clients may not manage users)."""
    caller = _caller(request)
    if caller.user is None:
        raise BadInput(403, "forbidden", "service clients cannot manage users")
    return caller


def _require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise BadInput(403, "forbidden", "this operation is for administrators")


def _require_scope(caller: Caller, scope: str) -> None:
    if caller.user is None and scope not in caller.scopes:
        raise BadInput(403, "forbidden", f"the {scope} scope is needed")


def _user_json(request: Request, user: User) -> dict[str, Any]:
    doc = {name: getattr(user, name) for name in PUBLIC_USER_FIELDS}
    if _vulnerable(request):  # FLAW user-sensitive-exposure: the whole record goes out
        doc.update({name: getattr(user, name) for name in SECRET_USER_FIELDS})
    return doc


def _own_user(request: Request, caller: Caller) -> User:
    """The user of the path, if the caller is that user or an administrator (else 404)."""
    user = _store(request).users.get(request.path_params["user_id"])
    if user is None or not (caller.is_admin or caller.user is user):
        raise BadInput(404, "not_found", "no such user")
    return user


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


# -- login -----------------------------------------------------------------------------------------
def _nosql_match(store: SaasStore, user: User | None, condition: dict[str, Any]) -> bool:
    """FLAW nosql-login-operator: vulnerable mode hands the password to a Mongo-style matcher,
    so ``{"$ne": "x"}`` or ``{"$gt": ""}`` matches any stored password."""
    if user is None or len(condition) != 1:
        return False
    ((op, value),) = condition.items()
    if op == "$ne":
        return not (isinstance(value, str) and store.password_ok(user, value))
    return op in ("$gt", "$gte", "$exists", "$regex")


async def login(request: Request) -> Response:
    """``{"username": email, "password"}`` → an access token for this API."""
    _throttle(request)
    doc = await _json_object(request)
    username = _field(doc, "username", str)
    store, vulnerable = _store(request), _vulnerable(request)
    guard: LoginGuard = request.app.state.guard
    if not vulnerable and (wait := guard.locked_for(username)):  # FLAW login-no-lockout
        raise BadInput(
            429,
            "too_many_attempts",
            "too many failed logins, try later",
            {"Retry-After": str(wait)},
        )
    password = doc.get("password")
    user = store.by_email(username)
    if vulnerable and (username, password) == DEFAULT_ADMIN_LOGIN:
        user, ok = store.users.get(1), True
    elif vulnerable and isinstance(password, dict):
        ok = _nosql_match(store, user, password)
    else:
        ok = store.password_ok(user, _field(doc, "password", str))
    if user is None and vulnerable:  # FLAW login-user-enumeration: two different answers
        raise BadInput(404, "unknown_user", "no user with this username")
    if not ok or user is None:
        if vulnerable:
            raise BadInput(401, "wrong_password", "wrong password for this user")
        guard.failed(username)
        raise BadInput(401, "invalid_credentials", "invalid username or password")
    guard.succeeded(username)
    tokens: Tokens = request.app.state.tokens
    body = {"access_token": tokens.issue(user), "token_type": "Bearer", "expires_in": TOKEN_TTL}
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


# -- users -----------------------------------------------------------------------------------------
async def list_users(request: Request) -> Response:
    """Every user: administrators only."""
    _throttle(request)
    _require_admin(_user_caller(request))
    limit = _int_param(request, "limit", 50, 1, MAX_PAGE)
    offset = _int_param(request, "offset", 0, 0, 1_000_000)
    users = list(_store(request).users.values())[offset : offset + limit]
    items = [_user_json(request, u) for u in users]
    return JSONResponse({"items": items, "total": len(_store(request).users)})


async def get_user(request: Request) -> Response:
    """One user: the user themself or an administrator."""
    _throttle(request)
    return JSONResponse(_user_json(request, _own_user(request, _user_caller(request))))


async def get_user_v1(request: Request) -> Response:
    """FLAW legacy-api-version: the old v1 route, still served, never learnt the owner check."""
    user = _store(request).users.get(request.path_params["user_id"])
    _caller(request)
    if user is None:
        raise BadInput(404, "not_found", "no such user")
    return JSONResponse(_user_json(request, user))


def _profile_fields(doc: dict[str, Any], *, required: bool) -> dict[str, str]:
    """The fields a user may set about themself: name, email, phone."""
    out: dict[str, str] = {}
    for name, limit in (("name", 100), ("email", 254), ("phone", 32)):
        value = _field(doc, name, str, required=required and name != "phone")
        if value is None:
            continue
        if not 1 <= len(value) <= limit or (name == "email" and "@" not in value):
            raise BadInput(422, "invalid_field", "name must be 1-100 characters, email an address")
        out[name] = value
    return out


def _mass_assigned_role(request: Request, doc: dict[str, Any]) -> str | None:
    """FLAW mass-assignment-is-admin: vulnerable mode copies ``is_admin`` from the body."""
    if _vulnerable(request) and isinstance(doc.get("is_admin"), bool):
        return "admin" if doc["is_admin"] else "user"
    return None  # secure mode: only the known fields are copied


async def create_user(request: Request) -> Response:
    """Sign up (no identity needed): name, email, phone and a password; never a role."""
    _throttle(request)
    doc = await _json_object(request)
    fields = _profile_fields(doc, required=True)
    password = _field(doc, "password", str, required=False)
    if password is not None and not 12 <= len(password) <= 128:
        raise BadInput(422, "invalid_field", "password must be 12-128 characters")
    store = _store(request)
    if store.by_email(fields["email"]) is not None:
        raise BadInput(409, "conflict", "this email is taken")
    user = store.add_user(fields["name"], fields["email"], _mass_assigned_role(request, doc))
    if "phone" in fields:
        user.phone = fields["phone"]
    if password is not None:
        store.set_password(user.id, password)
    body = _user_json(request, user)
    return JSONResponse(body, 201, headers={"Location": f"/api/users/{user.id}"})


async def update_user(request: Request) -> Response:
    """Change one's name, email or phone (the user themself or an administrator)."""
    _throttle(request)
    user = _own_user(request, _user_caller(request))
    doc = await _json_object(request)
    for name, value in _profile_fields(doc, required=False).items():
        setattr(user, name, value)
    role = _mass_assigned_role(request, doc)
    if role is not None:
        user.role = role
    return JSONResponse(_user_json(request, user))


async def delete_user(request: Request) -> Response:
    """Delete a user and their invoices: administrators only."""
    _throttle(request)
    caller = _user_caller(request)
    if not _vulnerable(request):  # FLAW bfla-delete-user: vulnerable mode skips the role check
        _require_admin(caller)
    store = _store(request)
    if request.path_params["user_id"] not in store.users:
        raise BadInput(404, "not_found", "no such user")
    store.delete_user(request.path_params["user_id"])
    return Response(status_code=204)


# -- invoices --------------------------------------------------------------------------------------
def _search_words(request: Request, q: str) -> str:
    """The invoice search text: letters, digits, ``_``, ``-`` and spaces, 25 at most."""
    if len(q) > MAX_QUERY_CHARS:
        raise BadInput(400, "invalid_parameter", f"q is limited to {MAX_QUERY_CHARS} characters")
    if _vulnerable(request):
        ok = BACKTRACKING_WORDS.fullmatch(q) is not None  # FLAW redos-invoice-search
    else:
        ok = all(ch.isalnum() or ch in " _-" for ch in q)  # linear time
    if not ok:
        raise BadInput(400, "invalid_parameter", "q may hold letters, digits and spaces")
    return q.casefold()


def _sql_status_filter(request: Request, invoices: list[Invoice], status: str) -> list[Invoice]:
    """Secure: an enum check and a filter. Vulnerable: a query built by pasting the parameter
    into SQL, run on a throw-away in-memory copy of the invoices."""
    if not _vulnerable(request):
        if status not in INVOICE_STATUSES:
            raise BadInput(400, "invalid_parameter", "status is open, paid or void")
        return [inv for inv in invoices if inv.status == status]
    owners = sorted({inv.user_id for inv in invoices}) or [0]
    db = sqlite3.connect(":memory:")
    try:
        db.execute("CREATE TABLE invoices (id INTEGER, user_id INTEGER, status TEXT)")
        rows = [(i.id, i.user_id, i.status) for i in _store(request).invoices.values()]
        db.executemany("INSERT INTO invoices VALUES (?, ?, ?)", rows)
        owned = ",".join(str(o) for o in owners)
        sql = f"SELECT id FROM invoices WHERE user_id IN ({owned}) AND status = '{status}'"  # noqa: S608
        try:
            ids = {row[0] for row in db.execute(sql)}  # FLAW sqli-invoice-status
        except sqlite3.Error:
            _fault(request)
    finally:
        db.close()
    return [inv for inv in _store(request).invoices.values() if inv.id in ids]


async def list_invoices(request: Request) -> Response:
    """Invoices: a user sees their own; administrators and service clients with ``read`` any
    (``user_id`` filters by owner, ``status`` by status, ``q`` searches descriptions)."""
    _throttle(request)
    caller = _caller(request)
    _require_scope(caller, "read")
    high = 1_000_000 if _vulnerable(request) else MAX_PAGE  # FLAW unbounded-page-size
    limit = _int_param(request, "limit", 50, 1, high)
    offset = _int_param(request, "offset", 0, 0, 1_000_000)
    owner = request.query_params.get("user_id")
    if caller.user is not None and not caller.is_admin:
        if owner is not None and owner != str(caller.user.id):
            raise BadInput(403, "forbidden", "you can list only your own invoices")
        owner = str(caller.user.id)
    invoices = list(_store(request).invoices.values())
    if owner is not None:
        invoices = [inv for inv in invoices if str(inv.user_id) == owner]
    if (q := request.query_params.get("q")) is not None:
        words = _search_words(request, q)
        invoices = [inv for inv in invoices if words in inv.description.casefold()]
    if (status := request.query_params.get("status")) is not None:
        invoices = _sql_status_filter(request, invoices, status)
    page = invoices[offset : offset + limit]
    return JSONResponse({"items": [asdict(i) for i in page], "total": len(invoices)})


async def get_invoice(request: Request) -> Response:
    """One invoice: its owner, an administrator or a service client with ``read``."""
    _throttle(request)
    caller = _caller(request)
    _require_scope(caller, "read")
    invoice = _store(request).invoices.get(request.path_params["invoice_id"])
    if invoice is None:
        raise BadInput(404, "not_found", "no such invoice")
    mine = caller.user is None or caller.is_admin or invoice.user_id == caller.user.id
    if not mine and not _vulnerable(request):  # FLAW bola-invoice-read: no owner check
        raise BadInput(404, "not_found", "no such invoice")
    return JSONResponse(asdict(invoice))


async def void_invoice(request: Request) -> Response:
    """FLAW undocumented-invoice-delete: a DELETE the contract does not declare (its owner or an
    administrator voids the invoice); served in vulnerable mode only."""
    caller = _caller(request)
    invoice = _store(request).invoices.get(request.path_params["invoice_id"])
    if invoice is None or not (
        caller.is_admin or caller.user is None or invoice.user_id == caller.user.id
    ):
        raise BadInput(404, "not_found", "no such invoice")
    invoice.status = "void"
    return JSONResponse(asdict(invoice))


async def create_invoice(request: Request) -> Response:
    """Bill a user: administrators, or service clients with ``write``."""
    _throttle(request)
    caller = _caller(request)
    if caller.user is not None and not _vulnerable(request):  # FLAW bfla-create-invoice
        _require_admin(caller)
    _require_scope(caller, "write")
    doc = await _json_object(request)
    user_id = _field(doc, "user_id", int)
    amount = _field(doc, "amount_cents", int)
    currency = _field(doc, "currency", str, required=False) or "EUR"
    description = _field(doc, "description", str, required=False) or ""
    store = _store(request)
    if user_id not in store.users:
        raise BadInput(422, "invalid_field", "user_id does not name a user")
    if not 0 < amount <= 100_000_000 or len(currency) != 3 or not currency.isupper():
        raise BadInput(422, "invalid_field", "amount_cents must be positive, currency ISO 4217")
    if len(description) > 500:
        raise BadInput(422, "invalid_field", "description is limited to 500 characters")
    invoice = store.add_invoice(user_id, amount, currency, description)
    return JSONResponse(asdict(invoice), 201, headers={"Location": f"/api/invoices/{invoice.id}"})


async def invoice_owner(request: Request) -> Response:
    """``{"owner": "<user id>"}`` for the gateway's ownership resolver (internal: the gateway
    calls it directly; its OpenAPI document does not declare it, so clients cannot)."""
    invoice = _store(request).invoices.get(request.path_params["invoice_id"])
    if invoice is None:
        raise BadInput(404, "not_found", "no such invoice")
    return JSONResponse({"owner": str(invoice.user_id)})


# -- webhooks and exports --------------------------------------------------------------------------
async def check_webhook(request: Request) -> Response:
    """Check a webhook URL. Secure: only ``https://`` on an allowed host, and the delivery is
    queued, not made here. Vulnerable: the API fetches whatever URL it is given."""
    _throttle(request)
    _user_caller(request)
    url = _field(await _json_object(request), "url", str)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 2048:
        raise BadInput(422, "invalid_field", "url must be an http(s) URL")
    if not _vulnerable(request):
        allowed = parts.scheme == "https" and parts.port is None and not parts.username
        if not allowed or parts.hostname not in WEBHOOK_HOSTS:
            raise BadInput(422, "url_not_allowed", "webhooks may point to allowed hosts only")
        return JSONResponse({"queued": True}, 202)
    client = httpx.AsyncClient(timeout=2.0, follow_redirects=False, trust_env=False)
    try:  # FLAW ssrf-webhook-test: any URL, loopback and private addresses included
        async with client, client.stream("GET", url) as answer:
            got = 0
            async for chunk in answer.aiter_bytes():
                got += len(chunk)
                if got > 65536:
                    break
    except httpx.HTTPError:
        return _error(502, "delivery_failed", "the webhook could not be reached")
    return JSONResponse({"delivered": True, "status": answer.status_code})


async def create_export(request: Request) -> Response:
    """Render the caller's invoices into ``<filename>.pdf``. Secure: the name is validated.
    Vulnerable: the name is pasted into a shell command line (emulated: a ``sleep`` after a
    shell separator is honoured, up to 10 s; nothing is executed)."""
    _throttle(request)
    _user_caller(request)
    filename = _field(await _json_object(request), "filename", str)
    if not _vulnerable(request):
        if not FILENAME.fullmatch(filename):
            raise BadInput(422, "invalid_field", "filename: 1-64 letters, digits, _ or -")
    elif match := SHELL_SLEEP.search(filename):  # FLAW command-injection-export
        await asyncio.sleep(min(int(match.group(1)), 10))
    return JSONResponse({"file": f"{filename}.pdf", "status": "queued"}, 202)


async def debug_page(request: Request) -> Response:
    """FLAW debug-endpoint-exposed: a leftover debug page (vulnerable mode only)."""
    return JSONResponse(
        {
            "debug": True,
            "python": platform.python_version(),
            "token_algorithm": "HS256",
            "users": len(_store(request).users),
            "routes": [r.path for r in request.app.routes if isinstance(r, Route)],
        }
    )


# -- test helpers ----------------------------------------------------------------------------------
async def echo(request: Request) -> Response:
    """What arrived: method, path, query, headers in order and the body."""
    body = await request.body()
    raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]]
    merged: dict[str, str] = {}
    for name, value in raw:
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    try:
        text: str | None = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    client = request.client
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": merged,
            "raw_headers": raw,
            "body": text,
            "body_base64": None if text is not None else base64.b64encode(body).decode(),
            "client": {"host": client.host, "port": client.port} if client else None,
        }
    )


def _charge_card(invoice_id: int) -> NoReturn:
    raise RuntimeError(f"payment backend refused invoice {invoice_id}: connection reset")


async def boom(request: Request) -> Response:
    """A 500 whose body is a Python traceback, as careless frameworks send in debug mode."""
    try:
        _charge_card(42)
    except RuntimeError:
        trace = traceback.format_exc()
    return PlainTextResponse(trace, status_code=500)


async def slow(request: Request) -> Response:
    ms = _int_param(request, "ms", 100, 0, MAX_SLOW_MS)
    await asyncio.sleep(ms / 1000)
    return JSONResponse({"slept_ms": ms})


async def big(request: Request) -> Response:
    """Exactly ``kb`` KiB of JSON (``{"data": "xxx…"}``), streamed in 64 KiB chunks."""
    size = _int_param(request, "kb", 1024, 1, MAX_BIG_KB) * 1024
    head, tail = b'{"data":"', b'"}'

    async def chunks() -> AsyncIterator[bytes]:
        yield head
        left = size - len(head) - len(tail)
        while left > 0:
            n = min(left, 65536)
            yield b"x" * n
            left -= n
        yield tail

    return StreamingResponse(
        chunks(), media_type="application/json", headers={"Content-Length": str(size)}
    )


class PoweredBy:
    """Adds ``X-Powered-By: saas-api`` to every response, as many frameworks do (the gateway
    strips it); in vulnerable mode also ``X-Runtime`` with the exact Python version."""

    def __init__(self, app: ASGIApp, *, vulnerable: bool) -> None:
        self.app = app
        self.extra: list[tuple[bytes, bytes]] = [(b"x-powered-by", b"saas-api")]
        if vulnerable:  # FLAW version-header-disclosure
            runtime = f"CPython/{platform.python_version()} Starlette"
            self.extra.append((b"x-runtime", runtime.encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.extra]
            await send(message)

        await self.app(scope, receive, send_with_header)


async def _bad_input(request: Request, exc: Exception) -> Response:
    if isinstance(exc, BadInput):
        response = _error(exc.status, exc.error, exc.message)
        response.headers.update(exc.headers or {})
        return response
    if isinstance(exc, ServerFault):
        return PlainTextResponse(exc.trace, status_code=500)
    return _error(500, "internal", "internal error")


def create_app(store: SaasStore | None = None, *, vulnerable: bool = False) -> ASGIApp:
    """The ASGI app over ``store`` (a freshly seeded one by default). ``vulnerable`` plants the
    flaws of ``examples/ground_truth.yaml``; the default is the secure API."""
    routes = [
        Route("/api/health", health, methods=["GET"]),
        Route("/api/login", login, methods=["POST"]),
        Route("/api/users", list_users, methods=["GET"]),
        Route("/api/users", create_user, methods=["POST"]),
        Route("/api/users/{user_id:int}", get_user, methods=["GET"]),
        Route("/api/users/{user_id:int}", update_user, methods=["PATCH"]),
        Route("/api/users/{user_id:int}", delete_user, methods=["DELETE"]),
        Route("/api/invoices", list_invoices, methods=["GET"]),
        Route("/api/invoices", create_invoice, methods=["POST"]),
        Route("/api/invoices/{invoice_id:int}", get_invoice, methods=["GET"]),
        Route("/api/webhooks/test", check_webhook, methods=["POST"]),
        Route("/api/exports", create_export, methods=["POST"]),
        Route("/internal/invoices/{invoice_id:int}/owner", invoice_owner, methods=["GET"]),
        Route("/api/echo", echo, methods=ECHO_METHODS),
        Route("/api/boom", boom, methods=["GET"]),
        Route("/api/slow", slow, methods=["GET"]),
        Route("/api/big", big, methods=["GET"]),
    ]
    if vulnerable:
        routes += [
            Route("/api/invoices/{invoice_id:int}", void_invoice, methods=["DELETE"]),
            Route("/api/v1/users/{user_id:int}", get_user_v1, methods=["GET"]),
            Route("/debug", debug_page, methods=["GET"]),
        ]
    handlers = {BadInput: _bad_input, ServerFault: _bad_input}
    app = Starlette(routes=routes, exception_handlers=handlers)  # type: ignore[arg-type]
    app.state.store = store or SaasStore()
    app.state.vulnerable = vulnerable
    app.state.tokens = Tokens(vulnerable=vulnerable)
    app.state.guard = LoginGuard()
    app.state.limiter = RateLimiter()
    methods = ["GET", "POST", "PATCH", "DELETE"]
    cors: ASGIApp
    if vulnerable:  # FLAW cors-reflects-origin: any Origin, "null" included, with credentials
        cors = CORSMiddleware(
            app,
            allow_origin_regex=".*",
            allow_credentials=True,
            allow_methods=methods,
            allow_headers=["authorization", "content-type"],
        )
    else:
        cors = CORSMiddleware(
            app,
            allow_origins=["https://app.example"],
            allow_credentials=True,
            allow_methods=methods,
            allow_headers=["authorization", "content-type"],
        )
    return PoweredBy(cors, vulnerable=vulnerable)


def main(argv: list[str] | None = None) -> None:
    """Serve the example API on 127.0.0.1 with uvicorn."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=9001, help="TCP port on 127.0.0.1")
    parser.add_argument(
        "--vulnerable",
        action="store_true",
        help="plant the flaws listed in examples/ground_truth.yaml (for demos and scanners)",
    )
    args = parser.parse_args(argv)
    app = create_app(vulnerable=args.vulnerable)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
