"""The response_filter layer: JSON responses checked against the operation's declared schema
and scanned for sensitive data before they reach the client (excessive data exposure).

Per response, from the matched operation the ``openapi`` layer left in ``ex.annotations``: a
status (or a content type for it) the operation does not declare is blocked or reported
(``undeclared_status``); a JSON body (``application/json``, ``+json``) is held up to
``max_body_bytes`` and filtered against the declared schema's allow-list plan, then by the
detectors. Without an operation (a route with no spec, or an unmatched request in shadow mode)
only the detectors run. Other content types stream untouched. Fail closed: JSON the gateway
cannot read (malformed, or compressed despite the ``Accept-Encoding: identity`` it sends
upstream) is blocked, like an oversized body unless ``oversize: pass``.

The common case costs one pass of the native fast path over the body's bytes
(``bastion.openapi.fastcheck``, checking ``plan.fast_schema``), or without that extension one
``orjson.loads`` and one compiled ``jsonschema-rs`` check of the same schema: a clean body is
sent as the upstream wrote it. What the head decides
(schema, block, stream) is computed once per (operation, status, Content-Type) and reused.
Only bodies that need changes are walked in Python, and the walk skips every object or array
that its own compiled check (``plan.subtree_schema``) proves clean, so one bad item of a large
array costs a walk of that item; a body is re-serialised only when something was removed or
masked. What was removed, masked or blocked goes to
``ex.annotations["response_filter"]`` as JSON pointers and detector names, never values.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jsonschema_rs
import orjson

from bastion.core.exchange import Exchange, Headers, Reply
from bastion.core.sensitive import SensitiveScanner
from bastion.errors import ConfigError, ResponseBlocked, ResponseTooLarge
from bastion.gateway.layers.base import Layer
from bastion.gateway.layers.response_filter.config import ResponseFilterConfig
from bastion.gateway.layers.response_filter.plan import (
    OPEN,
    Node,
    build_plan,
    fast_schema,
    subtree_schema,
)
from bastion.gateway.layers.response_filter.walk import BodyFilter, Findings, SensitiveAction
from bastion.openapi.fastcheck import FastChecker, fast_checker, repeats_a_key
from bastion.openapi.model import OPERATION_ANNOTATION, MediaSchema, Operation, Validator

__all__ = ["ANNOTATION", "ResponseFilterLayer", "is_json"]

log = logging.getLogger("bastion.gateway.response_filter")

#: Where the layer records what it did to a response.
ANNOTATION = "response_filter"
#: Per-request decision taken on the response head, read when the body is complete.
_DECISION = "response_filter.decision"
#: Head decisions remembered per (operation, status, Content-Type) (cleared when full).
MAX_HEADS = 1024
#: Deeper JSON bodies skip the native fast path (they take orjson and the walk).
_NATIVE_DEPTH = 128


def is_json(media_type: str) -> bool:
    """``application/json`` and every ``+json`` type (lower-case, without parameters)."""
    return media_type == "application/json" or media_type.endswith("+json")


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class CompiledPlan:
    """A response schema ready for use: its allow-list plan and the fast-path validators:
    ``native`` reads the body's bytes (``bastion.openapi.fastcheck``), ``fast`` the parsed
    document (used when there is no ``native``)."""

    plan: Node
    fast: Validator | None
    native: FastChecker | None = None


@dataclass(frozen=True)
class _Bodyless:
    """The decision for a response whose status declares no content and which announces no
    Content-Type: any body it has is undeclared (``what`` says so)."""

    what: str


@dataclass(frozen=True)
class _Head:
    """The decision on a response head, per (operation, status, Content-Type): the limit
    :meth:`ResponseFilterLayer.wants_response_body` returns, the decision it leaves for the
    body (a plan, a block reason, or None), what it records, and whether a Content-Encoding
    other than identity blocks (JSON to filter). ``op`` guards the cache keyed by its id."""

    op: Any  # the Operation (or None); compared by identity
    limit: int
    decision: CompiledPlan | _Bodyless | str | None = None
    undeclared: str | None = None  # recorded as "undeclared_response"
    would_block: str | None = None  # shadow mode: recorded as "would_block"
    check_encoding: bool = False


class ResponseFilterLayer(Layer):
    """Filters one route's JSON responses. ``operations`` (from the route's compiled spec)
    are prepared at start-up, so a bad ``x-bastion-sensitive`` mark is a ConfigError then;
    an operation met later is prepared on first use."""

    name = "response_filter"

    def __init__(self, config: ResponseFilterConfig, operations: Iterable[Operation] = ()) -> None:
        self._cfg = config
        self._enforce = config.enforce
        self._limit = config.max_body_bytes
        self._scanner = SensitiveScanner(config.detectors, config.sensitive_fields)
        self._default_roles = frozenset(config.sensitive_roles)
        self._remove_undeclared = config.enforce and config.undeclared == "remove"
        self._action: SensitiveAction = None
        if config.enforce and config.sensitive != "block":
            self._action = config.sensitive
        self._plans: dict[int, tuple[MediaSchema, CompiledPlan]] = {}
        self._heads: dict[tuple[int, int, str | None], _Head] = {}
        # The last head decided: responses of one operation repeat their status and
        # Content-Type, and comparing three values costs less than hashing a key.
        self._last: tuple[object, int, str | None, _Head] | None = None
        # Per plan node and guarded flag: the validator of values the walk leaves alone.
        self._subtrees: dict[tuple[int, bool], tuple[Node, Validator | None]] = {}
        self.detect_only = self._compile(OPEN)
        problems: list[str] = []
        for op in operations:
            for status, schemas in op.responses.items():
                for media in schemas:
                    where = f"{op.method} {op.path_template} responses.{status}"
                    problems.extend(f"{where}: {p}" for p in self._prepare(media)[1])
        if problems:
            raise ConfigError(problems)
        if config.oversize == "pass":
            log.warning(
                "response_filter: JSON responses over %d bytes pass unfiltered (oversize: pass)",
                self._limit,
            )

    def _compile(self, plan: Node) -> CompiledPlan:
        schema = fast_schema(plan, self._scanner)
        if schema is None:
            return CompiledPlan(plan, None)
        fast = jsonschema_rs.Draft202012Validator(schema)
        native = fast_checker(schema, formats=False, max_depth=_NATIVE_DEPTH)
        return CompiledPlan(plan, fast, native)

    def _clean_check(self, node: Node, guarded: bool) -> Validator | None:
        """The validator of :func:`subtree_schema` for ``node`` (compiled on first use; the
        nodes are those of this layer's plans, so the memo is bounded by the documents)."""
        key = (id(node), guarded)
        found = self._subtrees.get(key)
        if found is not None and found[0] is node:
            return found[1]
        schema = subtree_schema(node, self._scanner, guarded)
        validator = jsonschema_rs.Draft202012Validator(schema) if schema is not None else None
        self._subtrees[key] = (node, validator)
        return validator

    def _prepare(self, media: MediaSchema) -> tuple[CompiledPlan, list[str]]:
        found = self._plans.get(id(media))
        if found is not None and found[0] is media:
            return found[1], []
        plan, problems = build_plan(media.schema, self._scanner)
        compiled = self._compile(plan)
        self._plans[id(media)] = (media, compiled)
        return compiled, problems

    # -- request and response head ----------------------------------------------------------
    def check(self, ex: Exchange) -> None:
        """A compressed body cannot be read: ask the upstream for the identity encoding (not
        in shadow mode, which changes no traffic: a compressed JSON body is recorded as one
        that would have been blocked)."""
        if not self._enforce:
            return None
        headers = ex.request.headers
        for name, _ in headers.items:
            if name == "accept-encoding":
                headers.set("accept-encoding", "identity")
                return None
        headers.items.append(("accept-encoding", "identity"))
        return None

    def wants_response_body(self, ex: Exchange, status: int, headers: Headers) -> int:
        content_type = encoding = None  # the first of each, read in one pass
        for name, value in headers.items:
            if name == "content-type":
                if content_type is None:
                    content_type = value
            elif name == "content-encoding" and encoding is None:
                encoding = value
        ann = ex.annotations
        op = ann.get(OPERATION_ANNOTATION)
        last = self._last
        if last is not None and last[0] is op and last[1] == status and last[2] == content_type:
            head = last[3]
        else:
            key = (id(op), status, content_type)
            cached = self._heads.get(key)
            if cached is None or cached.op is not op:
                cached = self._head(op, status, content_type)
                if len(self._heads) >= MAX_HEADS:
                    self._heads.clear()  # bounded: status and Content-Type come from the upstream
                self._heads[key] = cached
            head = cached
            self._last = (op, status, content_type, head)
        if head.undeclared is not None:
            note = self._note(ex)
            note["undeclared_response"] = head.undeclared
            if head.would_block is not None:
                note["would_block"] = head.would_block
        if head.check_encoding and encoding:
            encoding = encoding.strip().lower()
            if encoding != "identity":
                return self._decide_block(ex, f"{encoding}-encoded JSON cannot be checked")
        if head.decision is not None:
            ann[_DECISION] = head.decision
        return head.limit

    def _head(self, op: object, status: int, content_type: str | None) -> _Head:
        """What :meth:`wants_response_body` does for responses with this operation, status and
        Content-Type (the same every time: cached)."""
        media = _media_type(content_type)
        compiled = self.detect_only
        if isinstance(op, Operation):
            declared = op.response_schemas(status)
            if declared is None:
                return self._undeclared(op, f"status {status} is not declared", media)
            chosen = _select(declared, media)
            if chosen is None:
                if not declared and not media:
                    # No body declared, none announced: held, so that a body sent all the same
                    # (unlabelled, unscanned) is an undeclared response.
                    what = f"a body for status {status}, which declares none"
                    return _Head(op, self._limit, _Bodyless(what))
                return self._undeclared(op, f"{media or 'no content type'} for {status}", media)
            compiled = self._prepare(chosen)[0]
        if not is_json(media):
            return _Head(op, 0)
        return _Head(op, self._limit, compiled, check_encoding=True)

    def _undeclared(self, op: object, what: str, media: str) -> _Head:
        if self._cfg.undeclared_status == "block":
            reason = f"undeclared response: {what}"
            if not self._enforce:
                return _Head(op, 0, undeclared=what, would_block=reason)
            return _Head(op, 1, reason, undeclared=what)  # never sent: hold as little as possible
        if not media:  # unlabelled: held, and a JSON body still meets the detectors
            return _Head(op, self._limit, _Bodyless(what), undeclared=what)
        if not is_json(media):
            return _Head(op, 0, undeclared=what)
        return _Head(op, self._limit, self.detect_only, undeclared=what)

    def _decide_block(self, ex: Exchange, reason: str) -> int:
        if not self._enforce:
            self._note(ex)["would_block"] = reason
            return 0
        ex.annotations[_DECISION] = reason
        return 1  # the body is never sent: hold as little as possible

    # -- response body ----------------------------------------------------------------------
    def on_response_body(
        self, ex: Exchange, status: int, headers: Headers, body: bytes
    ) -> bytes | Reply:
        decision = ex.annotations.pop(_DECISION, None)
        if decision is None:
            return body
        if isinstance(decision, str):
            return self._blocked(ex, decision)
        if not body or body.isspace():
            return body
        if isinstance(decision, _Bodyless):
            if self._undeclared_body(ex, decision):
                return self._block_or_pass(ex, f"undeclared response: {decision.what}", body)
            try:  # report: a JSON body still meets the detectors; another passes
                orjson.loads(body)
            except orjson.JSONDecodeError:
                return body
            decision = self.detect_only
        if not isinstance(decision, CompiledPlan):
            return body
        native = decision.native
        if native is not None and native.check(body):
            return body  # proven clean from the bytes: no Python objects built
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self._block_or_pass(ex, "the upstream sent malformed JSON", body)
        fast = decision.fast
        if native is None and fast is not None and fast.is_valid(doc) and not repeats_a_key(body):
            return body
        principal = ex.principal
        walk = BodyFilter(
            self._scanner,
            remove_undeclared=self._remove_undeclared,
            action=self._action,
            roles=principal.roles if principal is not None else frozenset(),
            default_roles=self._default_roles,
            clean=self._clean_check,
        )
        try:
            out = walk.run(doc, decision.plan)
        except RecursionError:
            return self._block_or_pass(ex, "the JSON body is nested too deeply to check", body)
        findings = walk.findings
        if not findings:
            if not repeats_a_key(body):
                return body
            # orjson kept each repeated key's last value, which the walk checked; the client's
            # parser may read the first. Send the checked document, one value per key.
            note = self._note(ex)
            note["enforced"] = self._enforce
            note["repeated_keys"] = True
            return orjson.dumps(out) if self._enforce else body
        self._record(ex, findings)
        if not self._enforce:
            return body
        cfg = self._cfg
        if cfg.undeclared == "block" and findings.removed_count:
            return self._blocked(ex, f"undeclared property {findings.removed[0]}")
        if cfg.sensitive == "block" and findings.masked_count:
            first = findings.masked[0]
            return self._blocked(ex, f"sensitive data ({first['by']}) at {first['path'] or '/'}")
        return orjson.dumps(out)

    def on_response_body_too_large(
        self, ex: Exchange, status: int, headers: Headers
    ) -> Reply | None:
        decision = ex.annotations.pop(_DECISION, None)
        if isinstance(decision, str):
            return self._blocked(ex, decision)
        if isinstance(decision, _Bodyless) and self._undeclared_body(ex, decision):
            blocked = self._block_or_pass(ex, f"undeclared response: {decision.what}", b"")
            return blocked if isinstance(blocked, Reply) else None
        if self._cfg.oversize == "pass" or not self._enforce:
            self._note(ex)["unfiltered_over_bytes"] = self._limit
            return None
        self._note(ex)["blocked"] = "too_large"
        diagnosis = f"response_filter: JSON body over {self._limit} bytes"
        return ex.deny(ResponseTooLarge(diagnosis=diagnosis))

    # -- outcomes ---------------------------------------------------------------------------
    def _undeclared_body(self, ex: Exchange, decision: _Bodyless) -> bool:
        """Record a body where none is declared; whether it is to be blocked (else, with
        ``undeclared_status: report``, it meets the detectors)."""
        self._note(ex)["undeclared_response"] = decision.what
        return self._cfg.undeclared_status == "block"

    def _blocked(self, ex: Exchange, reason: str) -> Reply:
        self._note(ex)["blocked"] = reason
        return ex.deny(ResponseBlocked(diagnosis=f"response_filter: {reason}"))

    def _block_or_pass(self, ex: Exchange, reason: str, body: bytes) -> bytes | Reply:
        if self._enforce:
            return self._blocked(ex, reason)
        self._note(ex)["would_block"] = reason
        return body

    def _record(self, ex: Exchange, findings: Findings) -> None:
        note = self._note(ex)
        note["enforced"] = self._enforce
        if findings.removed_count:
            note["undeclared"] = findings.removed
            note["undeclared_count"] = findings.removed_count
        if findings.masked_count:
            note["sensitive"] = findings.masked
            note["sensitive_count"] = findings.masked_count

    @staticmethod
    def _note(ex: Exchange) -> dict[str, Any]:
        note: dict[str, Any] | None = ex.annotations.get(ANNOTATION)
        if note is None:
            note = {}
            ex.record_finding(ANNOTATION, note)
        return note


def _select(declared: tuple[MediaSchema, ...], media: str) -> MediaSchema | None:
    """The declared schema for a response's media type: exact, ``type/*``, ``*/*``, and an
    ``application/json`` schema for any ``+json`` type."""
    by_type = {m.media_type.split(";", 1)[0].strip().lower(): m for m in declared}
    found = by_type.get(media)
    if found is None and media:
        found = by_type.get(media.split("/", 1)[0] + "/*") or by_type.get("*/*")
        if found is None and media.endswith("+json"):
            found = by_type.get("application/json")
    return found
