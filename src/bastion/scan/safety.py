"""What the scanner may do to the target: the safety policy and the ledger of created objects.

The rules, applied to every request before it is sent (:meth:`SafetyPolicy.decide`):

1. ``GET``, ``HEAD``, ``OPTIONS`` are always allowed.
2. Operations that change credentials or accounts or reset state (password, email, role,
   MFA, logout, revocation, API keys, ``…/reset``, ``…/createdb`` …, and writes on
   user/account paths) are refused
   unless ``--allow-account-mutation`` — except on an object the scanner created itself, where
   only the state-reset words still need the flag.
3. ``PUT``, ``PATCH``, ``DELETE`` on a concrete path below a templated one (``/invoices/7``)
   only on objects in the ledger (the scanner created them) or below them.
4. Everything else (``POST`` to a collection: creating things) is allowed and what it creates
   is recorded in the :class:`Ledger`, printed at the end of the scan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = ["CreatedObject", "Decision", "Ledger", "SafetyPolicy"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WRITE_METHODS = frozenset({"PUT", "PATCH", "DELETE"})
_ACCOUNT_WORDS = re.compile(
    r"(?i)(passw|passwd|pwd|credential|e-?mail|(^|[^a-z])roles?([^a-z]|$)|permission|"
    r"mfa|2fa|totp|otp([^a-z]|$)|logout|log-out|signout|sign-out|revoke|deactivat|suspend|"
    r"impersonat|api-?keys?)"
)
_ACCOUNT_PATHS = re.compile(r"(?i)/(users?|accounts?|members?|profiles?|me|self|customers?)(/|$)")
_RESET_WORDS = re.compile(
    r"(?i)(reset|createdb|dropdb|truncate|purge|wipe|seed|factory|flush|restore|migrat)"
)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class CreatedObject:
    """Something the scanner created: where it lives and who created it."""

    path: str  # the object's path on the target, e.g. /api/invoices/31
    operation: str  # the operation that created it (POST /api/invoices)
    identity: str
    deleted: bool = False


@dataclass
class Ledger:
    """Objects the scanner created, in order. Destructive requests are allowed on these."""

    objects: list[CreatedObject] = field(default_factory=list)

    def record(self, path: str, operation: str, identity: str) -> None:
        path = _norm(path)
        if not any(o.path == path for o in self.objects):
            self.objects.append(CreatedObject(path, operation, identity))

    def owns(self, path: str) -> bool:
        """Whether ``path`` is an object the scanner created, or below one."""
        path = _norm(path)
        return any(path == o.path or path.startswith(o.path + "/") for o in self.objects)

    def mark_deleted(self, path: str) -> None:
        path = _norm(path)
        self.objects = [
            CreatedObject(o.path, o.operation, o.identity, True) if o.path == path else o
            for o in self.objects
        ]


def _norm(path: str) -> str:
    if "://" in path:
        path = urlsplit(path).path
    return "/" + path.strip("/")


class SafetyPolicy:
    """Decides, from the method, the concrete path, and the operation it matches."""

    def __init__(self, ledger: Ledger, *, allow_account_mutation: bool = False) -> None:
        self.ledger = ledger
        self.allow_account_mutation = allow_account_mutation

    def is_account_mutation(self, method: str, path: str, text: str = "") -> bool:
        """Whether a request changes credentials/accounts or resets state. ``text`` is what
        else describes the operation (operationId, summary, path template)."""
        if method.upper() in SAFE_METHODS:
            return False
        words = f"{path} {text}"
        if _RESET_WORDS.search(words) or _ACCOUNT_WORDS.search(words):
            return True
        return method.upper() in WRITE_METHODS and bool(_ACCOUNT_PATHS.search(path))

    def decide(
        self, method: str, path: str, *, template: str | None = None, text: str = ""
    ) -> Decision:
        """Whether a request may be sent. ``template``: the matched operation's path
        template (None: an undocumented path); ``text``: operationId and summary."""
        method = method.upper()
        if method in SAFE_METHODS:
            return Decision(True)
        owned = self.ledger.owns(path)
        described = f"{template or ''} {text}"
        if owned:
            if _RESET_WORDS.search(f"{path} {described}") and not self.allow_account_mutation:
                return Decision(False, "resets state (needs --allow-account-mutation)")
            return Decision(True)
        if not self.allow_account_mutation and self.is_account_mutation(method, path, described):
            return Decision(
                False, "changes credentials, accounts or state (needs --allow-account-mutation)"
            )
        templated = template is None or "{" in template
        if method in WRITE_METHODS and templated and _has_object_segment(path, template):
            return Decision(False, f"{method} only on objects the scanner created")
        return Decision(True)


def _has_object_segment(path: str, template: str | None) -> bool:
    """Whether the request addresses an existing object: the template has a parameter, or
    (undocumented path) the path has more than one segment."""
    if template is not None:
        return "{" in template
    return len([p for p in path.split("/") if p]) > 1
