"""The authorization endpoint (RFC 6749 §4.1.1) for the code flow only, with RFC 9700 rules.

* ``client_id`` and ``redirect_uri`` are checked first; when either is wrong the user sees an
  error page and is **never redirected** (RFC 6749 §4.1.2.1: no open redirector). The redirect
  URI must equal a registered one character for character (RFC 9700 §2.1); it may be left out
  only when the client registered exactly one.
* Every other error goes back to the client as ``error`` + ``state`` + ``iss`` (RFC 9207).
* ``response_type=code`` only, PKCE ``S256`` required for every client (RFC 7636, OAuth 2.1).
* No signed-in user: the browser goes to the login page, which returns to this same request
  (as a GET: the login flow only ever redirects to ``/authorize?…``).
  ``prompt=none`` answers ``login_required`` instead.
* A fresh login (OpenID Connect Core §3.1.2.1): with ``prompt=login``, or a ``max_age`` that
  the current login is older than, the browser goes to the login page again (``prompt=none``:
  ``login_required``). The request it returns to carries ``auth_after`` = the moment it was
  sent there, in place of ``prompt=login``: only a login that finished after it answers (one
  older ``max_age`` check would send ``max_age=0`` round for ever). An ``auth_after`` that is
  not from the last 15 minutes is ignored, so a forged one cannot skip a login.
* On success the code (256 random bits, stored as SHA-256, single use, ``code_ttl`` seconds)
  goes to the redirect URI with ``state`` and ``iss``.
"""

from __future__ import annotations

import html
import secrets
from urllib.parse import urlencode

from bastion.authserver.http import DuplicateParameter, Request, Response, html_response, redirect
from bastion.authserver.oauth import rfc7636
from bastion.authserver.oauth.context import OAuthContext
from bastion.authserver.oauth.errors import OAuthError
from bastion.authserver.oauth.grants import MAX_PARAM_CHARS, code_hash, narrow_scope
from bastion.authserver.oauth.records import AuthorizationCode, OAuthClient

MAX_STATE_CHARS = 1024
#: How long after it was sent to the login page a request's ``auth_after`` is honoured.
AUTH_AFTER_WINDOW = 900


