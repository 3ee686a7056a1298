"""Building blocks the checks share: finding objects a user owns, comparing answers against a
baseline, and telling a throttled answer from a real one.

Private to the checks package (the registry skips modules whose name starts with ``_``).
Every comparison here is meant to keep false positives down: a 429 or 503 is never evidence,
and a difference counts only when the baseline itself is stable.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import Any

from bastion.scan.checks.base import USER_A, ScanContext
from bastion.scan.client import Reply
from bastion.scan.errors import RequestFailed, SafetyRefused
from bastion.scan.spec import ScanOperation

__all__ = [
    "json_leaves",
    "not_found_baseline",
    "owned_ids",
    "path_for",
    "same_answer",
    "throttled",
    "unique_body",
]

THROTTLED = frozenset({429, 503})
_ID_PARAM = re.compile(r"(?i)(^id$|_id$|id$|uuid|key$|slug$|number$)")


def throttled(reply: Reply) -> bool:
    """A rate-limited or overloaded answer: inconclusive, never evidence."""
    return reply.status in THROTTLED


def json_leaves(doc: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b[0].c": value}`` for every scalar in a JSON document."""
    out: dict[str, Any] = {}
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.update(json_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.update(json_leaves(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = doc
    return out


def same_answer(a: Reply, b: Reply) -> bool:
    """Same status and the same body (JSON compared as data)."""
    if a.status != b.status:
        return False
    ja, jb = a.json(), b.json()
    if ja is not None or jb is not None:
        return bool(ja == jb)
    return a.body == b.body


def unique_body(body: Any) -> Any:
    """``body`` with string fields that must be unique (email, username, name) made unique, so
    that creating twice does not collide."""
    if not isinstance(body, dict):
        return body
    tag = secrets.token_hex(4)
    out = dict(body)
    for key, value in body.items():
        if not isinstance(value, str):
            continue
        low = key.lower()
        if "email" in low:
            out[key] = f"scan-{tag}@example.test"
        elif low in ("username", "login", "name", "title", "slug"):
            out[key] = f"scan-{tag}"
    return out


def api_relative(ctx: ScanContext, path: str) -> str:
    """A target path (as the ledger keeps them) relative to the spec's base path."""
    base = ctx.spec.base_path
    return path[len(base) :] if base and path.startswith(base + "/") else path


def collection_of(ctx: ScanContext, op: ScanOperation) -> ScanOperation | None:
    """The list operation (``GET /x``) of an item operation (``/x/{id}``), if documented."""
    parent = op.path.rsplit("/", 1)[0]
    if not op.path.endswith("}") or "{" in parent:
        return None
    for other in ctx.spec.operations:
        if other.method == "GET" and other.path == parent:
            return other
    return None


def creator_of(ctx: ScanContext, op: ScanOperation) -> ScanOperation | None:
    """The POST on the collection just above ``op``'s path (``POST /x`` for ``/x/{id}``), where
    the objects ``op`` works on are made, if documented."""
    parent = op.path.rsplit("/", 1)[0]
    return next((o for o in ctx.spec.operations if o.method == "POST" and o.path == parent), None)


async def create_object(ctx: ScanContext, create: ScanOperation, identity: str) -> str | None:
    """POST a fresh sample body to ``create`` as ``identity``: the new object's id, or None
    when the target refused or answered without an id. Raises what ``send`` raises."""
    reply = await send(
        ctx,
        "POST",
        ctx.fill_path(create),
        identity=identity,
        json=unique_body(ctx.sample_body(create)),
        operation=create,
    )
    doc = reply.json()
    if reply.ok and isinstance(doc, dict) and isinstance(doc.get("id"), int | str):
        return str(doc["id"])
    return None


def id_param(op: ScanOperation) -> str | None:
    """The one id-like path parameter of ``op`` (None if there are none or several)."""
    params = [p.name for p in op.params_in("path")]
    if len(params) != 1:
        return None
    return params[0] if _ID_PARAM.search(params[0]) or len(params) == 1 else None


async def owned_ids(ctx: ScanContext, op: ScanOperation, identity: str = USER_A) -> list[str]:
    """Ids that ``identity`` may address in ``op``'s path: its own user id (for user-like
    parameters), ids from the matching list operation, objects it created. At most three."""
    name = id_param(op)
    if name is None:
        return []
    found: list[str] = []
    ident = ctx.identities.get(identity)
    if (
        ident is not None
        and ident.user_id
        and op.path.rstrip("/").endswith("{" + name + "}")
        and "user" in op.path.split("{")[0]
    ):
        found.append(ident.user_id)
    prefix = op.path.split("{")[0]
    for obj in ctx.ledger.objects:
        rel = api_relative(ctx, obj.path)
        if obj.identity == identity and not obj.deleted and rel.startswith(prefix):
            tail = rel[len(prefix) :]
            if tail and "/" not in tail:
                found.append(tail)
    listing = collection_of(ctx, op)
    if listing is not None and len(found) < 3:
        try:
            reply = await send(ctx, "GET", ctx.fill_path(listing), identity=identity)
        except (RequestFailed, SafetyRefused):
            reply = None
        doc = reply.json() if reply is not None and reply.ok else None
        items = doc.get("items", doc.get("data")) if isinstance(doc, dict) else doc
        if isinstance(items, list):
            for item in items[:3]:
                if isinstance(item, dict) and isinstance(item.get("id"), int | str):
                    found.append(str(item["id"]))
    unique: list[str] = []
    for value in found:
        if value not in unique:
            unique.append(value)
    return unique[:3]


async def path_for(ctx: ScanContext, op: ScanOperation, identity: str = USER_A) -> str | None:
    """A concrete path of ``op`` that ``identity`` should be allowed to read (its own object),
    the sample path when ``op`` has no path parameter, None when no such object is known."""
    if not op.params_in("path"):
        return ctx.fill_path(op)
    ids = await owned_ids(ctx, op, identity)
    name = id_param(op)
    if not ids or name is None:
        return None
    return ctx.fill_path(op, {name: ids[0]})


async def not_found_baseline(ctx: ScanContext, prefix: str = "") -> Reply | None:
    """What the target answers for a path that surely does not exist (under ``prefix``)."""
    path = f"{prefix.rstrip('/')}/bastion-scan-{secrets.token_hex(6)}"
    try:
        return await send(ctx, "GET", path, identity=USER_A, from_root=True)
    except RequestFailed:
        return None


def like_not_found(reply: Reply, baseline: Reply | None) -> bool:
    """Whether ``reply`` is the target's ordinary not-found answer (or a refusal of the same
    kind): same status, and for 2xx the same body shape."""
    if reply.status in (404, 405, 410) or throttled(reply):
        return True
    if baseline is None:
        return False
    if reply.status != baseline.status:
        return False
    return abs(len(reply.body) - len(baseline.body)) <= max(32, len(baseline.body) // 10)


async def send(ctx: ScanContext, method: str, path: str, **kwargs: Any) -> Reply:
    """``ctx.send``, once more after a 429/503 (waiting what Retry-After asks, at most 2 s):
    a target's rate limiter must not hide a flaw, nor fake a difference."""
    reply = await ctx.send(method, path, **kwargs)
    if not throttled(reply):
        return reply
    wait = reply.headers.get("retry-after", "1")
    await asyncio.sleep(min(float(wait) if wait.isdigit() else 1.0, 2.0))
    return await ctx.send(method, path, **kwargs)
