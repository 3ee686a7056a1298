"""``bastion control …``: serve the admin API, and talk to a running one.

``serve`` runs the admin API (``/admin/v1``) on the ``control`` listener. The other commands
are clients of that API: ``apps``, ``users``, ``incident`` and ``audit``. They authenticate
with an admin access token kept in a file only its owner can read (``--token-file``, default
``~/.config/bastion/admin-token``, or ``$BASTION_ADMIN_TOKEN_FILE``), and find the API at
``--url`` or at ``control.bind`` of ``-c FILE``. Output is a rich table, or JSON with
``--json``. A refusal prints one line with the API's stable error code.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import orjson
import typer
from rich.table import Table

from bastion.cli.common import CliFailure, JsonOpt, load, out, run
from bastion.config.types import parse_duration
from bastion.control.client import (
    DEFAULT_TOKEN_FILE,
    AdminApiError,
    AdminClient,
    admin_url,
    read_token_file,
)

T = TypeVar("T")

control_app = typer.Typer(
    help="The control plane: serve the admin API, or manage applications, users and incidents "
    "through it.",
    no_args_is_help=True,
)
apps_app = typer.Typer(help="Applications (through the admin API).", no_args_is_help=True)
users_app = typer.Typer(help="Users and roles (through the admin API).", no_args_is_help=True)
incident_app = typer.Typer(help="Incident actions, on every node.", no_args_is_help=True)
control_app.add_typer(apps_app, name="apps")
control_app.add_typer(users_app, name="users")
control_app.add_typer(incident_app, name="incident")

#: Tests replace this with a factory of an ``httpx.ASGITransport`` over the app.
TRANSPORT: Callable[[], httpx.AsyncBaseTransport | None] = lambda: None  # noqa: E731

UrlOpt = Annotated[
    str | None, typer.Option("--url", help="The admin API's base URL, e.g. https://admin:9100.")
]
CfgOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="bastion.yaml (its control.bind).")
]
TokenOpt = Annotated[
    Path | None,
    typer.Option("--token-file", help="File with the admin token (mode 0600).", show_default=False),
]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (kept in the audit trail).")]


def _client(url: str | None, config: Path | None, token_file: Path | None) -> AdminClient:
    if url is None:
        if config is None:
            raise CliFailure("name the admin API with --url or -c FILE", 2)
        try:
            url = admin_url(getattr(load(config), "control", None))
        except ValueError as exc:
            raise CliFailure(str(exc), 2) from None
    path = token_file or Path(os.environ.get("BASTION_ADMIN_TOKEN_FILE", str(DEFAULT_TOKEN_FILE)))
    try:
        token = read_token_file(path)
    except ValueError as exc:
        raise CliFailure(str(exc), 2) from None
    return AdminClient(url, token, transport=TRANSPORT())


def _call(client: AdminClient, fn: Callable[[AdminClient], Awaitable[T]]) -> T:
    async def go() -> T:
        async with client:
            return await fn(client)

    try:
        return run(go())
    except AdminApiError as exc:
        raise CliFailure(str(exc)) from None


def _print(data: Any, as_json: bool, columns: tuple[str, ...]) -> None:
    if as_json:
        typer.echo(orjson.dumps(data).decode())
        return
    rows = data if isinstance(data, list) else [data]
    table = Table(*columns)
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    out.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


@control_app.command("serve")
def control_serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="Path to bastion.yaml.")],
) -> None:
    """Serve the admin API until Ctrl-C (tokens: the authorization server's, after MFA)."""
    cfg = load(config)
    from bastion.control.serve import control_settings, serve_control

    control_settings(cfg)  # a config problem fails here, before anything is opened
    run(serve_control(cfg))


APP_COLUMNS = ("id", "name", "owner", "environment", "risk_class", "data_classification")


@apps_app.command("list")
def apps_list(
    url: UrlOpt = None, config: CfgOpt = None, token_file: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Applications you may see."""
    client = _client(url, config, token_file)
    _print(_call(client, lambda c: c.pages("/applications")), as_json, APP_COLUMNS)


@apps_app.command("show")
def apps_show(
    app_id: Annotated[str, typer.Argument(help="The application id.")],
    url: UrlOpt = None,
    config: CfgOpt = None,
    token_file: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One application."""
    client = _client(url, config, token_file)
    data = _call(client, lambda c: c.call("GET", f"/applications/{app_id}"))
    _print(data, as_json, (*APP_COLUMNS, "contact", "allowed_scopes"))


@apps_app.command("create")
def apps_create(
    app_id: Annotated[str, typer.Argument(help="Id: a-z, 0-9 and . _ - (the API keys' client).")],
    name: Annotated[str, typer.Option(help="Display name.")],
    owner: Annotated[str, typer.Option(help="Owning team or user (developers of it manage keys).")],
    contact: Annotated[str, typer.Option(help="Who to call about it.")],
    environment: Annotated[str, typer.Option(help="production, staging, development or test.")],
    risk_class: Annotated[str, typer.Option(help="public, partner or internal.")],
    data_classification: Annotated[str, typer.Option(help="public, internal or confidential.")],
    scope: Annotated[list[str] | None, typer.Option(help="An allowed scope (repeat).")] = None,
    url: UrlOpt = None,
    config: CfgOpt = None,
    token_file: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register an application."""
    body = {
        "id": app_id,
        "name": name,
        "owner": owner,
        "contact": contact,
        "environment": environment,
        "risk_class": risk_class,
        "data_classification": data_classification,
        "allowed_scopes": scope or [],
    }
    client = _client(url, config, token_file)
    data = _call(client, lambda c: c.call("POST", "/applications", body=body))
    _print(data, as_json, APP_COLUMNS)


USER_COLUMNS = ("id", "username", "roles", "disabled", "mfa_enrolled")


@users_app.command("list")
def users_list(
    url: UrlOpt = None, config: CfgOpt = None, token_file: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Users of the authorization server."""
    client = _client(url, config, token_file)
    _print(_call(client, lambda c: c.pages("/users")), as_json, USER_COLUMNS)


@users_app.command("invite")
def users_invite(
    username: Annotated[str, typer.Argument(help="The new user's username.")],
    role: Annotated[list[str] | None, typer.Option(help="An admin role to hold (repeat).")] = None,
    email: Annotated[str | None, typer.Option(help="E-mail address.")] = None,
    url: UrlOpt = None,
    config: CfgOpt = None,
    token_file: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a user; its one-time password is printed once (hand it over out of band)."""
    body: dict[str, Any] = {"username": username, "roles": role or []}
    if email:
        body["email"] = email
    client = _client(url, config, token_file)
    data = _call(client, lambda c: c.call("POST", "/users", body=body))
    if as_json:
        typer.echo(orjson.dumps(data).decode())
        return
    _print(data, False, USER_COLUMNS)
    out.print(
        f"one-time password (shown once): {data['one_time_password']}",
        highlight=False,
        markup=False,
    )
    out.print("the user must replace it at the first login", highlight=False)


def _user_action(action: str, user_id: str, reason: str, client: AdminClient) -> Any:
    return _call(
        client, lambda c: c.call("POST", f"/users/{user_id}/{action}", body={"reason": reason})
    )


@users_app.command("enable")
def users_enable(
    user_id: Annotated[str, typer.Argument(help="The user's id.")],
    reason: ReasonOpt = "",
    url: UrlOpt = None,
    config: CfgOpt = None,
    token_file: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Lift an administrator's lock."""
    data = _user_action("enable", user_id, reason, _client(url, config, token_file))
    _print(data, as_json, USER_COLUMNS)


@users_app.command("reset-mfa")
def users_reset_mfa(
    user_id: Annotated[str, typer.Argument(help="The user's id.")],
    reason: ReasonOpt = "",
    url: UrlOpt = None,
    config: CfgOpt = None,
    token_file: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove a user's TOTP and recovery codes; they enrol again at the next login."""
    data = _user_action("reset-mfa", user_id, reason, _client(url, config, token_file))
    _print(data, as_json, USER_COLUMNS)


@users_app.command("roles")
def users_roles(
    user_id: Annotated[str, typer.Argument(help="The user's id.")],
    role: Annotated[list[str] | None, typer.Option(help="An admin role to hold (repeat).")] = None,
    url: UrlOpt = None,
    config: CfgOpt = None,
    token_file: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace a user's admin roles (none given: take them all away)."""
    client = _client(url, config, token_file)
    data = _call(
        client, lambda c: c.call("PUT", f"/users/{user_id}/roles", body={"roles": role or []})
    )
    _print(data, as_json, USER_COLUMNS)


@users_app.command("disable")
def users_disable(
    user_id: Annotated[str, typer.Argument(help="The user's id.")],
    reason: ReasonOpt = "",
    url: UrlOpt = None,
    config: CfgOpt = None,
    token_file: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Lock a user out and revoke their refresh-token families."""
    data = _user_action("disable", user_id, reason, _client(url, config, token_file))
    _print(data, as_json, USER_COLUMNS)


@incident_app.command("revoke-app")
def incident_revoke_app(
    app_id: Annotated[str, typer.Argument(help="The application id.")],
    reason: ReasonOpt = "",
    url: UrlOpt = None,
    config: CfgOpt = None,
    token_file: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke every API key and token of an application, on every node, now."""
    client = _client(url, config, token_file)
    body = {"application": app_id, "reason": reason}
    data = _call(client, lambda c: c.call("POST", "/incidents/revoke-application", body=body))
    if as_json:
        typer.echo(orjson.dumps(data).decode())
        return
    keys = data["revoked_keys"]
    families = data.get("revoked_refresh_families", 0)
    out.print(
        f"revoked {len(keys)} key(s) of {app_id}, {families} refresh-token famil(ies) issued to"
        " it, and its tokens issued until now",
        highlight=False,
        markup=False,
    )


@incident_app.command("block-ip")
def incident_block_ip(
    cidr: Annotated[str, typer.Argument(help="An address (203.0.113.7) or network (/24).")],
    duration: Annotated[str, typer.Option("--for", help="How long, e.g. 15m, 1h, 7d.")] = "1h",
    reason: ReasonOpt = "",
    url: UrlOpt = None,
    config: CfgOpt = None,
    token_file: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Block an address or network on every node for a duration."""
    try:
        seconds = int(parse_duration(duration))
    except ValueError as exc:
        raise CliFailure(f"--for: {exc}", 2) from None
    client = _client(url, config, token_file)
    body = {"cidr": cidr, "duration_seconds": seconds, "reason": reason}
    data = _call(client, lambda c: c.call("POST", "/incidents/block-ip", body=body))
    _print(data, as_json, ("cidr", "until", "reason"))


@control_app.command("audit")
def audit(
    actor: Annotated[str | None, typer.Option(help="Only this actor (sub).")] = None,
    action: Annotated[
        str | None, typer.Option(help="Only this operation, e.g. keys.revoke.")
    ] = None,
    target: Annotated[str | None, typer.Option(help="Only this target id.")] = None,
    limit: Annotated[int, typer.Option(help="Newest entries to show (1-200).")] = 50,
    url: UrlOpt = None,
    config: CfgOpt = None,
    token_file: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The admin audit trail, newest first."""
    query = {"actor": actor, "action": action, "target": target, "limit": limit}
    client = _client(url, config, token_file)
    data = _call(client, lambda c: c.call("GET", "/audit", query=query))
    rows = [{**e, "target": f"{e['target']['type']}:{e['target']['id']}"} for e in data["items"]]
    _print(
        rows if not as_json else data["items"],
        as_json,
        ("id", "at", "actor", "action", "target", "outcome"),
    )
