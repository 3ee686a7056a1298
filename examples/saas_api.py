"""A small SaaS API (users and invoices) that Bastion protects in the demo and the tests.

Callers are identified by the headers the gateway sends upstream: ``x-bastion-subject`` is a
user's id (``2`` is Bob), or, with ``x-bastion-auth: api_key``, the id of a service client (an
integration holding an API key) whose ``x-bastion-scopes`` say what it may do. The API trusts
these headers: only the gateway may reach it (it listens on 127.0.0.1).

Two modes. **Secure** (the default) checks ownership and roles itself and returns user records
without secrets. **Vulnerable** (``--vulnerable``, ``create_app(vulnerable=True)``) plants
exactly four flaws, listed with how to trigger them in ``examples/ground_truth.yaml``: a BOLA on
invoices, mass assignment of ``is_admin``, user records with SSN, card number and password
hash, and a user deletion without a role check. Each flaw is marked ``FLAW <id>`` below. In both
modes the API is otherwise an ordinary upstream: it shows stack traces on errors and sends
version headers, which the gateway hides.

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
import hashlib
import json
import traceback
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Any, NoReturn

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 1_048_576
MAX_SLOW_MS = 60_000
MAX_BIG_KB = 1_048_576
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

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


def fake_password_hash(seed: str) -> str:
    """A bcrypt-shaped string derived from ``seed``: looks like a hash, is not one of anything."""
    alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    digest = hashlib.sha512(seed.encode()).digest()
    return "$2b$12$" + "".join(alphabet[b % 64] for b in digest[:53])


class SaasStore:
    """In-memory users and invoices, seeded deterministically (same ids and values every run).
    Ids are never reused after a deletion."""

    def __init__(self, users: int = 10, invoices_per_user: int = 3) -> None:
        self.users: dict[int, User] = {}
        self.invoices: dict[int, Invoice] = {}
        self._user_ids = 0
        self._invoice_ids = 0
        for i in range(1, users + 1):
            name = FIRST_NAMES[(i - 1) % len(FIRST_NAMES)]
            self.add_user(name if i <= len(FIRST_NAMES) else f"{name} {i}", f"user{i}@example.test")
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

    def add_invoice(self, user_id: int, amount_cents: int, currency: str, desc: str) -> Invoice:
        """Create an open invoice owned by ``user_id``."""
        self._invoice_ids += 1
        invoice = Invoice(self._invoice_ids, user_id, amount_cents, currency, "open", desc)
        self.invoices[invoice.id] = invoice
        return invoice

    def delete_user(self, user_id: int) -> None:
        """Remove a user and the invoices they own."""
        self.users.pop(user_id, None)
        for invoice_id in [i.id for i in self.invoices.values() if i.user_id == user_id]:
            del self.invoices[invoice_id]


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


async def _json_object(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise BadInput(413, "too_large", "request body too large")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
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
    """The caller named by the gateway's identity headers; 401 when there is none we know."""
    subject = request.headers.get("x-bastion-subject", "")
    scopes = frozenset(request.headers.get("x-bastion-scopes", "").split())
    if subject and request.headers.get("x-bastion-auth") == "api_key":
        return Caller(None, subject, scopes)
    user = _store(request).users.get(int(subject)) if subject.isdigit() else None
    if user is None:
        raise BadInput(401, "unauthenticated", "no known caller (x-bastion-subject)")
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


async def list_users(request: Request) -> Response:
    """Every user: administrators only."""
    _require_admin(_user_caller(request))
    limit = _int_param(request, "limit", 50, 1, 100)
    offset = _int_param(request, "offset", 0, 0, 1_000_000)
    users = list(_store(request).users.values())[offset : offset + limit]
    items = [_user_json(request, u) for u in users]
    return JSONResponse({"items": items, "total": len(_store(request).users)})


async def get_user(request: Request) -> Response:
    """One user: the user themself or an administrator."""
    return JSONResponse(_user_json(request, _own_user(request, _user_caller(request))))


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
    """Sign up (no identity needed): name, email and phone; never a role."""
    doc = await _json_object(request)
    fields = _profile_fields(doc, required=True)
    user = _store(request).add_user(
        fields["name"], fields["email"], _mass_assigned_role(request, doc)
    )
    if "phone" in fields:
        user.phone = fields["phone"]
    body = _user_json(request, user)
    return JSONResponse(body, 201, headers={"Location": f"/api/users/{user.id}"})


