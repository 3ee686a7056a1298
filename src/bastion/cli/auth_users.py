"""``bastion auth users``: create, list, lock, unlock users and reset their MFA.

Passwords are read from a hidden prompt (asked twice) or, with ``--password-stdin``, from the
first line of standard input — never from the command line, where ``ps`` and shell history
would keep them. Nothing secret is printed.

``lock`` ends the user's login sessions at once (sessions live in the store), revokes the
user's refresh-token families and the last access token of each (stored, so every gateway node
learns it from the change feed, and pushed through Redis when one is configured), then runs
any further hooks registered in :data:`DISABLE_HOOKS`.
"""

from __future__ import annotations

import datetime
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from bastion.authserver.users import UsersConfig, open_user_service
from bastion.authserver.users.model import UserRecord
from bastion.authserver.users.repo import UserExists
from bastion.authserver.users.service import AccountError, UserService
from bastion.cli.common import CliFailure, ConfigOpt, JsonOpt, load, out, push, run, with_store
from bastion.config.model import BastionConfig
from bastion.store.base import Revocation, Store
from bastion.store.memory import revocation_change

users_app = typer.Typer(
    help="Users of the authorization server: create, list, lock, unlock, reset-mfa.",
    no_args_is_help=True,
)

#: Factories of further ``on_disable`` hooks for the CLI's user service: ``factory(config,
#: store)`` returns a coroutine function of the user id.
DISABLE_HOOKS: list[Callable[[BastionConfig, Store], Callable[[str], Awaitable[None]]]] = []

UsernameArg = Annotated[str, typer.Argument(help="The user's username.")]


def _settings(cfg: BastionConfig) -> tuple[UsersConfig, str]:
    """``auth.users`` and ``auth.issuer``; CliFailure (exit 2) without an ``auth`` section."""
    auth: Any = getattr(cfg, "auth", None)
    if auth is None:
        raise CliFailure("the config has no 'auth' section (authorization server)", 2)
    users: UsersConfig = auth.users
    return users, str(auth.issuer)


def _revoke_tokens(
    cfg: BastionConfig, store: Store, service: UserService, issuer: str
) -> Callable[[str], Awaitable[None]]:
    """The CLI's own ``on_disable`` hook: what the running server does for a disabled user
    (revoke every refresh family and its last access token), done from this process."""

    async def hook(user_id: str) -> None:
        from bastion.authserver.oauth.repo import open_oauth_repo

        now = service.clock.now()
        families = await open_oauth_repo(store).revoke_subject_families(user_id, now, "user")
        for family in families:
            if not family.access_jti or not family.access_exp or family.access_exp <= now:
                continue
            rev = Revocation(
                kind="jti",
                value=family.access_jti,
                issuer=issuer,
                not_before=None,
                expires_at=family.access_exp,
                created_at=now,
            )
            await store.add_revocation(rev)
            kind, payload = revocation_change(rev)
            await push(cfg, {**payload, "type": kind})
        out.print(f"revoked {len(families)} refresh-token families", highlight=False, markup=False)

    return hook


async def _service(cfg: BastionConfig, store: Store) -> UserService:
    users_cfg, issuer = _settings(cfg)
    service = await open_user_service(users_cfg, store, issuer=issuer)
    service.on_disable.append(_revoke_tokens(cfg, store, service, issuer))
    service.on_disable.extend(factory(cfg, store) for factory in DISABLE_HOOKS)
    return service


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _state(user: UserRecord, now: float) -> str:
    if user.disabled:
        return "locked (admin)"
    if user.locked_until is not None and user.locked_until > now:
        return f"locked until {_when(user.locked_until)}"
    return "active"


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        if not password:
            raise CliFailure("no password on standard input", 2)
        return password
    value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


async def _require(service: UserService, username: str) -> UserRecord:
    user = await service.find_user(username)
    if user is None:
        raise CliFailure(f"no user {username!r}")
    return user


PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from the first line of standard input."
    ),
]


