"""``bastion auth``: run the authorization server and manage its clients; ``keys`` and ``users``
are mounted from their own modules."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from bastion.authserver.config import AuthConfig
from bastion.authserver.oauth.client_auth import new_client_secret, rotate_secrets, secret_record
from bastion.authserver.oauth.records import OAuthClient
from bastion.authserver.oauth.registration import RegistrationError, new_client
from bastion.authserver.oauth.repo import open_oauth_repo
from bastion.cli.auth_keys import keys_app
from bastion.cli.auth_users import users_app
from bastion.cli.common import CliFailure, ConfigOpt, JsonOpt, load, out, run, with_store
from bastion.config.model import BastionConfig
from bastion.config.types import parse_duration
from bastion.store.base import Store

auth_app = typer.Typer(
    help="The authorization server: serve, clients, signing keys, users.", no_args_is_help=True
)
clients_app = typer.Typer(
    help="OAuth clients: create, list, rotate-secret, set-introspect, delete.",
    no_args_is_help=True,
)
auth_app.add_typer(clients_app, name="clients")
auth_app.add_typer(keys_app, name="keys")
auth_app.add_typer(users_app, name="users")


def _auth(cfg: BastionConfig) -> AuthConfig:
    if cfg.auth is None:
        raise CliFailure("the config has no `auth` section", 2)
    return cfg.auth


@auth_app.command("serve")
def serve(config: ConfigOpt) -> None:
    """Run the authorization server alone (bastion up runs it beside the gateway)."""
    from bastion.authserver.serve import run as run_server

    cfg = load(config)
    _auth(cfg)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    run_server(cfg)


def _row(c: OAuthClient, now: float) -> dict[str, Any]:
    return {
        "id": c.id,
        "name": c.name,
        "auth_method": c.auth_method,
        "grant_types": list(c.grant_types),
        "scopes": list(c.scopes),
        "redirect_uris": list(c.redirect_uris),
        "audiences": list(c.audiences),
        "introspect": c.introspect,
        "secrets": [
            {"created_at": s.created_at, "expires_at": s.expires_at}
            for s in c.secrets
            if s.valid(now)
        ],
        "created_at": c.created_at,
    }


@clients_app.command("create")
def clients_create(
    config: ConfigOpt,
    client_id: Annotated[str, typer.Option("--id", help="Client id (default: a random one).")] = "",
    name: Annotated[str, typer.Option(help="A label.")] = "",
    auth_method: Annotated[
        str,
        typer.Option(
            help="client_secret_basic, client_secret_post, private_key_jwt or none (public)."
        ),
    ] = "client_secret_basic",
    grant: Annotated[
        list[str] | None,
        typer.Option(
            help="Grant type (repeat): client_credentials (default), "
            "authorization_code, refresh_token."
        ),
    ] = None,
    scope: Annotated[list[str] | None, typer.Option(help="An allowed scope (repeat).")] = None,
    redirect_uri: Annotated[
        list[str] | None, typer.Option(help="An exact redirect URI (repeat).")
    ] = None,
    audience: Annotated[
        list[str] | None, typer.Option(help="`aud` of its access tokens (repeat).")
    ] = None,
    jwks: Annotated[
        Path | None, typer.Option(help="JWKS file of a private_key_jwt client (public keys).")
    ] = None,
    introspect: Annotated[
        bool,
        typer.Option("--introspect", help="May call /introspect (RFC 7662): for resource servers."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Register a client. Its secret is printed once and cannot be shown again."""
    import secrets as _secrets

    cfg = load(config)
    auth = _auth(cfg)
    keyset = None
    if jwks is not None:
        try:
            keyset = orjson.loads(jwks.read_bytes())
        except (OSError, ValueError) as exc:
            raise CliFailure(f"--jwks: cannot read a JSON file: {exc}", 2) from None
    try:
        client, secret = new_client(
            client_id=client_id or "c_" + _secrets.token_hex(8),
            name=name,
            auth_method=auth_method,
            grant_types=tuple(grant or ["client_credentials"]),
            scopes=tuple(scope or []),
            redirect_uris=tuple(redirect_uri or []),
            audiences=tuple(audience or []),
            jwks=keyset,
            pepper=auth.client_secret_pepper.get_secret_value().encode(),
            now=time.time(),
            introspect=introspect,
        )
    except RegistrationError as exc:
        raise CliFailure(str(exc), 2) from None

    async def work(store: Store) -> None:
        repo = open_oauth_repo(store)
        if await repo.get_client(client.id) is not None:
            raise CliFailure(f"a client with id {client.id!r} exists")
        await repo.put_client(client)

    run(with_store(cfg, work))
    if as_json:
        doc = _row(client, time.time())
        doc["client_secret"] = secret
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
        return
    out.print(f"client [bold]{client.id}[/bold] ({client.auth_method}) registered")
    if secret:
        out.print(secret, highlight=False, soft_wrap=True)
        out.print("[yellow]Store the secret now: it is shown only once.[/yellow]")


