"""``bastion keys create|list|rotate|revoke|report``: the API-key lifecycle from the shell.

Two modes, the same output (a rich table or ``--json``; a new key's secret printed once):

* **Admin API** (``--token-file FILE`` with ``--url URL`` or ``-c FILE`` for ``control.bind``,
  like ``bastion apps``): create, list, rotate and revoke call ``/admin/v1``'s key endpoints
  through :class:`bastion.control.client.AdminClient`, so the API's roles, MFA, step-up, the
  developer's own-application rule and its audit trail (actor: the token's user) apply. A
  401/403 says which of "not signed in", "MFA required", "step-up required" or "forbidden".
* **Store** (no ``--token-file``; ``report`` always): the operator's bootstrap path, for
  before any administrator can sign in. It needs the config and its secrets, so it is only for
  whoever runs the deployment.

The store mode opens the configured store and calls :class:`bastion.control.keys.KeyService`
(the admin API calls the same operations), so the rules are the same whichever way a key is
managed: the secret is printed once, on stdout only; rotation never extends the old key's life;
revocation is pushed to running gateways through Redis when ``cache`` is set, and otherwise
reaches them on their next change-feed poll. ``--json`` prints machine-readable output.

Every change (create, rotate, revoke) is also recorded in the admin audit trail
(``admin_audit``, append-only) with actor ``cli:<os user>``, action ``keys.create`` /
``keys.rotate`` / ``keys.revoke`` like the admin API's, and before/after of the key's public
shape: never a secret. The entry is written after the change committed; if that write fails,
the command still prints what it did (a new secret must not be lost) and exits 1 saying so.
"""

from __future__ import annotations

import datetime
import getpass
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

import httpx
import orjson
import typer
from rich.table import Table

from bastion.cli.common import CliFailure, ConfigOpt, JsonOpt, load, out, push, run, with_store
from bastion.config.model import BastionConfig
from bastion.config.types import parse_duration
from bastion.control.client import AdminApiError, AdminClient, admin_url, read_token_file
from bastion.control.keys import (
    DAY,
    LIVE_STATES,
    ApplicationContact,
    IssuedKey,
    KeyInvalid,
    KeyNotFound,
    KeyPolicy,
    KeyReport,
    KeyService,
    KeyView,
    Rotation,
    key_id_from,
)
from bastion.errors import BastionError, StoreError
from bastion.store import PostgresStore, SqliteStore
from bastion.store.base import Store

keys_app = typer.Typer(help="API keys: create, list, rotate, revoke, report.", no_args_is_help=True)

T = TypeVar("T")

KeyArg = Annotated[str, typer.Argument(help="Key id (<id> or bsk_<id>).")]
CfgOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="bastion.yaml: the store, or with --token-file its control.bind."
    ),
]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url", help="The admin API's base URL (with --token-file), e.g. https://h:9100."
    ),
]
TokenOpt = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        help="Admin token file (mode 0600): call the admin API instead of the store.",
        show_default=False,
    ),
]

#: Tests replace this with a factory of an ``httpx.ASGITransport`` over the admin API.
TRANSPORT: Callable[[], httpx.AsyncBaseTransport | None] = lambda: None  # noqa: E731


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(option: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(parse_duration(text))
    except ValueError as exc:
        raise CliFailure(f"{option}: {exc}", 2) from None


def _service(cfg: BastionConfig, store: Store) -> KeyService:
    """The key operations on ``store``, pushing changes to the nodes of ``cfg``."""
    if cfg.api_keys.pepper is None:
        raise CliFailure("api_keys.pepper is not set in the config: keys cannot be hashed", 2)

    async def publish(event: dict[str, Any]) -> None:
        await push(cfg, event)

    return KeyService(
        store,
        cfg.api_keys.pepper.get_secret_value().encode(),
        policy=KeyPolicy.from_config(cfg.api_keys),
        publish=publish,
    )


def _emit_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value).decode() + "\n")


def _row(view: KeyView) -> dict[str, Any]:
    """A key as the CLI prints it in JSON (``client_id`` kept for older scripts)."""
    return {**view.to_dict(), "client_id": view.client_id}