@users_app.command("create")
def users_create(
    config: ConfigOpt,
    username: UsernameArg,
    email: Annotated[str | None, typer.Option(help="E-mail address.")] = None,
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    role: Annotated[
        list[str] | None,
        typer.Option(
            "--role",
            help="A role (repeatable). Roles in auth.users."
            "mfa_required_roles must enrol TOTP at their first login.",
        ),
    ] = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Create a user. The password is asked for (or read from stdin), never taken from argv."""
    cfg = load(config)
    _settings(cfg)
    password = _read_password(password_stdin)

    async def go(store: Store) -> tuple[UserRecord, bool]:
        service = await _service(cfg, store)
        try:
            user = await service.create_user(
                username, password, email=email, name=name, roles=tuple(role or ())
            )
        except AccountError as exc:
            raise CliFailure(str(exc), 2) from None
        except UserExists:
            raise CliFailure(f"a user {username!r} exists already") from None
        return user, service.mfa_required(user.roles)

    user, mfa = run(with_store(cfg, go))
    out.print(f"created user {user.username} (id {user.id})", highlight=False, markup=False)
    if mfa:
        out.print("TOTP enrolment is required at the first login", highlight=False, markup=False)


@users_app.command("set-password")
def users_set_password(
    config: ConfigOpt, username: UsernameArg, password_stdin: PasswordStdin = False
) -> None:
    """Set a new password; the user's sessions end."""
    cfg = load(config)
    _settings(cfg)
    password = _read_password(password_stdin)

    async def go(store: Store) -> None:
        service = await _service(cfg, store)
        user = await _require(service, username)
        try:
            await service.set_password(user.id, password)
        except AccountError as exc:
            raise CliFailure(str(exc), 2) from None

    run(with_store(cfg, go))
    out.print(f"password of {username} changed", highlight=False, markup=False)


@users_app.command("reset-mfa")
def users_reset_mfa(config: ConfigOpt, username: UsernameArg) -> None:
    """Remove the user's TOTP and recovery codes (a lost device); the user's sessions end."""
    cfg = load(config)

    async def go(store: Store) -> None:
        service = await _service(cfg, store)
        user = await _require(service, username)
        await service.reset_mfa(user.id)

    run(with_store(cfg, go))
    out.print(f"MFA of {username} reset", highlight=False, markup=False)


@users_app.command("lock")
def users_lock(config: ConfigOpt, username: UsernameArg) -> None:
    """Lock the user out until unlocked: no login, sessions end, on_disable hooks run."""
    cfg = load(config)

    async def go(store: Store) -> None:
        service = await _service(cfg, store)
        user = await _require(service, username)
        await service.lock(user.id)

    run(with_store(cfg, go))
    out.print(f"{username} locked", highlight=False, markup=False)


@users_app.command("unlock")
def users_unlock(config: ConfigOpt, username: UsernameArg) -> None:
    """Lift an administrator's lock and any lockout after failed logins."""
    cfg = load(config)

    async def go(store: Store) -> None:
        service = await _service(cfg, store)
        user = await _require(service, username)
        await service.unlock(user.id)

    run(with_store(cfg, go))
    out.print(f"{username} unlocked", highlight=False, markup=False)


@users_app.command("list")
def users_list(config: ConfigOpt, json: JsonOpt = False) -> None:
    """List users: roles, MFA, lock state (never a hash or a secret)."""
    cfg = load(config)

    async def go(store: Store) -> tuple[list[UserRecord], float]:
        service = await _service(cfg, store)
        return await service.list_users(), service.clock.now()

    users, now = run(with_store(cfg, go))
    if json:
        rows = [
            {
                "id": u.id,
                "username": u.username,
                "email": u.email,
                "name": u.name,
                "roles": list(u.roles),
                "mfa": u.totp_secret is not None,
                "disabled": u.disabled,
                "locked_until": u.locked_until if u.locked(now) and not u.disabled else None,
                "created_at": u.created_at,
            }
            for u in users
        ]
        out.print_json(orjson.dumps(rows).decode())
        return
    table = Table("username", "id", "roles", "mfa", "state", "email", "created")
    for u in users:
        table.add_row(
            u.username,
            u.id,
            ",".join(u.roles),
            "totp" if u.totp_secret else "-",
            _state(u, now),
            u.email or "",
            _when(u.created_at),
        )
    out.print(table)
