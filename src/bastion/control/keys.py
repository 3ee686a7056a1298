"""API-key lifecycle operations: create, list, rotate, revoke, report. Framework-free.

The admin API and the ``bastion keys`` CLI both call :class:`KeyService`; neither touches key
records directly. What it guarantees:

* **The secret is shown once.** :meth:`KeyService.create` and :meth:`KeyService.rotate` return
  an :class:`IssuedKey` whose ``secret`` is the full ``bsk_…`` key; only its HMAC under the
  pepper is stored (:mod:`bastion.core.apikeys`). Nothing else ever returns it, and neither
  ``repr`` nor :meth:`KeyView.to_dict` contain it.
* **Rotation never extends a key's life.** The old key keeps working for the grace period
  (``ApiKeysConfig.rotation_grace``, default 7 days) or until its own expiry, whichever comes
  first; the store shortens it in the same transaction that inserts the successor.
* **Keys stop by themselves.** A key is refused once its ``expires_at`` or its ``max_age``
  (default 180 days) has passed, by every node, with no write; from ``warn_age`` (default 90
  days) it is listed as ``warning``.
* **Changes reach every node.** Each write is committed with its change-feed entry, then
  handed to ``publish`` (Redis push when configured); a failed push only delays nodes until
  their next change-feed poll, so it is logged and not raised.

Time comes from the injected clock (``clock.now()``), so tests move it by hand. Errors are
:class:`~bastion.errors.BastionError` subclasses with stable codes (:class:`KeyNotFound`,
:class:`KeyConflict`, :class:`KeyInvalid`, :class:`ApplicationNotFound`); store failures raise
:class:`~bastion.errors.StoreError`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from bastion.core.apikeys import effective_expiry, hash_secret, new_api_key
from bastion.core.clock import Clock, SystemClock
from bastion.errors import BastionError
from bastion.store.base import ApiKeyRecord, ClientRecord, Store

__all__ = [
    "DAY",
    "ApplicationContact",
    "ApplicationNotFound",
    "IssuedKey",
    "KeyConflict",
    "KeyInvalid",
    "KeyNotFound",
    "KeyPolicy",
    "KeyReport",
    "KeyService",
    "KeyView",
    "Publisher",
    "Rotation",
    "key_id_from",
    "key_state",
]

log = logging.getLogger("bastion.control.keys")

DAY = 86400.0

#: Called with a control event after its change is committed (Redis push, local bus).
Publisher = Callable[[dict[str, Any]], Awaitable[None]]

MAX_SCOPES = 64
MAX_NAME = 200
MAX_OWNER = 256
MAX_CLIENT_ID = 128
#: RFC 6749 §3.3 scope-token characters, at most 128 of them.
_SCOPE_RE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")
_KEY_ID_RE = re.compile(r"[a-z0-9]{16}")


# -- errors -------------------------------------------------------------------------------------


class KeyNotFound(BastionError):
    """No API key with that id."""

    code: ClassVar[str] = "api_keys.not_found"
    status: ClassVar[int] = 404
    title: ClassVar[str] = "API key not found"


class ApplicationNotFound(BastionError):
    """The application (client) a key is for does not exist."""

    code: ClassVar[str] = "api_keys.application_not_found"
    status: ClassVar[int] = 404
    title: ClassVar[str] = "Application not found"


class KeyConflict(BastionError):
    """The key's state does not allow the operation (revoking a revoked key, rotating an
    expired, revoked or already rotated one)."""

    code: ClassVar[str] = "api_keys.conflict"
    status: ClassVar[int] = 409
    title: ClassVar[str] = "API key state does not allow this"


class KeyInvalid(BastionError):
    """A malformed request: scopes, name, owner, lifetime or grace outside their bounds."""

    code: ClassVar[str] = "api_keys.invalid"
    status: ClassVar[int] = 400
    title: ClassVar[str] = "Invalid API-key request"


# -- values -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """Lifecycle bounds, in seconds (``ApiKeysConfig`` holds the configured values).

    ``default_ttl``: lifetime of a new key; ``max_age``: no key lives longer; ``warn_age``: from
    then a key is in ``warning``; ``rotation_grace``: how long a rotated key keeps working;
    ``unused_after``: a key not used for that long is reported.
    """

    default_ttl: float = 180 * DAY
    max_age: float = 180 * DAY
    warn_age: float = 90 * DAY
    rotation_grace: float = 7 * DAY
    unused_after: float = 30 * DAY
    max_grace: float = 90 * DAY

    def __post_init__(self) -> None:
        if not 0 < self.default_ttl <= self.max_age:
            raise ValueError("default_ttl must be positive and at most max_age")
        if not 0 < self.warn_age < self.max_age:
            raise ValueError("warn_age must be positive and shorter than max_age")
        if not 0 <= self.rotation_grace <= self.max_grace:
            raise ValueError("rotation_grace must be between 0 and max_grace")

    @classmethod
    def from_config(cls, cfg: Any) -> KeyPolicy:
        """The policy of an ``ApiKeysConfig`` (``config.api_keys``)."""
        return cls(
            default_ttl=float(cfg.default_ttl),
            max_age=float(cfg.max_age),
            warn_age=float(cfg.warn_age),
            rotation_grace=float(cfg.rotation_grace),
        )


def key_state(rec: ApiKeyRecord, now: float, policy: KeyPolicy) -> str:
    """The state of ``rec`` at ``now``: ``revoked``, ``expired`` (its expiry or ``max_age``
    passed), ``rotating`` (replaced, inside its grace period), ``warning`` (older than
    ``warn_age``) or ``active``. Only ``rotating``, ``warning`` and ``active`` keys work."""
    if rec.revoked_at is not None and rec.revoked_at <= now:
        return "revoked"
    if effective_expiry(rec.created_at, rec.expires_at, policy.max_age) <= now:
        return "expired"
    if rec.replaced_by is not None:
        return "rotating"
    if now - rec.created_at >= policy.warn_age:
        return "warning"
    return "active"


LIVE_STATES = frozenset({"active", "warning", "rotating"})


@dataclass(frozen=True, slots=True)
class KeyView:
    """What may be shown about a key: never its secret or its hash. ``expires_at`` is the
    effective expiry (its own, capped by ``max_age``)."""

    id: str
    client_id: str
    name: str
    owner: str
    scopes: tuple[str, ...]
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    last_used_at: float | None
    usage_count: int
    state: str
    rotated_from: str | None = None
    replaced_by: str | None = None

    @property
    def prefix(self) -> str:
        """The public ``bsk_<id>`` part of the key."""
        return f"bsk_{self.id}"

    @classmethod
    def of(cls, rec: ApiKeyRecord, now: float, policy: KeyPolicy) -> KeyView:
        """The view of ``rec`` at ``now``."""
        until = effective_expiry(rec.created_at, rec.expires_at, policy.max_age)
        return cls(
            id=rec.id,
            client_id=rec.client_id,
            name=rec.name,
            owner=rec.owner,
            scopes=tuple(rec.scopes),
            created_at=rec.created_at,
            expires_at=None if until == float("inf") else until,
            revoked_at=rec.revoked_at,
            last_used_at=rec.last_used_at,
            usage_count=rec.usage_count,
            state=key_state(rec, now, policy),
            rotated_from=rec.rotated_from,
            replaced_by=rec.replaced_by,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (times as epoch seconds)."""
        return {
            "id": self.id,
            "prefix": self.prefix,
            "application": self.client_id,
            "name": self.name,
            "owner": self.owner,
            "scopes": list(self.scopes),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "last_used_at": self.last_used_at,
            "usage_count": self.usage_count,
            "state": self.state,
            "rotated_from": self.rotated_from,
            "replaced_by": self.replaced_by,
        }


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just created: its view and, this one time, the full secret key (``bsk_…``).

    ``repr`` hides the secret, so logging the object does not leak it.
    """

    key: KeyView
    secret: str = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The view plus ``"key"``: the full key, for the one response that shows it."""
        return {**self.key.to_dict(), "key": self.secret}


