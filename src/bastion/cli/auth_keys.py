"""``bastion auth keys``: list the authorization server's signing keys and rotate them.

``list`` only reads the store (no key-encryption key or token needed). ``rotate`` opens the key
store the config names and changes the key set through the same compare-and-swap the servers
use; running servers pick the change up on their next refresh (``auth.keys.refresh_interval``).
"""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from bastion.authserver.keys.config import KeysConfig
from bastion.authserver.keys.lifecycle import KeyRecord
from bastion.authserver.keys.repo import key_repo
from bastion.authserver.keys.signing import open_key_manager
from bastion.cli.common import CliFailure, ConfigOpt, JsonOpt, load, out, run, with_store
from bastion.config.model import BastionConfig
from bastion.store.base import Store

keys_app = typer.Typer(
    help="Signing keys of the authorization server: list, rotate.", no_args_is_help=True
)


def _auth_settings(cfg: BastionConfig) -> tuple[KeysConfig, float]:
    """The ``auth.keys`` section and the longest token lifetime; CliFailure without ``auth``."""
    auth = cfg.auth
    if auth is None:
        raise CliFailure("the config has no 'auth' section (authorization server)", 2)
    return auth.keys, max(auth.access_token_ttl, auth.id_token_ttl)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _as_json(rec: KeyRecord) -> dict[str, Any]:
    """A record without its material (sealed or not, it is nobody's business here)."""
    return {
        "kid": rec.kid,
        "alg": rec.alg,
        "store": rec.store,
        "state": rec.state,
        "reason": rec.reason,
        "created_at": rec.created_at,
        "activate_at": rec.activate_at,
        "activated_at": rec.activated_at,
        "retired_at": rec.retired_at,
        "remove_at": rec.remove_at,
        "removed_at": rec.removed_at,
    }


@keys_app.command("list")
def keys_list(
    config: ConfigOpt,
    json: JsonOpt = False,
    all_keys: Annotated[
        bool, typer.Option("--all", help="Include retired keys.", show_default=False)
    ] = False,
) -> None:
    """List signing keys: published ones (pending, active, retiring), or all with --all."""
    cfg = load(config)
    _auth_settings(cfg)

    async def go(store: Store) -> list[KeyRecord]:
        _generation, records = await key_repo(store).load()
        return records

    records = run(with_store(cfg, go))
    if not all_keys:
        records = [r for r in records if r.state != "retired"]
    if json:
        out.print_json(orjson.dumps([_as_json(r) for r in records]).decode())
        return
    table = Table("kid", "alg", "store", "state", "created", "signs from", "unpublished", "reason")
    for r in records:
        signs_from = r.activated_at if r.activated_at is not None else r.activate_at
        leaves = r.removed_at if r.removed_at is not None else r.remove_at
        table.add_row(
            r.kid,
            r.alg,
            r.store,
            r.state,
            _when(r.created_at),
            _when(signs_from),
            _when(leaves),
            r.reason,
        )
    out.print(table)


@keys_app.command("rotate")
def keys_rotate(
    config: ConfigOpt,
    emergency: Annotated[
        bool,
        typer.Option(
            "--emergency",
            help="The key is compromised: withdraw every published key now and sign with a "
            "fresh one at once. Tokens signed by the old keys stop validating.",
        ),
    ] = False,
) -> None:
    """Rotate the signing key: orderly (published now, signs after two JWKS cache lifetimes)
    or --emergency."""
    cfg = load(config)
    keys_cfg, lifetime = _auth_settings(cfg)

    async def go(store: Store) -> tuple[str, float]:
        manager = await open_key_manager(keys_cfg, store, token_max_lifetime=lifetime)
        try:
            kid = await manager.rotate(emergency=emergency)
            records = await manager.records()
        finally:
            manager.close()
        rec = next(r for r in records if r.kid == kid)
        return kid, rec.activated_at if rec.activated_at is not None else rec.activate_at

    kid, signs_from = run(with_store(cfg, go))
    if emergency:
        out.print(
            f"new signing key {kid} signs now; every earlier key is withdrawn from the JWKS "
            "and tokens it signed no longer validate",
            highlight=False,
            soft_wrap=True,
        )
    else:
        out.print(
            f"new signing key {kid} is published; it signs from {_when(signs_from)}",
            highlight=False,
            soft_wrap=True,
        )