class _Redirectable(Exception):
    """An error the client learns through its (verified) redirect URI."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(error)
        self.error = error
        self.description = description


def error_page(status: int, message: str) -> Response:
    text = html.escape(message)
    return html_response(
        status,
        "<!doctype html><html lang=en><meta charset=utf-8><title>Authorization error</title>"
        f"<h1>Authorization error</h1><p>{text}</p></html>",
    )


def _append(uri: str, params: dict[str, str]) -> str:
    sep = "&" if "?" in uri else "?"
    return uri + sep + urlencode(params)


async def authorize(ctx: OAuthContext, request: Request) -> Response:
    """``GET /authorize`` (query) or ``POST /authorize`` (form), OpenID Connect Core §3.1.2.1."""
    read = request.form_param if request.method == "POST" else request.param
    try:
        params = {
            name: read(name)
            for name in (
                "client_id",
                "redirect_uri",
                "response_type",
                "scope",
                "state",
                "code_challenge",
                "code_challenge_method",
                "nonce",
                "prompt",
                "max_age",
                "auth_after",
            )
        }
    except DuplicateParameter as exc:
        return error_page(400, f"The parameter {exc.name} was given more than once.")
    if any(v is not None and len(v) > MAX_PARAM_CHARS for v in params.values()):
        return error_page(400, "A parameter is too long.")
    client_id = params["client_id"]
    client = await ctx.clients.client(client_id) if client_id else None
    if client is None:
        return error_page(400, "Unknown client.")
    redirect_uri = params["redirect_uri"]
    if redirect_uri is None and len(client.redirect_uris) == 1:
        redirect_uri = client.redirect_uris[0]
    if redirect_uri is None or redirect_uri not in client.redirect_uris:
        return error_page(400, "The redirect URI is not registered for this client.")
    state = params["state"]
    try:
        return await _grant_code(ctx, request, client, redirect_uri, params)
    except _Redirectable as exc:
        reply = {"error": exc.error, "error_description": exc.description}
        if state is not None:
            reply["state"] = state
        reply["iss"] = ctx.issuer
        return redirect(_append(redirect_uri, reply))


async def _grant_code(
    ctx: OAuthContext,
    request: Request,
    client: OAuthClient,
    redirect_uri: str,
    params: dict[str, str | None],
) -> Response:
    if params["response_type"] != "code":
        raise _Redirectable("unsupported_response_type", "only response_type=code")
    if "authorization_code" not in client.grant_types:
        raise _Redirectable("unauthorized_client", "code flow not allowed for this client")
    challenge = params["code_challenge"]
    if challenge is None or not rfc7636.valid_challenge(challenge):
        raise _Redirectable("invalid_request", "code_challenge (S256) is required")
    if params["code_challenge_method"] != "S256":
        raise _Redirectable("invalid_request", "code_challenge_method must be S256")
    state = params["state"]
    if state is not None and len(state) > MAX_STATE_CHARS:
        raise _Redirectable("invalid_request", "state is too long")
    try:
        scope = narrow_scope(params["scope"], client.scopes)
    except OAuthError:
        raise _Redirectable("invalid_scope", "scope not allowed for this client") from None
    users = ctx.users
    if users is None:
        raise _Redirectable("temporarily_unavailable", "login is not available")
    prompts = set((params["prompt"] or "").split())
    if "none" in prompts and len(prompts) > 1:
        raise _Redirectable("invalid_request", "prompt=none cannot be combined")
    max_age = _seconds(params["max_age"], "max_age")
    now = ctx.clock.now()
    auth_after = _seconds(params["auth_after"], "auth_after")
    if auth_after is not None and not now - AUTH_AFTER_WINDOW <= auth_after <= now:
        auth_after = None  # not one we set recently: ignore it
    login = await users.current(request)
    if login is not None and not _fresh_enough(login.auth_time, now, prompts, max_age, auth_after):
        login = None
    if login is None:
        if "none" in prompts:
            raise _Redirectable("login_required", "the user must sign in")
        # The login returns to a GET of the same request (a POST's form becomes the query),
        # with prompt=login replaced by the moment the login was asked for.
        again = {k: v for k, v in params.items() if v is not None and k != "auth_after"}
        rest = " ".join(sorted(prompts - {"login"}))
        again.pop("prompt", None)
        if rest:
            again["prompt"] = rest
        again["auth_after"] = str(int(now))
        query = urlencode(again)
        return redirect(users.login_url(f"{request.path}?{query}"))
    code = secrets.token_urlsafe(32)
    await ctx.repo.put_code(
        AuthorizationCode(
            code_hash=code_hash(code),
            client_id=client.id,
            # What the request said: RFC 6749 §4.1.3 wants the same at the token endpoint.
            redirect_uri=params["redirect_uri"] or "",
            scope=scope,
            subject=login.user_id,
            nonce=params["nonce"],
            code_challenge=challenge,
            auth_time=login.auth_time,
            amr=login.amr,
            acr=login.acr,
            created_at=now,
            expires_at=now + ctx.config.code_ttl,
        )
    )
    reply = {"code": code}
    if state is not None:
        reply["state"] = state
    reply["iss"] = ctx.issuer
    return redirect(_append(redirect_uri, reply))


def _seconds(value: str | None, name: str) -> int | None:
    """A non-negative integer parameter (``max_age``, ``auth_after``), or None when absent."""
    if value is None:
        return None
    if not value.isdigit() or len(value) > 12:
        raise _Redirectable("invalid_request", f"{name} must be a non-negative integer")
    return int(value)


def _fresh_enough(
    auth_time: float, now: float, prompts: set[str], max_age: int | None, auth_after: int | None
) -> bool:
    """Whether the current login may answer this request without a new one. A request back
    from the login page we sent it to needs that login (``auth_after`` stands for the
    ``prompt=login`` / ``max_age`` it replaced); otherwise ``prompt=login`` always needs one and
    ``max_age`` one recent enough."""
    if auth_after is not None:
        return auth_time >= auth_after
    if "login" in prompts:
        return False
    return max_age is None or now - auth_time <= max_age