@dataclass(frozen=True, slots=True)
class Rotation:
    """The result of a rotation: the new key (secret shown once) and the old key's view, whose
    ``expires_at`` is the end of its grace period."""

    successor: IssuedKey
    previous: KeyView

    def to_dict(self) -> dict[str, Any]:
        return {"successor": self.successor.to_dict(), "previous": self.previous.to_dict()}


@dataclass(frozen=True, slots=True)
class ApplicationContact:
    """Who answers for an application: ``owner`` and ``contact`` (empty: unknown). The admin
    API's application records provide these; the store's clients alone do not."""

    client_id: str
    owner: str = ""
    contact: str = ""


@dataclass(frozen=True, slots=True)
class KeyReport:
    """``bastion keys report``: live keys past ``warn_age``, live keys unused for
    ``unused_after`` (never used counts from creation), live keys whose key and application
    both lack an owner, and applications without a contact."""

    generated_at: float
    old_keys: tuple[KeyView, ...]
    unused_keys: tuple[KeyView, ...]
    keys_without_owner: tuple[KeyView, ...]
    applications_without_contact: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at,
            "old_keys": [k.to_dict() for k in self.old_keys],
            "unused_keys": [k.to_dict() for k in self.unused_keys],
            "keys_without_owner": [k.to_dict() for k in self.keys_without_owner],
            "applications_without_contact": list(self.applications_without_contact),
        }