def _show_secret(issued: IssuedKey, what: str) -> None:
    key = issued.key
    out.print(
        f"{what} for application [bold]{key.client_id}[/bold] "
        f"(id {key.id}, expires {_iso(key.expires_at)}):",
        highlight=False,
    )
    out.print(issued.secret, highlight=False, soft_wrap=True, markup=False)
    out.print("[yellow]Store it now: it is shown only once and cannot be recovered.[/yellow]")


def _keys_table(views: list[KeyView] | tuple[KeyView, ...]) -> Table:
    table = Table(
        "id", "application", "name", "owner", "scopes", "created", "expires", "last used",
        "uses", "state",
    )  # fmt: skip
    for v in views:
        table.add_row(
            v.id,
            v.client_id,
            v.name,
            v.owner or "-",
            " ".join(v.scopes),
            _iso(v.created_at),
            _iso(v.expires_at),
            _iso(v.last_used_at),
            str(v.usage_count),
            v.state,
        )
    return table


@keys_app.command("create")
def keys_create(
    client: Annotated[str, typer.Option(help="Application (client) id; created if new.")],
    config: CfgOpt = None,
    scope: Annotated[list[str] | None, typer.Option(help="A scope (repeat for several).")] = None,
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
    owner: Annotated[
        str, typer.Option(help="Who answers for the key (store mode; the API takes the app's).")
    ] = "",
    ttl: Annotated[
        str | None,
        typer.Option(help="Lifetime, e.g. 90d (default api_keys.default_ttl, at most max_age)."),
    ] = None,
    url: UrlOpt = None,
    token_file: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key. The key is printed once and cannot be shown again. Through the admin
    API the application must exist already (`bastion apps create`)."""
    lifetime = _duration("--ttl", ttl)
    api = _admin(url, config, token_file)
    if api is not None:
        if owner:
            raise CliFailure(
                "--owner: not with --token-file (the admin API records the application's owner)",
                2,
            )
        body: dict[str, Any] = {"scopes": list(dict.fromkeys(scope or [])), "name": name}
        if lifetime is not None:
            body["expires_in_days"] = _whole_days("--ttl", lifetime)
        path = f"/applications/{quote(client, safe='')}/keys"
        data = _call_api(api, lambda c: c.call("POST", path, body=body), "create keys")
        issued, failed = _issued(data, "secret"), None
    else:
        cfg = _store_config(config)

        async def work(store: Store) -> tuple[IssuedKey, str | None]:
            issued = await _service(cfg, store).create(
                client,
                scopes=scope or [],
                name=name,
                owner=owner,
                ttl=lifetime,
                create_application=True,
            )
            failed = await _audit(store, "keys.create", issued.key.id, None, issued.key.to_dict())
            return issued, failed

        issued, failed = _run_keys(cfg, work)
    if as_json:
        _emit_json({**_row(issued.key), "key": issued.secret})
    else:
        _show_secret(issued, "API key")
    _audit_outcome(failed)


@keys_app.command("list")
def keys_list(
    config: CfgOpt = None,
    client: Annotated[str | None, typer.Option(help="Only this application's keys.")] = None,
    live: Annotated[bool, typer.Option("--live", help="Leave out revoked and expired keys.")] = (
        False
    ),
    url: UrlOpt = None,
    token_file: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List API keys with their state, last use and usage count (never their secrets). Through
    the admin API: the keys of the applications the token's user may see."""
    api = _admin(url, config, token_file)
    if api is not None:

        async def fetch(c: AdminClient) -> list[Any]:
            apps = (
                [client]
                if client is not None
                else [a["id"] for a in await c.pages("/applications")]
            )
            found: list[Any] = []
            for app_id in apps:
                found.extend(await c.pages(f"/applications/{quote(str(app_id), safe='')}/keys"))
            return found

        views = [_view(d) for d in _call_api(api, fetch, "list keys")]
        views.sort(key=lambda v: (v.created_at, v.id))
        if live:
            views = [v for v in views if v.state in LIVE_STATES]
    else:
        cfg = _store_config(config)

        async def work(store: Store) -> list[KeyView]:
            return await _service(cfg, store).list_keys(client, include_ended=not live)

        views = _run_keys(cfg, work)
    if as_json:
        _emit_json([_row(v) for v in views])
        return
    out.print(_keys_table(views))


@keys_app.command("rotate")
def keys_rotate(
    key_id: KeyArg,
    config: CfgOpt = None,
    grace: Annotated[
        str | None,
        typer.Option(help="How long the old key keeps working (default api_keys.rotation_grace)."),
    ] = None,
    ttl: Annotated[
        str | None, typer.Option(help="Lifetime of the new key (store mode only).")
    ] = None,
    url: UrlOpt = None,
    token_file: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue a successor of KEY_ID (printed once); the old key stops after the grace period,
    or at its own expiry if that comes first."""
    kid = _key_id(key_id)
    period, lifetime = _duration("--grace", grace), _duration("--ttl", ttl)
    api = _admin(url, config, token_file)
    if api is not None:
        if lifetime is not None:
            raise CliFailure("--ttl: not with --token-file (the admin API sets the new key's)", 2)
        body: dict[str, Any] = {}
        if period is not None:
            body["grace_days"] = _whole_days("--grace", period, minimum=0)
        data = _call_api(
            api,
            lambda c: c.call("POST", f"/keys/{kid}/rotate", body=body),
            "rotate keys",
            not_found="no such key",
        )
        rotation, failed = _rotation(data), None
    else:
        cfg = _store_config(config)

        async def work(store: Store) -> tuple[Rotation, str | None]:
            service = _service(cfg, store)
            before = await service.get(kid)
            rotation = await service.rotate(kid, grace=period, ttl=lifetime)
            after = {
                "successor": rotation.successor.key.to_dict(),
                "previous": rotation.previous.to_dict(),
            }
            failed = await _audit(store, "keys.rotate", kid, before.to_dict(), after)
            return rotation, failed

        rotation, failed = _run_keys(cfg, work)
    if as_json:
        _emit_json(
            {
                "successor": {**_row(rotation.successor.key), "key": rotation.successor.secret},
                "previous": _row(rotation.previous),
            }
        )
    else:
        _show_secret(rotation.successor, "New API key")
        out.print(
            f"the old key {kid} keeps working until {_iso(rotation.previous.expires_at)}",
            highlight=False,
        )
    _audit_outcome(failed)


@keys_app.command("revoke")
def keys_revoke(
    key_id: KeyArg,
    config: CfgOpt = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit trail).")] = "",
    url: UrlOpt = None,
    token_file: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke an API key at once: pushed to running gateways through Redis when `cache` is
    set, otherwise applied on their next change-feed poll."""
    kid = _key_id(key_id)
    api = _admin(url, config, token_file)
    if api is not None:
        body = {"reason": reason} if reason else {}
        data = _call_api(
            api,
            lambda c: c.call("POST", f"/keys/{kid}/revoke", body=body),
            "revoke keys",
            not_found=f"no active key with id {kid!r} (no such key)",
        )
        view, failed = _view(data), None
    else:
        cfg = _store_config(config)

        async def work(store: Store) -> tuple[KeyView, str | None]:
            service = _service(cfg, store)
            before = await service.get(kid)
            after = await service.revoke(kid)
            shown = {**after.to_dict(), "reason": reason}
            return after, await _audit(store, "keys.revoke", kid, before.to_dict(), shown)

        try:
            view, failed = _run_keys(cfg, work)
        except CliFailure as exc:
            raise CliFailure(f"no active key with id {kid!r} ({exc})", exc.code) from None
    if as_json:
        _emit_json(_row(view))
    else:
        out.print(f"revoked {kid}", highlight=False)
    _audit_outcome(failed)


@keys_app.command("report")
def keys_report(config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """Key hygiene: keys past api_keys.warn_age (default 90 days), keys unused for 30 days,
    keys without an owner, applications without a contact."""
    cfg = load(config)

    async def work(store: Store) -> KeyReport:
        service = _service(cfg, store)
        return await service.report(await _application_contacts(store))

    report = _run_keys(cfg, work)
    if as_json:
        _emit_json(report.to_dict())
        return
    warn_days = cfg.api_keys.warn_age / DAY
    sections: list[tuple[str, tuple[KeyView, ...]]] = [
        (f"Keys older than {warn_days:g} days (rotate them)", report.old_keys),
        ("Keys unused for 30 days (revoke them?)", report.unused_keys),
        ("Keys without an owner", report.keys_without_owner),
    ]
    for title, views in sections:
        out.print(f"[bold]{title}[/bold]: {len(views)}")
        if views:
            out.print(_keys_table(views))
    apps = report.applications_without_contact
    out.print(f"[bold]Applications without a contact[/bold]: {len(apps)}")
    for app_id in apps:
        out.print(f"  {app_id}", highlight=False, markup=False)


# -- admin-API mode ---------------------------------------------------------------------------


def _admin(url: str | None, config: Path | None, token_file: Path | None) -> AdminClient | None:
    """The admin API client when ``--token-file`` is given (None: store mode). The token file
    must be private (0600) and is checked before anything is sent; the URL is ``--url`` or the
    ``control.bind`` of ``-c FILE``."""
    if token_file is None:
        if url is not None:
            raise CliFailure("--url needs --token-file: the admin API is called with a token", 2)
        return None
    if url is None:
        if config is None:
            raise CliFailure("name the admin API with --url or -c FILE", 2)
        try:
            url = admin_url(getattr(load(config), "control", None))
        except ValueError as exc:
            raise CliFailure(str(exc), 2) from None
    try:
        token = read_token_file(token_file)
    except ValueError as exc:
        raise CliFailure(str(exc), 2) from None
    return AdminClient(url, token, transport=TRANSPORT())


def _store_config(config: Path | None) -> BastionConfig:
    if config is None:
        raise CliFailure("name the config with -c FILE (or call the admin API: --token-file)", 2)
    return load(config)


def _call_api(
    client: AdminClient,
    fn: Callable[[AdminClient], Awaitable[T]],
    what: str,
    *,
    not_found: str | None = None,
) -> T:
    """Run ``fn(client)``; a refusal becomes one line saying why (exit 2 for bad input)."""

    async def go() -> T:
        async with client:
            return await fn(client)

    try:
        return run(go())
    except AdminApiError as exc:
        raise _api_failure(exc, what, not_found) from None


def _api_failure(exc: AdminApiError, what: str, not_found: str | None) -> CliFailure:
    """The one line for a refusal of the admin API. 401s are told apart by their stable code,
    so the user knows whether to sign in, sign in with MFA, or sign in again (step-up)."""
    if exc.code == "admin.mfa_required":
        return CliFailure(
            "MFA required: the token was issued without a second factor; sign in again with MFA"
        )
    if exc.code == "admin.step_up_required":
        return CliFailure(
            "step-up required: this change needs a sign-in at most 10 minutes old; sign in again"
        )
    if exc.status == 401:
        return CliFailure(
            "not signed in: the admin API did not accept the token (expired, revoked or not "
            "an admin token); sign in again"
        )
    if exc.status == 403:
        return CliFailure(f"forbidden: your role may not {what}")
    if exc.status == 404:
        return CliFailure(not_found or exc.detail or "not found")
    if exc.status in (400, 422):
        return CliFailure(exc.detail or str(exc), 2)
    return CliFailure(str(exc))


def _view(data: Any) -> KeyView:
    """The admin API's JSON of a key as the view the store mode prints."""
    try:
        return KeyView(
            id=str(data["id"]),
            client_id=str(data["application"]),
            name=str(data.get("name") or ""),
            owner=str(data.get("owner") or ""),
            scopes=tuple(str(s) for s in data.get("scopes") or ()),
            created_at=float(data["created_at"]),
            expires_at=_opt_float(data.get("expires_at")),
            revoked_at=_opt_float(data.get("revoked_at")),
            last_used_at=_opt_float(data.get("last_used_at")),
            usage_count=int(data.get("usage_count") or 0),
            state=str(data["state"]),
            rotated_from=data.get("rotated_from"),
            replaced_by=data.get("replaced_by"),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise CliFailure("the admin API answered with an unexpected key shape") from None


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _issued(data: Any, field: str) -> IssuedKey:
    secret = data.get(field) if isinstance(data, dict) else None
    if not isinstance(secret, str) or not secret:
        raise CliFailure("the admin API answered without the new key's secret")
    return IssuedKey(_view(data), secret)


def _rotation(data: Any) -> Rotation:
    if not isinstance(data, dict):
        raise CliFailure("the admin API answered with an unexpected rotation shape")
    return Rotation(_issued(data.get("successor"), "secret"), _view(data.get("previous")))


def _whole_days(option: str, seconds: float, *, minimum: int = 1) -> int:
    """``seconds`` as the whole number of days the admin API takes (exit 2 otherwise)."""
    days = seconds / DAY
    if days != int(days) or days < minimum:
        raise CliFailure(f"{option}: the admin API takes whole days (e.g. {max(minimum, 1)}d)", 2)
    return int(days)


# -- plumbing ---------------------------------------------------------------------------------


def cli_actor() -> str:
    """``cli:<os user>``: who ran the command, as the audit trail records it."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a bare container)
        user = f"uid{os.getuid()}"
    return f"cli:{user}"[:256]


async def _audit(
    store: Store,
    action: str,
    key_id: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> str | None:
    """Append the change to the admin audit trail; None, or why it could not be written (the
    change itself is committed already and stays)."""
    from bastion.control.admin.records import AuditEntry
    from bastion.control.admin.repo import control_repo
    from bastion.control.admin.service import scrub

    entry = AuditEntry(
        at=time.time(),
        actor=cli_actor(),
        action=action,
        target_type="api_key",
        target_id=key_id,
        outcome="success",
        before=scrub(before),
        after=scrub(after),
    )
    try:
        await control_repo(store).append_audit(entry)
    except (StoreError, TypeError) as exc:
        return str(exc) or type(exc).__name__
    return None


def _audit_outcome(failed: str | None) -> None:
    if failed is not None:
        raise CliFailure(f"the change was made, but its audit entry was not written: {failed}")


def _key_id(text: str) -> str:
    try:
        return key_id_from(text)
    except KeyInvalid:
        raise CliFailure("not an API key id (expected <id> or bsk_<id>)", 2) from None


def _run_keys(cfg: BastionConfig, work: Callable[[Store], Awaitable[T]]) -> T:
    """Run ``work(store)``; a key error becomes one line (exit 1, or 2 for bad input)."""
    try:
        return run(with_store(cfg, work))
    except KeyInvalid as exc:
        raise CliFailure(exc.detail or exc.title, 2) from None
    except KeyNotFound:
        raise CliFailure("no such key") from None
    except BastionError as exc:
        if exc.code.startswith("api_keys."):
            raise CliFailure(exc.detail or exc.title) from None
        raise


async def _application_contacts(store: Store) -> dict[str, ApplicationContact]:
    """Owners and contacts of the applications the admin API keeps (``control_applications``,
    schema version 7); empty where that table does not exist, so every application is
    reported as lacking a contact."""
    if isinstance(store, SqliteStore):

        def q(conn: Any) -> list[tuple[str, str, str]]:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'control_applications'"
            ).fetchone()
            if found is None:
                return []
            rows = conn.execute("SELECT client_id, owner, contact FROM control_applications")
            return [tuple(r) for r in rows]

        rows = await store.read("application_contacts", q)
    elif isinstance(store, PostgresStore):

        async def pq(conn: Any) -> list[tuple[str, str, str]]:
            if await conn.fetchval("SELECT to_regclass('control_applications')") is None:
                return []
            rows = await conn.fetch("SELECT client_id, owner, contact FROM control_applications")
            return [tuple(r) for r in rows]

        rows = await store.read("application_contacts", pq)
    else:
        rows = []
    return {
        cid: ApplicationContact(cid, owner or "", contact or "") for cid, owner, contact in rows
    }
