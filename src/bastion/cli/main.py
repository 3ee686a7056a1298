"""The ``bastion`` command.

Errors print one clear line (or one line per config problem) and exit non-zero: 2 for usage
and configuration errors, 1 for everything else. No traceback unless ``BASTION_DEBUG=1``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.auth import auth_app
from bastion.cli.common import (
    CliFailure,
    ConfigOpt,
    err,
    load,
    out,
    push,
    run,
    with_store,
)
from bastion.cli.control import apps_app, control_app, incident_app, users_app
from bastion.cli.ip import ip_app
from bastion.cli.keys import keys_app
from bastion.cli.scan import scan as scan_command
from bastion.config.check import check_config
from bastion.config.model import gateway_problems
from bastion.errors import BastionError, ConfigError
from bastion.store import upgrade_store
from bastion.store.base import Store

app = typer.Typer(
    name="bastion",
    help="Bastion: a layered security foundation in front of SaaS APIs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Validate configuration.", no_args_is_help=True)
db_app = typer.Typer(help="The state store's schema.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(ip_app, name="ip")
app.add_typer(control_app, name="control")
app.add_typer(apps_app, name="apps")  # aliases of `bastion control apps|users|incident`
app.add_typer(users_app, name="users")
app.add_typer(incident_app, name="incident")
app.add_typer(auth_app, name="auth")
app.command("scan")(scan_command)


# -- config -------------------------------------------------------------------------------------
@config_app.command("check")
def config_check(
    config: ConfigOpt,
    strict: Annotated[bool, typer.Option(help="Exit 1 when there are warnings.")] = False,
) -> None:
    """Validate FILE without starting anything; print errors and dangerous settings."""
    cfg = load(config)
    problems = gateway_problems(cfg)
    if problems:
        raise ConfigError(problems)
    findings = check_config(cfg)
    for f in findings:
        err.print(f"[yellow]warning[/yellow] {f}", highlight=False, soft_wrap=True)
    out.print(
        f"{config}: valid ({len(cfg.routes)} routes, {len(findings)} warnings)", highlight=False
    )
    if strict and findings:
        raise typer.Exit(1)


@config_app.command("push")
def config_push(config: ConfigOpt) -> None:
    """Tell every running node to reload its config file now (after deploying FILE to each
    host). FILE is validated first; nothing is announced when it is invalid."""
    from bastion.gateway.reload import file_digest

    cfg = load(config)
    problems = gateway_problems(cfg)
    if problems:
        raise ConfigError(problems)
    digest, at = file_digest(config), time.time()

    async def work(store: Store) -> None:
        await store.announce("config.changed", {"digest": digest, "at": at}, at)
        await push(cfg, {"type": "config.changed", "digest": digest, "at": at})

    run(with_store(cfg, work))
    out.print(f"announced {config} (sha256 {digest[:12]}) to every node", highlight=False)


# -- gateway / up ---------------------------------------------------------------------------------
def _serve(config: Path, workers: int | None, *, with_auth: bool = False) -> None:
    from bastion.gateway.serve import run_workers

    cfg = load(config)
    problems = gateway_problems(cfg)
    if problems:
        raise ConfigError(problems)
    for f in check_config(cfg):
        logging.getLogger("bastion.config").warning("%s", f)
    n = workers if workers is not None else cfg.server.workers
    raise typer.Exit(run_workers(cfg, n, with_auth=with_auth, path=config))


@app.command()
def gateway(
    config: ConfigOpt,
    workers: Annotated[int | None, typer.Option(min=1, max=64, help="Worker processes.")] = None,
) -> None:
    """Run the gateway."""
    _serve(config, workers)


@app.command()
def up(
    config: ConfigOpt,
    workers: Annotated[int | None, typer.Option(min=1, max=64, help="Worker processes.")] = None,
) -> None:
    """Run the embedded setup: the gateway and, with an `auth` section, the authorization
    server (whose tokens the gateway then trusts), and with a `control` section the admin API,
    in one process on one event bus."""
    _serve(config, workers, with_auth=True)


# -- db ---------------------------------------------------------------------------------------------
@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt) -> None:
    """Apply pending schema migrations to the configured store (PostgreSQL: required before
    the first start and after each Bastion upgrade; gateway nodes never migrate)."""
    cfg = load(config)
    where, before, after = run(upgrade_store(cfg.store))
    if before == after:
        out.print(f"{where}: schema is current (version {after})", highlight=False)
    else:
        out.print(f"{where}: schema upgraded from version {before} to {after}", highlight=False)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning every error into one line and an exit code."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        # standalone_mode=False: click returns a command's exit code instead of exiting.
        code = app(args=argv, standalone_mode=False)
    except ConfigError as exc:
        for p in exc.problems:
            err.print(f"config error: {p}", highlight=False, soft_wrap=True, markup=False)
        sys.exit(2)
    except CliFailure as exc:
        err.print(f"error: {exc}", highlight=False, soft_wrap=True, markup=False)
        sys.exit(exc.code)
    except BastionError as exc:
        err.print(f"error: {exc}", highlight=False, soft_wrap=True, markup=False)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors (typer ships its own click)
        err.print(f"usage error: {exc.format_message()}", highlight=False, markup=False)
        sys.exit(exc.exit_code)
    except Exception as exc:  # the CLI never shows a traceback unless asked
        if os.environ.get("BASTION_DEBUG") == "1":
            raise
        err.print(f"error: {type(exc).__name__}: {exc}", highlight=False, markup=False)
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)
