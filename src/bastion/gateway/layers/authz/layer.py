"""The authz layer: may this caller call this operation (BFLA), on this object (BOLA)?

It reads the operation the ``openapi`` layer matched (``ex.annotations``) and checks, in order:

1. a principal is present unless the operation is public (``security: []`` or an empty
   requirement ``{}``) — else 401;
2. the operation's ``security`` requirements against the principal: any one requirement must
   be met — the principal's kind must be able to present every scheme in it (a JWT: ``oauth2``,
   ``openIdConnect``, ``http`` ``bearer``; an API key: ``apiKey``, ``http`` ``bearer`` without
   ``bearerFormat: JWT``; see :func:`bastion.openapi.model.credential_kinds`) and it must hold
   every scope of every scheme in it — else 403 ``access.forbidden``. So ``[{bearer: [admin]},
   {key: []}]`` lets an API key in without scopes, never a JWT without ``admin``;
3. ``x-bastion-roles``: the principal must hold one of them — else 403;
4. every ``x-bastion-owner`` rule (see ``bastion.openapi.owner``) — else 403 (404 with
   ``hide_existence``), recorded as ``ex.annotations["bola_denied"]`` and published on the bus
   topic ``security`` (action ``bola_denied``) for enumeration detection. A resolver that
   cannot answer refuses the request (503 ``authz.resolver_unavailable`` by default).

An operation without a ``security`` declaration needs a principal (fail closed); ``bastion
config check`` warns about it. With ``enforce: false`` nothing is refused and
``ex.annotations["authz_shadow"]`` says what would have been.

Everything is decided synchronously in :meth:`AuthzLayer.check` except an owner that a
resolver's cache does not hold: then ``check`` answers NEEDS_IO and
:meth:`AuthzLayer.on_request` decides again with the lookups awaited.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bastion.audit.record import iso_timestamp
from bastion.core.clock import Clock
from bastion.core.exchange import Exchange, Principal, Reply
from bastion.errors import (
    AuthenticationFailed,
    BastionError,
    ConfigError,
    Forbidden,
    NotFound,
    ResolverUnavailable,
)
from bastion.events.bus import EventBus
from bastion.gateway.layers.authn.layer import WWW_AUTHENTICATE
from bastion.gateway.layers.authz.config import AuthzConfig
from bastion.gateway.layers.authz.resolvers import CachedResolver, ResolverError, as_text
from bastion.gateway.layers.base import NEEDS_IO, Layer, NeedsIo
from bastion.openapi.model import (
    ALL_KINDS,
    BODY_ANNOTATION,
    OPERATION_ANNOTATION,
    PARAMS_ANNOTATION,
    PATH_PARAMS_ANNOTATION,
    Operation,
    OwnerRule,
)
from bastion.openapi.spec import OpenApiSpec

__all__ = ["AuthzLayer", "OperationPolicy", "Requirement", "policy_for", "resolver_problems"]

_MISSING = object()
MAX_EVENT_ID_CHARS = 128


@dataclass(frozen=True)
class Requirement:
    """One security requirement: the scopes it needs, and the principal kinds that can
    present every scheme in it (empty: none can, so it is never met)."""

    scopes: frozenset[str]
    kinds: frozenset[str]

    def describe(self) -> str:
        kinds = "/".join(sorted(self.kinds)) or "no credential Bastion verifies"
        scopes = " ".join(sorted(self.scopes))
        return f"{kinds} with scopes {scopes}" if scopes else kinds


@dataclass(frozen=True)
class OperationPolicy:
    """What one operation requires, precomputed from the document."""

    label: str  # operationId, else "GET /path/{template}"
    public: bool
    requirements: tuple[Requirement, ...]  # any one must be met by the principal
    roles: frozenset[str] | None
    owner_rules: tuple[OwnerRule, ...]
    #: Whether a request without a principal is refused (see :attr:`needs_principal`).
    principal_needed: bool = field(init=False)
    #: The requirements checked against the principal (none when public).
    scopes_needed: tuple[Requirement, ...] = field(init=False)

    def __post_init__(self) -> None:
        needed = not self.public or self.roles is not None or bool(self.owner_rules)
        object.__setattr__(self, "principal_needed", needed)
        object.__setattr__(self, "scopes_needed", () if self.public else self.requirements)

    @property
    def needs_principal(self) -> bool:
        return self.principal_needed


@dataclass(frozen=True)
class _Lookup:
    """An owner answer the caches do not hold: ask ``resolver`` about ``object_id``."""

    resolver: str
    object_id: Any
    key: str


def policy_for(op: Operation) -> OperationPolicy:
    """The policy of one operation."""
    security = op.security
    public = security is not None and (not security or any(not req for req in security))
    kinds_of = op.scheme_kinds
    requirements = tuple(
        Requirement(
            frozenset(scope for scopes in req.values() for scope in scopes),
            ALL_KINDS.intersection(*(kinds_of.get(name, frozenset()) for name in req)),
        )
        for req in security or ()
    )
    if any(not r.scopes and r.kinds == ALL_KINDS for r in requirements):
        requirements = ()  # any authenticated caller meets one requirement
    label = op.operation_id or f"{op.method} {op.path_template}"
    return OperationPolicy(label, public, requirements, op.roles, op.owner_rules)


def resolver_problems(spec: OpenApiSpec, config: AuthzConfig) -> list[str]:
    """Owner rules naming a resolver the config does not define, as ``location: message``."""
    names = {r.name for r in config.resolvers}
    return [
        f"authz.resolvers: x-bastion-owner of {policy_for(op).label} names resolver "
        f"{rule.resolver!r}, which is not configured"
        for op in spec.operations
        for rule in op.owner_rules
        if rule.resolver is not None and rule.resolver not in names
    ]


def _expected(principal: Principal, source: str) -> Any:
    if source == "principal.sub":
        return principal.subject
    if source == "principal.client_id":
        return principal.client_id
    node: Any = principal.claims
    for part in source.split(".")[1:]:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _param_value(ex: Exchange, rule: OwnerRule) -> Any:
    ann = ex.annotations
    if rule.location == "body":
        node: Any = ann.get(BODY_ANNOTATION, _MISSING)
        for part in rule.name.split("."):
            if not isinstance(node, dict) or part not in node:
                return _MISSING
            node = node[part]
        return node
    params = ann.get(PARAMS_ANNOTATION)
    if params is not None:
        return params[rule.location].get(rule.name, _MISSING)
    if rule.location == "path":  # the openapi layer refused nothing (shadow mode) or had no params
        return ann.get(PATH_PARAMS_ANNOTATION, {}).get(rule.name, _MISSING)
    return _MISSING


class AuthzLayer(Layer):
    """Enforces scopes, roles and ownership for the operations of one route's document.

    ``spec`` must be the document the route's ``openapi`` layer enforces. ConfigError when an
    owner rule names a resolver that ``config`` does not define.
    """

    name = "authz"

    def __init__(
        self, config: AuthzConfig, spec: OpenApiSpec, *, bus: EventBus, clock: Clock
    ) -> None:
        problems = resolver_problems(spec, config)
        if problems:
            raise ConfigError(problems)
        self._enforce = config.enforce
        self._hide = config.hide_existence
        self._resolver_403 = config.resolver_error_status == 403
        self._max_ids = config.max_object_ids
        self._bus = bus
        self._policies = {id(op): policy_for(op) for op in spec.operations}
        used = {rule.resolver for op in spec.operations for rule in op.owner_rules}
        self._resolvers = {
            r.name: CachedResolver.from_config(r, clock) for r in config.resolvers if r.name in used
        }

    def _refuse(self, ex: Exchange, err: BastionError) -> Reply | None:
        if self._enforce:
            return ex.deny(err)
        ex.record_finding("authz_shadow", f"{err.code}: {err.diagnosis or err.detail or ''}")
        return None

    def check(self, ex: Exchange) -> Reply | NeedsIo | None:
        """Check the matched operation's requirements: 401/403/404 or continue; NEEDS_IO when
        an ownership resolver has no cached answer for an object (see :meth:`on_request`)."""
        # Without ``fetched`` a missing owner is NEEDS_IO, never a _Lookup.
        return self._decide(ex, None)  # type: ignore[return-value]

    async def on_request(self, ex: Exchange) -> Reply | None:
        """:meth:`check`, with the resolver lookups it could not answer from the caches
        (503 ``authz.resolver_unavailable`` when one fails). Decides as ``check`` does."""
        fetched: dict[tuple[str, str], frozenset[str]] = {}
        while True:
            miss = self._decide(ex, fetched)
            if not isinstance(miss, _Lookup):
                return miss  # type: ignore[return-value]  # never NEEDS_IO with ``fetched``
            try:
                owners = await self._resolvers[miss.resolver].owners(miss.object_id, miss.key)
            except ResolverError as exc:
                diagnosis = f"authz: resolver {miss.resolver}: {exc}"
                err: BastionError = (
                    Forbidden(diagnosis=diagnosis)
                    if self._resolver_403
                    else ResolverUnavailable(diagnosis=diagnosis)
                )
                return self._refuse(ex, err)
            fetched[(miss.resolver, miss.key)] = owners

    def _decide(
        self, ex: Exchange, fetched: dict[tuple[str, str], frozenset[str]] | None
    ) -> Reply | NeedsIo | _Lookup | None:
        """The decision; for an owner the caches cannot give: NEEDS_IO (``fetched`` None, from
        ``check``), else the :class:`_Lookup` to await before deciding again with its answer
        in ``fetched``. Nothing is recorded before a decision that needs no more lookups."""
        op = ex.annotations.get(OPERATION_ANNOTATION)
        if op is None:
            return None  # the openapi layer refused, or let an unknown operation pass (shadow)
        policy = self._policies.get(id(op))
        if policy is None:
            return self._refuse(ex, Forbidden(diagnosis="authz: operation of another document"))
        principal = ex.principal
        if principal is None:
            if policy.principal_needed:
                err = AuthenticationFailed(
                    diagnosis=f"authz: {policy.label} needs a principal", headers=[WWW_AUTHENTICATE]
                )
                return self._refuse(ex, err)
            return None
        requirements = policy.scopes_needed
        if requirements:
            kind, scopes = principal.kind, principal.scopes
            for req in requirements:
                if kind in req.kinds and req.scopes <= scopes:
                    break
            else:
                wanted = " or ".join(r.describe() for r in requirements)
                return self._refuse(
                    ex, Forbidden(diagnosis=f"authz: {policy.label} needs {wanted}")
                )
        if policy.roles is not None and policy.roles.isdisjoint(principal.roles):
            roles = " ".join(sorted(policy.roles))
            return self._refuse(
                ex, Forbidden(diagnosis=f"authz: {policy.label} needs a role of {roles}")
            )
        if policy.owner_rules:
            return self._owners(ex, policy, principal, fetched)
        return None

    def _owners(
        self,
        ex: Exchange,
        policy: OperationPolicy,
        principal: Principal,
        fetched: dict[tuple[str, str], frozenset[str]] | None,
    ) -> Reply | NeedsIo | _Lookup | None:
        for rule in policy.owner_rules:
            value = _param_value(ex, rule)
            if value is _MISSING:
                return self._deny_object(ex, policy, rule, None, "object id missing")
            ids = value if isinstance(value, list) else [value]
            if len(ids) > self._max_ids:
                return self._deny_object(ex, policy, rule, None, f"more than {self._max_ids} ids")
            expected = _expected(principal, rule.expected)
            if rule.match == "in":
                allowed = (
                    {t for t in (as_text(x) for x in expected) if t is not None}
                    if isinstance(expected, list)
                    else None
                )
            else:
                text = as_text(expected)
                allowed = {text} if text is not None else None
            if allowed is None:
                return self._deny_object(ex, policy, rule, None, f"{rule.expected} missing")
            for obj in ids:
                key = as_text(obj)
                if key is None:
                    return self._deny_object(ex, policy, rule, None, "object id not a scalar")
                if rule.resolver is None:
                    ok = key in allowed
                else:
                    owners = fetched.get((rule.resolver, key)) if fetched else None
                    if owners is None:
                        owners = self._resolvers[rule.resolver].cached(key)
                    if owners is None:
                        return NEEDS_IO if fetched is None else _Lookup(rule.resolver, obj, key)
                    ok = not owners.isdisjoint(allowed)
                if not ok:
                    return self._deny_object(ex, policy, rule, key, "not the owner")
        return None

    def _deny_object(
        self,
        ex: Exchange,
        policy: OperationPolicy,
        rule: OwnerRule,
        object_id: str | None,
        why: str,
    ) -> Reply | None:
        shown = object_id[:MAX_EVENT_ID_CHARS] if object_id is not None else None
        ex.record_finding("bola_denied", {"param": rule.param, "object_id": shown})
        self._publish(ex, policy, rule, shown, why)
        diagnosis = f"authz: {policy.label} owner rule {rule.param}: {why}"
        err: BastionError = (
            NotFound(diagnosis=diagnosis) if self._hide else Forbidden(diagnosis=diagnosis)
        )
        return self._refuse(ex, err)

    def _publish(
        self,
        ex: Exchange,
        policy: OperationPolicy,
        rule: OwnerRule,
        object_id: str | None,
        why: str,
    ) -> None:
        req = ex.request
        p = ex.principal
        event: dict[str, Any] = {
            "@timestamp": iso_timestamp(ex.started_wall),
            "event": {
                "kind": "event",
                "category": ["iam"],
                "type": ["denied"],
                "action": "bola_denied",
                "outcome": "failure",
                "reason": why,
            },
            "source": {"ip": req.client_ip or req.peer_ip},
            "http": {"request": {"method": req.method, "id": ex.request_id}},
            "bastion": {
                "route": ex.route_name,
                "operation": policy.label,
                "param": rule.param,
                "object_id": object_id,
                "enforced": self._enforce,
            },
        }
        if p is not None:
            event["user"] = {"id": p.subject}
            if p.client_id:
                event["client"] = {"id": p.client_id}
        self._bus.publish("security", event)

    async def aclose(self) -> None:
        for resolver in self._resolvers.values():
            await resolver.aclose()