def key_id_from(text: str) -> str:
    """The key id in ``text``: an id, a ``bsk_<id>`` prefix or a whole key (whose secret part
    is dropped at once). KeyInvalid when it is none of these."""
    kid = text.strip().removeprefix("bsk_")[:16]
    if _KEY_ID_RE.fullmatch(kid) is None:
        raise KeyInvalid("not an API key id", diagnosis="key id: malformed")
    return kid


# -- the service --------------------------------------------------------------------------------


class KeyService:
    """The API-key operations over ``store``. ``pepper`` is the HMAC key of
    ``api_keys.pepper`` (≥ 32 bytes, never logged); ``publish`` pushes committed changes to
    the nodes (None: they learn them from the change feed)."""

    def __init__(
        self,
        store: Store,
        pepper: bytes,
        *,
        policy: KeyPolicy | None = None,
        clock: Clock | None = None,
        publish: Publisher | None = None,
    ) -> None:
        if len(pepper) < 32:
            raise ValueError("the API-key pepper must be at least 32 bytes")
        self._store = store
        self._pepper = pepper
        self.policy = policy or KeyPolicy()
        self._clock = clock or SystemClock()
        self._publish = publish

    def __repr__(self) -> str:  # never show the pepper
        return f"KeyService({self.policy!r})"

    async def create(
        self,
        client_id: str,
        *,
        scopes: Iterable[str] = (),
        name: str = "",
        owner: str = "",
        ttl: float | None = None,
        create_application: bool = False,
    ) -> IssuedKey:
        """A new key for application ``client_id``; the secret is in the result, only there.

        ``ttl`` defaults to the policy's ``default_ttl`` and may not exceed ``max_age``.
        ApplicationNotFound when the application does not exist (``create_application``: make
        a bare one, as the CLI does for a new name); KeyInvalid for bad input.
        """
        _check_client_id(client_id)
        clean_scopes = _check_scopes(scopes)
        _check_text("name", name, MAX_NAME)
        _check_text("owner", owner, MAX_OWNER)
        lifetime = self.policy.default_ttl if ttl is None else ttl
        if not 0 < lifetime <= self.policy.max_age:
            raise KeyInvalid(
                f"ttl must be positive and at most {self.policy.max_age / DAY:g} days",
                diagnosis=f"ttl {lifetime!r} out of bounds",
            )
        now = self._clock.now()
        if await self._store.get_client(client_id) is None:
            if not create_application:
                raise ApplicationNotFound(
                    "unknown application", diagnosis=f"application {client_id!r} not found"
                )
            await self._store.put_client(ClientRecord(id=client_id, name=client_id, created_at=now))
        key_id, secret, full = new_api_key()
        rec = ApiKeyRecord(
            id=key_id,
            client_id=client_id,
            secret_hash=hash_secret(self._pepper, secret),
            scopes=clean_scopes,
            created_at=now,
            expires_at=now + lifetime,
            name=name,
            owner=owner,
        )
        await self._store.put_api_key(rec)
        await self._push({"type": "api_key.created", "key_id": key_id, "client_id": client_id})
        return IssuedKey(KeyView.of(rec, now, self.policy), full)

    async def list_keys(
        self, client_id: str | None = None, *, include_ended: bool = True
    ) -> list[KeyView]:
        """Keys (of one application, or all) by creation time; ``include_ended=False`` leaves
        out revoked and expired ones."""
        now = self._clock.now()
        views = [
            KeyView.of(r, now, self.policy) for r in await self._store.list_api_keys(client_id)
        ]
        if not include_ended:
            views = [v for v in views if v.state in LIVE_STATES]
        return views

    async def get(self, key_id: str) -> KeyView:
        """One key's view; KeyNotFound when there is none."""
        rec = await self._record(key_id)
        return KeyView.of(rec, self._clock.now(), self.policy)

    async def rotate(
        self,
        key_id: str,
        *,
        grace: float | None = None,
        ttl: float | None = None,
        owner: str | None = None,
    ) -> Rotation:
        """Issue a successor of ``key_id`` (same application, scopes and name; ``owner`` kept
        unless given) and let the old key work for ``grace`` seconds more (default the policy's
        ``rotation_grace``; 0 stops it now), never past its own expiry.

        KeyNotFound for an unknown id; KeyConflict when the key is revoked, expired or already
        rotated; KeyInvalid for a grace or ttl outside the policy's bounds.
        """
        old = await self._record(key_id)
        period = self.policy.rotation_grace if grace is None else grace
        if not 0 <= period <= self.policy.max_grace:
            raise KeyInvalid(
                f"grace must be between 0 and {self.policy.max_grace / DAY:g} days",
                diagnosis=f"grace {period!r} out of bounds",
            )
        lifetime = self.policy.default_ttl if ttl is None else ttl
        if not 0 < lifetime <= self.policy.max_age:
            raise KeyInvalid(
                f"ttl must be positive and at most {self.policy.max_age / DAY:g} days",
                diagnosis=f"ttl {lifetime!r} out of bounds",
            )
        new_owner = old.owner if owner is None else owner
        _check_text("owner", new_owner, MAX_OWNER)
        now = self._clock.now()
        state = key_state(old, now, self.policy)
        if state not in ("active", "warning"):
            raise KeyConflict(
                f"a {state} key cannot be rotated", diagnosis=f"rotate {key_id}: {state}"
            )
        # The store also applies its own expiry; max_age is ours, so cap here as well.
        until = min(
            now + period, effective_expiry(old.created_at, old.expires_at, self.policy.max_age)
        )
        new_id, secret, full = new_api_key()
        successor = ApiKeyRecord(
            id=new_id,
            client_id=old.client_id,
            secret_hash=hash_secret(self._pepper, secret),
            scopes=tuple(old.scopes),
            created_at=now,
            expires_at=now + lifetime,
            name=old.name,
            owner=new_owner,
            rotated_from=old.id,
        )
        if not await self._store.rotate_api_key(old.id, successor, until):
            # Lost a race with another revoke or rotation between our read and the write.
            raise KeyConflict("the key cannot be rotated", diagnosis=f"rotate {key_id}: raced")
        await self._push(
            {
                "type": "api_key.created",
                "key_id": new_id,
                "client_id": old.client_id,
                "replaces": old.id,
                "replaces_until": until,
            }
        )
        previous = await self._record(old.id)
        return Rotation(
            successor=IssuedKey(KeyView.of(successor, now, self.policy), full),
            previous=KeyView.of(previous, now, self.policy),
        )

    async def revoke(self, key_id: str) -> KeyView:
        """Revoke ``key_id`` now, on every node. KeyNotFound for an unknown id, KeyConflict
        when it is already revoked."""
        await self._record(key_id)
        at = self._clock.now()
        if not await self._store.revoke_api_key(key_id, at):
            raise KeyConflict("the key is already revoked", diagnosis=f"revoke {key_id}: revoked")
        await self._push({"type": "api_key.revoked", "key_id": key_id, "at": at})
        return await self.get(key_id)

    async def revoke_application(self, client_id: str) -> list[str]:
        """Revoke every key of application ``client_id`` that is not revoked yet (incident
        response); returns their ids. ApplicationNotFound when it does not exist."""
        if await self._store.get_client(client_id) is None:
            raise ApplicationNotFound(
                "unknown application", diagnosis=f"application {client_id!r} not found"
            )
        revoked: list[str] = []
        for rec in await self._store.list_api_keys(client_id):
            if rec.revoked_at is not None:
                continue
            at = self._clock.now()
            if await self._store.revoke_api_key(rec.id, at):
                revoked.append(rec.id)
                await self._push({"type": "api_key.revoked", "key_id": rec.id, "at": at})
        return revoked

    async def report(
        self, applications: Mapping[str, ApplicationContact] | None = None
    ) -> KeyReport:
        """The hygiene report over live keys and every application. ``applications`` gives
        owners and contacts by application id (missing: unknown, so reported)."""
        apps = applications or {}
        now = self._clock.now()
        live = [v for v in await self.list_keys() if v.state in LIVE_STATES]
        old = [v for v in live if now - v.created_at >= self.policy.warn_age]
        unused = [
            v
            for v in live
            if now - (v.last_used_at if v.last_used_at is not None else v.created_at)
            >= self.policy.unused_after
        ]
        orphans = [v for v in live if not v.owner and not apps.get(v.client_id, _NO_CONTACT).owner]
        clients = await self._store.list_clients()
        no_contact = [c.id for c in clients if not apps.get(c.id, _NO_CONTACT).contact]
        return KeyReport(now, tuple(old), tuple(unused), tuple(orphans), tuple(no_contact))

    # -- internals ------------------------------------------------------------------------------

    async def _record(self, key_id: str) -> ApiKeyRecord:
        if not isinstance(key_id, str) or _KEY_ID_RE.fullmatch(key_id) is None:
            raise KeyNotFound("no such API key", diagnosis="key id: malformed")
        rec = await self._store.get_api_key(key_id)
        if rec is None:
            raise KeyNotFound("no such API key", diagnosis=f"key {key_id} not found")
        return rec

    async def _push(self, event: dict[str, Any]) -> None:
        if self._publish is None:
            return
        try:
            await self._publish(event)
        except Exception as exc:  # committed already: the change feed still carries it
            log.warning(
                "%s not pushed (%s); nodes apply it on their next poll",
                event["type"],
                type(exc).__name__,
            )


_NO_CONTACT = ApplicationContact(client_id="")


def _check_client_id(client_id: str) -> None:
    if (
        not isinstance(client_id, str)
        or not 0 < len(client_id) <= MAX_CLIENT_ID
        or not client_id.isprintable()
        or any(c.isspace() for c in client_id)
    ):
        raise KeyInvalid("invalid application id", diagnosis="application id malformed")


def _check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    if isinstance(scopes, str):
        raise KeyInvalid("scopes must be a list", diagnosis="scopes given as one string")
    found = set()
    for s in scopes:
        if not isinstance(s, str) or _SCOPE_RE.fullmatch(s) is None:
            raise KeyInvalid("invalid scope", diagnosis="scope malformed")
        found.add(s)
    if len(found) > MAX_SCOPES:
        raise KeyInvalid(f"at most {MAX_SCOPES} scopes", diagnosis="too many scopes")
    return tuple(sorted(found))


def _check_text(what: str, value: str, limit: int) -> None:
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        raise KeyInvalid(
            f"{what} must be at most {limit} printable characters", diagnosis=f"{what} invalid"
        )