@clients_app.command("list")
def clients_list(config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """List clients (never their secrets)."""
    cfg = load(config)
    _auth(cfg)

    async def work(store: Store) -> list[OAuthClient]:
        return await open_oauth_repo(store).list_clients()

    now = time.time()
    rows = [_row(c, now) for c in run(with_store(cfg, work))]
    if as_json:
        sys.stdout.write(orjson.dumps(rows).decode() + "\n")
        return
    table = Table("id", "auth", "grants", "scopes", "audiences", "introspect", "secrets")
    for r in rows:
        table.add_row(
            r["id"],
            r["auth_method"],
            " ".join(r["grant_types"]),
            " ".join(r["scopes"]),
            " ".join(r["audiences"]),
            "yes" if r["introspect"] else "no",
            str(len(r["secrets"])),
        )
    out.print(table)


@clients_app.command("rotate-secret")
def clients_rotate_secret(
    config: ConfigOpt,
    client_id: Annotated[str, typer.Argument(help="Client id.")],
    overlap: Annotated[
        str, typer.Option(help="How long the old secret keeps working, e.g. 1d; 0: not at all.")
    ] = "1d",
    as_json: JsonOpt = False,
) -> None:
    """Give a client a new secret; the old one works for ``--overlap`` more (at most two)."""
    cfg = load(config)
    auth = _auth(cfg)
    try:
        window = parse_duration(overlap)
    except ValueError as exc:
        raise CliFailure(f"--overlap: {exc}", 2) from None
    secret = new_client_secret()
    now = time.time()
    record = secret_record(auth.client_secret_pepper.get_secret_value().encode(), secret, now)

    async def work(store: Store) -> None:
        repo = open_oauth_repo(store)
        client = await repo.get_client(client_id)
        if client is None or not client.auth_method.startswith("client_secret"):
            raise CliFailure(f"no client with a secret has id {client_id!r}")
        await repo.set_client_secrets(
            client_id, rotate_secrets(client.secrets, record, window, now), now
        )

    run(with_store(cfg, work))
    if as_json:
        sys.stdout.write(
            orjson.dumps({"id": client_id, "client_secret": secret, "overlap": window}).decode()
            + "\n"
        )
        return
    out.print(secret, highlight=False, soft_wrap=True)
    out.print(
        f"[yellow]New secret for {client_id}; the previous one stops in {overlap}.[/yellow]",
        highlight=False,
    )


@clients_app.command("set-introspect")
def clients_set_introspect(
    config: ConfigOpt,
    client_id: Annotated[str, typer.Argument(help="Client id.")],
    allow: Annotated[
        bool, typer.Option("--allow/--deny", help="Grant or withdraw the permission.")
    ] = True,
) -> None:
    """Allow a client (a resource server) to call /introspect, or withdraw it (running servers
    notice within ``auth.client_cache_ttl``)."""
    cfg = load(config)
    _auth(cfg)

    async def work(store: Store) -> None:
        repo = open_oauth_repo(store)
        client = await repo.get_client(client_id)
        if client is None:
            raise CliFailure(f"no client with id {client_id!r}")
        if allow and client.public:
            raise CliFailure("a public client (auth method none) cannot introspect", 2)
        await repo.set_client_introspect(client_id, allow, time.time())

    run(with_store(cfg, work))
    out.print(f"{client_id} {'may' if allow else 'may not'} introspect", highlight=False)


@clients_app.command("delete")
def clients_delete(
    config: ConfigOpt, client_id: Annotated[str, typer.Argument(help="Client id.")]
) -> None:
    """Delete a client and revoke its refresh tokens (access tokens end within their lifetime;
    running servers forget the client within ``auth.client_cache_ttl``)."""
    cfg = load(config)
    _auth(cfg)

    async def work(store: Store) -> bool:
        return await open_oauth_repo(store).delete_client(client_id, time.time())

    if not run(with_store(cfg, work)):
        raise CliFailure(f"no client with id {client_id!r}")
    out.print(f"deleted {client_id}")
