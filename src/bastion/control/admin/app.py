"""The admin API as an ASGI app (Starlette): authentication, RBAC, validation, dispatch.

Each request runs the same fixed steps, and the first that fails answers with problem+json:

1. match ``METHOD /admin/v1/...`` against the operation table (404 / 405);
2. authenticate the bearer token (:mod:`bastion.control.admin.auth`); with a user directory the
   user must exist and not be disabled, and its *current* admin roles count (a role taken away
   or a user disabled takes effect at once, whatever the token says);
3. the operation must be allowed for those roles (403) and, when destructive, the login must
   be recent (401 step-up) — both refusals are recorded in the audit trail as ``denied``;
4. the query (unknown or repeated parameters refused, values coerced and checked against the
   schema, ``limit`` bounded) and the JSON body (``application/json``, at most 64 KiB, closed
   schema) are validated;
5. the handler runs; its answer is JSON with ``Cache-Control: no-store``.

The OpenAPI document is public at ``/admin/v1/openapi.json``: it describes, it grants nothing.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import jsonschema_rs
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bastion.control.admin.auth import AdminPrincipal, AdminTokenVerifier, require_recent_login
from bastion.control.admin.roles import admin_roles, allowed
from bastion.control.admin.service import AdminContext, Call, Result
from bastion.control.admin.spec import (
    BASE,
    MAX_BODY_BYTES,
    OPERATIONS,
    OperationSpec,
    openapi_document,
)
from bastion.errors import (
    PROBLEM_CONTENT_TYPE,
    AuthenticationFailed,
    BadRequest,
    BastionError,
    Forbidden,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)

log = logging.getLogger("bastion.control.admin")

Handler = Callable[[AdminContext, Call], Awaitable[Result]]
_HEADERS = {"cache-control": "no-store", "x-content-type-options": "nosniff"}
_PATH_VALUE = re.compile(r"^[A-Za-z0-9_.@:+-]{1,256}$")


def _validator(schema: Mapping[str, Any]) -> Any:
    return jsonschema_rs.Draft202012Validator(dict(schema))


class _Compiled:
    """One operation with its path regex and compiled validators (built once)."""

    def __init__(self, op: OperationSpec, handler: Handler) -> None:
        self.op = op
        self.handler = handler
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", op.path)
        self.regex = re.compile(f"^{pattern}$")
        self.body = _validator(op.body) if op.body is not None else None
        self.query = {name: _validator(schema) for name, schema in op.query.items()}


def _problem(exc: BastionError, instance: str | None = None) -> Response:
    headers = dict(_HEADERS)
    headers.update({k: v for k, v in exc.headers})
    return Response(
        exc.problem_bytes(instance),
        status_code=exc.status,
        headers=headers,
        media_type=PROBLEM_CONTENT_TYPE,
    )


def _first_error(validator: Any, instance: Any, where: str) -> InvalidRequest | None:
    for error in validator.iter_errors(instance):
        pointer = "/".join(str(p) for p in error.instance_path)
        # The rule, never the value (the value may be a secret pasted by mistake).
        rule = error.kind.__class__.__name__.removeprefix("ValidationErrorKind_")
        return InvalidRequest(f"{where}/{pointer}: breaks the schema rule {rule!r}")
    return None


def _coerce(raw: str, schema: Mapping[str, Any]) -> Any:
    kind = schema.get("type")
    try:
        if kind == "integer":
            if not re.fullmatch(r"-?[0-9]{1,18}", raw):
                raise ValueError
            return int(raw)
        if kind == "number":
            if not re.fullmatch(r"-?[0-9]{1,18}(\.[0-9]{1,9})?", raw):
                raise ValueError
            return float(raw)
    except ValueError:
        raise InvalidRequest(f"query: expects {kind}") from None
    return raw


class AdminApi:
    """Builds the Starlette app over ``handlers`` (operation id -> handler). Operations of the
    table without a handler are neither served nor documented."""

    def __init__(
        self,
        ctx: AdminContext,
        verifier: AdminTokenVerifier,
        handlers: Mapping[str, Handler],
    ) -> None:
        self.ctx = ctx
        self.verifier = verifier
        self.compiled = [_Compiled(op, handlers[op.id]) for op in OPERATIONS if op.id in handlers]
        document = openapi_document()
        served = {(BASE + c.op.path, c.op.method.lower()) for c in self.compiled}
        for path, item in list(document["paths"].items()):
            for method in list(item):
                if (path, method) not in served:
                    del item[method]
            if not item:
                del document["paths"][path]
        self.document = orjson.dumps(document)
        self.app = Starlette(
            routes=[
                Route(f"{BASE}/openapi.json", self._openapi, methods=["GET"]),
                Route(
                    BASE + "/{rest:path}",
                    self._dispatch,
                    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                ),
            ],
        )

    async def _openapi(self, request: Request) -> Response:
        return Response(self.document, media_type="application/json", headers=_HEADERS)

    async def _dispatch(self, request: Request) -> Response:
        request_id = uuid.uuid4().hex
        try:
            return await self._handle(request, request_id)
        except BastionError as exc:
            if exc.diagnosis:
                log.info(
                    "admin %s %s: %s (%s)",
                    request.method,
                    request.url.path,
                    exc.code,
                    exc.diagnosis,
                )
            return _problem(exc, request.url.path)
        except Exception:
            log.exception("admin %s %s failed", request.method, request.url.path)
            return _problem(InternalError(), request.url.path)

    def _match(self, method: str, path: str) -> tuple[_Compiled, dict[str, str]]:
        rel = path[len(BASE) :]
        methods: list[str] = []
        for c in self.compiled:
            m = c.regex.match(rel)
            if m is None:
                continue
            if c.op.method == method:
                values = m.groupdict()
                for value in values.values():
                    if not _PATH_VALUE.match(value):
                        raise NotFound()
                return c, values
            methods.append(c.op.method)
        if methods:
            raise MethodNotAllowed(headers=[("allow", ", ".join(sorted(methods)))])
        raise NotFound()

    async def _principal(self, request: Request) -> AdminPrincipal:
        principal = await self.verifier.authenticate(request.headers.get("authorization"))
        users = self.ctx.users
        if users is None:
            if not principal.roles:
                raise Forbidden(diagnosis=f"admin token of {principal.sub!r} has no admin role")
            return principal
        user = await users.get_user(principal.sub)
        if user is None or user.disabled:
            raise AuthenticationFailed(
                diagnosis=f"admin token of unknown or disabled {principal.sub!r}"
            )
        roles = admin_roles(user.roles)
        if not roles:
            raise Forbidden(diagnosis=f"user {principal.sub!r} has no admin role")
        return AdminPrincipal(
            sub=principal.sub,
            roles=roles,
            owners=principal.owners | {user.username},
            amr=principal.amr,
            auth_time=principal.auth_time,
            jti=principal.jti,
            client_id=principal.client_id,
        )

    async def _handle(self, request: Request, request_id: str) -> Response:
        compiled, path_values = self._match(request.method, request.url.path)
        op = compiled.op
        principal = await self._principal(request)
        source_ip = request.client.host if request.client else None
        call = Call(op, principal, path_values, {}, None, source_ip, request_id)
        target = next(iter(path_values.values()), "")
        if not allowed(principal.roles, op.id):
            await self.ctx.record(call, target_type="operation", target_id=target, outcome="denied")
            raise Forbidden(
                diagnosis=f"{principal.sub!r} ({sorted(principal.roles)}) may not {op.id}"
            )
        if op.destructive:
            try:
                require_recent_login(principal, self.ctx.clock.now())
            except AuthenticationFailed:
                await self.ctx.record(
                    call, target_type="operation", target_id=target, outcome="denied"
                )
                raise
        query = self._query(compiled, request)
        body = await self._body(compiled, request)
        call = Call(op, principal, path_values, query, body, source_ip, request_id)
        status, payload = await compiled.handler(self.ctx, call)
        return Response(
            orjson.dumps(payload),
            status_code=status,
            media_type="application/json",
            headers={**_HEADERS, "x-request-id": request_id},
        )

    @staticmethod
    def _query(compiled: _Compiled, request: Request) -> dict[str, Any]:
        items = request.query_params.multi_items()
        names = [k for k, _ in items]
        if len(names) != len(set(names)):
            raise InvalidRequest("query: a parameter is repeated")
        out: dict[str, Any] = {}
        for name, raw in items:
            schema = compiled.op.query.get(name)
            if schema is None:
                raise InvalidRequest(f"query: unknown parameter {name[:64]!r}")
            value = _coerce(raw, schema)
            error = _first_error(compiled.query[name], value, f"query/{name}")
            if error is not None:
                raise error
            out[name] = value
        return out

    @staticmethod
    async def _body(compiled: _Compiled, request: Request) -> dict[str, Any] | None:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            raise PayloadTooLarge()
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                raise PayloadTooLarge()
        if compiled.body is None:
            if raw:
                raise BadRequest("this operation takes no body")
            return None
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise UnsupportedMediaType("send application/json")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidRequest("body: not JSON") from None
        error = _first_error(compiled.body, body, "body")
        if error is not None:
            raise error
        if not isinstance(body, dict):  # the schemas are objects; kept for the type checker
            raise InvalidRequest("body: expects an object")
        return body