async def update_user(request: Request) -> Response:
    """Change one's name, email or phone (the user themself or an administrator)."""
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
    caller = _user_caller(request)
    if not _vulnerable(request):  # FLAW bfla-delete-user: vulnerable mode skips the role check
        _require_admin(caller)
    store = _store(request)
    if request.path_params["user_id"] not in store.users:
        raise BadInput(404, "not_found", "no such user")
    store.delete_user(request.path_params["user_id"])
    return Response(status_code=204)


async def list_invoices(request: Request) -> Response:
    """Invoices: a user sees their own; administrators and service clients with ``read`` any
    (``user_id`` filters by owner)."""
    caller = _caller(request)
    _require_scope(caller, "read")
    limit = _int_param(request, "limit", 50, 1, 100)
    offset = _int_param(request, "offset", 0, 0, 1_000_000)
    owner = request.query_params.get("user_id")
    if caller.user is not None and not caller.is_admin:
        if owner is not None and owner != str(caller.user.id):
            raise BadInput(403, "forbidden", "you can list only your own invoices")
        owner = str(caller.user.id)
    invoices = list(_store(request).invoices.values())
    if owner is not None:
        invoices = [inv for inv in invoices if str(inv.user_id) == owner]
    page = invoices[offset : offset + limit]
    return JSONResponse({"items": [asdict(i) for i in page], "total": len(invoices)})


async def get_invoice(request: Request) -> Response:
    """One invoice: its owner, an administrator or a service client with ``read``."""
    caller = _caller(request)
    _require_scope(caller, "read")
    invoice = _store(request).invoices.get(request.path_params["invoice_id"])
    if invoice is None:
        raise BadInput(404, "not_found", "no such invoice")
    mine = caller.user is None or caller.is_admin or invoice.user_id == caller.user.id
    if not mine and not _vulnerable(request):  # FLAW bola-invoice-read: no owner check
        raise BadInput(404, "not_found", "no such invoice")
    return JSONResponse(asdict(invoice))


async def create_invoice(request: Request) -> Response:
    """Bill a user: administrators, or service clients with ``write``."""
    caller = _caller(request)
    if caller.user is not None:
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
    """Adds ``X-Powered-By`` to every response, as many frameworks do (the gateway strips it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-powered-by", b"saas-api")]
            await send(message)

        await self.app(scope, receive, send_with_header)


async def _bad_input(request: Request, exc: Exception) -> Response:
    if isinstance(exc, BadInput):
        return _error(exc.status, exc.error, exc.message)
    return _error(500, "internal", "internal error")


def create_app(store: SaasStore | None = None, *, vulnerable: bool = False) -> ASGIApp:
    """The ASGI app over ``store`` (a freshly seeded one by default). ``vulnerable`` plants the
    four flaws of ``examples/ground_truth.yaml``; the default is the secure API."""
    routes = [
        Route("/api/health", health, methods=["GET"]),
        Route("/api/users", list_users, methods=["GET"]),
        Route("/api/users", create_user, methods=["POST"]),
        Route("/api/users/{user_id:int}", get_user, methods=["GET"]),
        Route("/api/users/{user_id:int}", update_user, methods=["PATCH"]),
        Route("/api/users/{user_id:int}", delete_user, methods=["DELETE"]),
        Route("/api/invoices", list_invoices, methods=["GET"]),
        Route("/api/invoices", create_invoice, methods=["POST"]),
        Route("/api/invoices/{invoice_id:int}", get_invoice, methods=["GET"]),
        Route("/internal/invoices/{invoice_id:int}/owner", invoice_owner, methods=["GET"]),
        Route("/api/echo", echo, methods=ECHO_METHODS),
        Route("/api/boom", boom, methods=["GET"]),
        Route("/api/slow", slow, methods=["GET"]),
        Route("/api/big", big, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={BadInput: _bad_input})
    app.state.store = store or SaasStore()
    app.state.vulnerable = vulnerable
    return PoweredBy(app)


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
