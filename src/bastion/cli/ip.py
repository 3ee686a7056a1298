"""``bastion ip block|unblock|list``: run-time IP blocks, on every gateway node at once.

A block is committed to the store (with its ``ip.blocked`` change, in one transaction) and then
pushed through Redis when ``cache`` is set; nodes that miss the push apply it on their next
change-feed poll. Blocks end by themselves; ``unblock`` lifts one early.
"""

from __future__ import annotations

import time
from typing import Annotated

import orjson
import typer
from rich.table import Table

from bastion.cli.common import CliFailure, ConfigOpt, JsonOpt, load, out, push, run, with_store
from bastion.config.types import parse_duration
from bastion.core.ipblocks import MAX_BLOCK_SECONDS, parse_network
from bastion.store.base import IpBlock, Store

ip_app = typer.Typer(help="Block IP addresses and networks on every node.", no_args_is_help=True)


def _network(text: str) -> str:
    try:
        return str(parse_network(text))
    except ValueError as exc:
        raise CliFailure(str(exc), 2) from None


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@ip_app.command("block")
def ip_block(
    config: ConfigOpt,
    cidr: Annotated[str, typer.Argument(help="An address (203.0.113.7) or network (/24).")],
    duration: Annotated[
        str, typer.Option("--for", help="How long, e.g. 15m, 1h, 7d (at most 366d).")
    ] = "1h",
    reason: Annotated[str, typer.Option(help="Why (kept with the block and in audit).")] = "",
) -> None:
    """Refuse every request from CIDR (403) on every node until the duration ends."""
    cfg = load(config)
    net = _network(cidr)
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise CliFailure(f"--for: {exc}", 2) from None
    if not 0 < seconds <= MAX_BLOCK_SECONDS:
        raise CliFailure("--for must be positive and at most 366d (use ip_deny for longer)", 2)
    if len(reason) > 500 or any(not c.isprintable() for c in reason):
        raise CliFailure("--reason must be at most 500 printable characters", 2)
    now = time.time()
    block = IpBlock(cidr=net, reason=reason, created_at=now, expires_at=now + seconds)

    async def work(store: Store) -> None:
        await store.add_ip_block(block)
        await push(
            cfg, {"type": "ip.blocked", "cidr": net, "until": block.expires_at, "reason": reason}
        )

    run(with_store(cfg, work))
    out.print(f"blocked {net} until {_iso(block.expires_at)}", highlight=False)


@ip_app.command("unblock")
def ip_unblock(
    config: ConfigOpt,
    cidr: Annotated[str, typer.Argument(help="Exactly the address or network blocked.")],
) -> None:
    """Lift the active blocks of CIDR on every node."""
    cfg = load(config)
    net = _network(cidr)

    async def work(store: Store) -> bool:
        at = time.time()
        if not await store.lift_ip_block(net, at):
            return False
        await push(cfg, {"type": "ip.unblocked", "cidr": net, "at": at})
        return True

    if not run(with_store(cfg, work)):
        raise CliFailure(f"no active block of {net}")
    out.print(f"unblocked {net}", highlight=False)


@ip_app.command("list")
def ip_list(config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """The blocks in force now."""
    cfg = load(config)

    async def work(store: Store) -> list[IpBlock]:
        return await store.active_ip_blocks(time.time())

    blocks = run(with_store(cfg, work))
    if as_json:
        rows = [
            {"cidr": b.cidr, "reason": b.reason, "created_at": b.created_at, "until": b.expires_at}
            for b in blocks
        ]
        typer.echo(orjson.dumps(rows).decode())
        return
    table = Table("network", "until", "reason")
    for b in blocks:
        table.add_row(b.cidr, _iso(b.expires_at), b.reason, style=None)
    out.print(table)
