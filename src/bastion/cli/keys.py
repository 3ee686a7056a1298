"""``bastion keys create|list|rotate|revoke|report``: the API-key lifecycle from the shell.

Every command opens the configured store and calls :class:`bastion.control.keys.KeyService`
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
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.table import Table

from bastion.cli.common import CliFailure, ConfigOpt, JsonOpt, load, out, push, run, with_store
from bastion.config.model import BastionConfig
from bastion.config.types import parse_duration
from bastion.control.keys import (
    DAY,
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
    config: ConfigOpt,
    client: Annotated[str, typer.Option(help="Application (client) id; created if new.")],
    scope: Annotated[list[str] | None, typer.Option(help="A scope (repeat for several).")] = None,
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
    owner: Annotated[str, typer.Option(help="Who answers for the key (user or e-mail).")] = "",
    ttl: Annotated[
        str | None,
        typer.Option(help="Lifetime, e.g. 90d (default api_keys.default_ttl, at most max_age)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key. The key is printed once and cannot be shown again."""
    cfg = load(config)
    lifetime = _duration("--ttl", ttl)

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
    config: ConfigOpt,
    client: Annotated[str | None, typer.Option(help="Only this application's keys.")] = None,
    live: Annotated[bool, typer.Option("--live", help="Leave out revoked and expired keys.")] = (
        False
    ),
    as_json: JsonOpt = False,
) -> None:
    """List API keys with their state, last use and usage count (never their secrets)."""
    cfg = load(config)

    async def work(store: Store) -> list[KeyView]:
        return await _service(cfg, store).list_keys(client, include_ended=not live)

    views = _run_keys(cfg, work)
    if as_json:
        _emit_json([_row(v) for v in views])
        return
    out.print(_keys_table(views))


@keys_app.command("rotate")
def keys_rotate(
    config: ConfigOpt,
    key_id: KeyArg,
    grace: Annotated[
        str | None,
        typer.Option(help="How long the old key keeps working (default api_keys.rotation_grace)."),
    ] = None,
    ttl: Annotated[str | None, typer.Option(help="Lifetime of the new key.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue a successor of KEY_ID (printed once); the old key stops after the grace period,
    or at its own expiry if that comes first."""
    cfg = load(config)
    kid = _key_id(key_id)
    period, lifetime = _duration("--grace", grace), _duration("--ttl", ttl)

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
def keys_revoke(config: ConfigOpt, key_id: KeyArg) -> None:
    """Revoke an API key at once: pushed to running gateways through Redis when `cache` is
    set, otherwise applied on their next change-feed poll."""
    cfg = load(config)
    kid = _key_id(key_id)

    async def work(store: Store) -> str | None:
        service = _service(cfg, store)
        before = await service.get(kid)
        after = await service.revoke(kid)
        return await _audit(store, "keys.revoke", kid, before.to_dict(), after.to_dict())

    try:
        failed = _run_keys(cfg, work)
    except CliFailure as exc:
        raise CliFailure(f"no active key with id {kid!r} ({exc})", exc.code) from None
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
