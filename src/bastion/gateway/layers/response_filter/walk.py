"""One pass over a parsed JSON body: undeclared properties removed, sensitive values masked.

Pure: a :class:`BodyFilter` is made per body with the route's actions and the caller's roles,
edits the parsed document in place and records what it found in :class:`Findings` — JSON
pointers and detector names, never a value. Masking keeps the shape: a string becomes
``[REDACTED]`` (``****1111`` for a card number), a number ``null``, an object or array keeps its
keys and length with every leaf masked; booleans and nulls stay. ``remove`` deletes the property
(an array element becomes ``null``, so indexes do not shift).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bastion.core.sensitive import (
    CARD_NUMBER_FLOOR,
    FIELD_NAME,
    REDACTED,
    SensitiveScanner,
    child_pointer,
)
from bastion.gateway.layers.response_filter.plan import OPEN, Node

#: The reason recorded for a field masked because its schema says ``x-bastion-sensitive``.
SENSITIVE_MARK = "x-bastion-sensitive"
#: Pointers kept per kind of finding; the counts are always complete.
MAX_PATHS = 20
#: Keys shorter than this cannot hold a value any detector finds.
_MIN_KEY_SCAN = 11

SensitiveAction = Literal["mask", "remove"] | None


@dataclass(slots=True)
class Findings:
    """What one body held: undeclared properties and sensitive values (first pointers, counts)."""

    removed: list[str] = field(default_factory=list)
    masked: list[dict[str, str]] = field(default_factory=list)
    removed_count: int = 0
    masked_count: int = 0

    def undeclared(self, pointer: str) -> None:
        self.removed_count += 1
        if len(self.removed) < MAX_PATHS:
            self.removed.append(pointer)

    def sensitive(self, pointer: str, by: str) -> None:
        self.masked_count += 1
        if len(self.masked) < MAX_PATHS:
            self.masked.append({"path": pointer, "by": by})

    def __bool__(self) -> bool:
        return bool(self.removed_count or self.masked_count)


class BodyFilter:
    """Filters one body. ``remove_undeclared``: delete undeclared properties (else only record
    them). ``action``: what to do with sensitive values (None: only record). ``roles`` are the
    caller's; ``default_roles`` may see ``x-bastion-sensitive`` fields without roles of their
    own."""

    __slots__ = (
        "_action",
        "_default_roles",
        "_min_length",
        "_remove",
        "_roles",
        "_scanner",
        "_sensitive_name",
        "findings",
    )

    def __init__(
        self,
        scanner: SensitiveScanner,
        *,
        remove_undeclared: bool,
        action: SensitiveAction,
        roles: frozenset[str],
        default_roles: frozenset[str],
    ) -> None:
        self._scanner = scanner
        self._remove = remove_undeclared
        self._action = action
        self._roles = roles
        self._default_roles = default_roles
        self._min_length = scanner.min_length
        self._sensitive_name = scanner.is_sensitive_name
        self.findings = Findings()

    def run(self, doc: Any, plan: Node) -> Any:
        """The filtered document (edited in place where it is an object or array)."""
        if plan.sensitive is True and not self._may_see(plan):
            self.findings.sensitive("", SENSITIVE_MARK)
            if self._action == "mask":
                return self._masked(doc)
            return None if self._action == "remove" else doc
        holder = [doc]
        self._item(holder, 0, "", doc, plan, "", plan.sensitive is None)
        return holder[0]

    # -- one value --------------------------------------------------------------------------
    def _item(
        self,
        container: Any,
        key: Any,
        seg: str | int,
        value: Any,
        node: Node,
        at: str,
        guarded: bool,
    ) -> None:
        """Filter ``container[key]``. ``at`` is the container's pointer and ``seg`` the
        value's segment in it ("" for the root); the value's own pointer is built only when it
        is a container or a finding."""
        kind = type(value)
        if kind is dict:
            self._object(value, node, child_pointer(at, seg) if seg != "" else at, guarded)
        elif kind is list:
            self._array(value, node, child_pointer(at, seg) if seg != "" else at, guarded)
        elif not guarded:
            return
        elif kind is str:
            if len(value) >= self._min_length:
                found = self._scanner.scan_string(value)
                if found:
                    where = child_pointer(at, seg) if seg != "" else at
                    self._withhold(container, key, where, ",".join(found), found)
        elif (kind is int or kind is float) and not -CARD_NUMBER_FLOOR < value < CARD_NUMBER_FLOOR:
            found = self._scanner.scan_number(value)
            if found:
                where = child_pointer(at, seg) if seg != "" else at
                self._withhold(container, key, where, ",".join(found), found)

    def _segment(self, key: str) -> str:
        """A key as a recorded pointer may show it: never a value a detector flags."""
        if len(key) >= _MIN_KEY_SCAN and self._scanner.scan_string(key):
            return REDACTED
        return key

    def _masked(self, value: Any, found: tuple[str, ...] = ()) -> Any:
        """``value`` with every leaf masked, same shape."""
        kind = type(value)
        if kind is str:
            return self._scanner.mask_string(value, found or self._scanner.scan_string(value))
        if kind is int or kind is float:
            return None
        if kind is dict:
            return {k: self._masked(v) for k, v in value.items()}
        if kind is list:
            return [self._masked(v) for v in value]
        return value

    def _withhold(
        self, container: Any, key: Any, at: str, by: str, found: tuple[str, ...] = ()
    ) -> None:
        """Record a sensitive value and mask or remove it as the action says."""
        self.findings.sensitive(at, by)
        if self._action == "mask":
            container[key] = self._masked(container[key], found)
        elif self._action == "remove":
            if type(container) is dict:
                del container[key]
            else:
                container[key] = None

    def _may_see(self, node: Node) -> bool:
        allowed = node.roles if node.roles is not None else self._default_roles
        return not allowed.isdisjoint(self._roles)

    # -- containers -------------------------------------------------------------------------
    def _key_flagged(self, obj: dict[str, Any], key: str, at: str) -> bool:
        """A key outside the allow-list that names a secret or is one (a card number as a map
        key): handled here (True) or left for the value walk (False)."""
        if self._sensitive_name(key):
            self._withhold(obj, key, child_pointer(at, key), FIELD_NAME)
            return True
        found = self._scanner.scan_string(key) if len(key) >= _MIN_KEY_SCAN else ()
        if not found:
            return False
        self.findings.sensitive(child_pointer(at, REDACTED), ",".join(found))
        if self._action is not None:
            del obj[key]  # a key cannot be masked in place
        return True

    def _object(self, obj: dict[str, Any], node: Node, at: str, guarded: bool) -> None:
        props = node.props
        for key, value in list(obj.items()):
            child: Node | None
            seg = key
            if node.open:
                child, dynamic, seg = OPEN, True, "*"  # a map key may be data: not recorded
            else:
                child, dynamic = props.get(key), False
                if child is None:
                    child = next((n for p, n in node.patterns if p.search(key)), node.additional)
                    dynamic, seg = True, "*"
                if child is None or key in node.write_only:
                    seg = self._segment(key)  # the undeclared name is what the record is about
                    self.findings.undeclared(child_pointer(at, seg))
                    if self._remove:
                        del obj[key]
                        continue
                    child, dynamic = OPEN, True  # kept (report, block, shadow): still scanned
            mark = child.sensitive
            if mark is True and not self._may_see(child):
                self._withhold(obj, key, child_pointer(at, seg), SENSITIVE_MARK)
                continue
            child_guarded = guarded and mark is None
            if child_guarded:
                if dynamic:
                    if self._key_flagged(obj, key, at):
                        continue
                elif key in node.named:
                    self._withhold(obj, key, child_pointer(at, key), FIELD_NAME)
                    continue
            if self._worth(value, child_guarded):
                self._item(obj, key, seg, value, child, at, child_guarded)

    def _array(self, items: list[Any], node: Node, at: str, guarded: bool) -> None:
        each = OPEN if node.open or node.items is None else node.items
        prefix = () if node.open else node.prefix
        for i, value in enumerate(items):
            child = prefix[i] if i < len(prefix) else each
            if child.sensitive is True and not self._may_see(child):
                self._withhold(items, i, child_pointer(at, i), SENSITIVE_MARK)
                continue
            child_guarded = guarded and child.sensitive is None
            if self._worth(value, child_guarded):
                self._item(items, i, i, value, child, at, child_guarded)

    def _worth(self, value: Any, guarded: bool) -> bool:
        """Whether ``value`` may hold anything to change: a container, or (guarded) a string
        long enough or a number large enough for a detector."""
        kind = type(value)
        if kind is dict or kind is list:
            return True
        if not guarded:
            return False
        if kind is str:
            return len(value) >= self._min_length
        return (kind is int or kind is float) and not -CARD_NUMBER_FLOOR < value < CARD_NUMBER_FLOOR
