"""One pass over a parsed JSON body: undeclared properties removed, sensitive values masked.

Pure: a :class:`BodyFilter` is made per body with the route's actions and the caller's roles,
edits the parsed document in place and records what it found in :class:`Findings` — JSON
pointers and detector names, never a value. Masking keeps the shape: a string becomes
``[REDACTED]`` (``****1111`` for a card number), a number ``null``, an object or array keeps its
keys and length with every leaf masked; booleans and nulls stay. ``remove`` deletes the property
(an array element becomes ``null``, so indexes do not shift).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from bastion.core.sensitive import (
    CARD_NUMBER_FLOOR,
    FIELD_NAME,
    REDACTED,
    SensitiveScanner,
    child_pointer,
)
from bastion.gateway.layers.response_filter.plan import CLOSED, OPEN, Node, arrays_closed
from bastion.openapi.model import Validator

#: The reason recorded for a field masked because its schema says ``x-bastion-sensitive``.
SENSITIVE_MARK = "x-bastion-sensitive"
#: Pointers kept per kind of finding; the counts are always complete.
MAX_PATHS = 20
#: Keys shorter than this cannot hold a value any detector finds.
_MIN_KEY_SCAN = 11
#: Array items in a row that fail their clean check before the walk stops checking them.
_MAX_MISSES = 8

SensitiveAction = Literal["mask", "remove"] | None
#: A validator only values the walk leaves alone satisfy, for (plan node, guarded), or None.
CleanCheck = Callable[[Node, bool], Validator | None]


@dataclass
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
    own. ``clean``, when given, returns for a plan node and a guarded flag a validator that only
    values this walk would leave alone satisfy (``plan.subtree_schema``), or None: an object or
    array below the root that satisfies it is not walked."""

    def __init__(
        self,
        scanner: SensitiveScanner,
        *,
        remove_undeclared: bool,
        action: SensitiveAction,
        roles: frozenset[str],
        default_roles: frozenset[str],
        clean: CleanCheck | None = None,
    ) -> None:
        self._scanner = scanner
        self._remove = remove_undeclared
        self._action = action
        self._roles = roles
        self._default_roles = default_roles
        self._min_length = scanner.min_length
        self._sensitive_name = scanner.is_sensitive_name
        self._clean = clean
        self.findings = Findings()

    def run(self, doc: Any, plan: Node) -> Any:
        """The filtered document (edited in place where it is an object or array)."""
        if plan.sensitive is True and not self._may_see(plan):
            self.findings.sensitive("", SENSITIVE_MARK)
            if self._action == "mask":
                return self._masked(doc)
            return None if self._action == "remove" else doc
        guarded = plan.sensitive is None
        kind = type(doc)
        if kind is dict:
            self._object(doc, plan, "", guarded)
        elif kind is list:
            self._array(doc, plan, "", guarded)
        elif guarded:
            holder = [doc]
            self._leaf(holder, 0, doc, "")
            return holder[0]
        return doc

    # -- one value --------------------------------------------------------------------------
    def _leaf(self, container: Any, key: Any, value: Any, where: str) -> None:
        """Scan the guarded string or number ``container[key]`` (at ``where``)."""
        kind = type(value)
        if kind is str:
            if len(value) < self._min_length:
                return
            found = self._scanner.scan_string(value)
        elif (kind is int or kind is float) and not -CARD_NUMBER_FLOOR < value < CARD_NUMBER_FLOOR:
            found = self._scanner.scan_number(value)
        else:
            return
        if found:
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
        write_only = node.write_only
        named = node.named
        is_open = node.open
        min_length = self._min_length
        clean = self._clean
        for key, value in list(obj.items()):
            seg: str = key
            dynamic = False
            if is_open:
                child = OPEN
                seg, dynamic = "*", True  # a map key may be data: not recorded
            else:
                declared = props.get(key)
                if declared is not None and key not in write_only:
                    child = declared
                else:
                    if declared is None:
                        declared = next(
                            (n for p, n in node.patterns if p.search(key)), node.additional
                        )
                        seg, dynamic = "*", True
                    if declared is None or key in write_only:
                        seg = self._segment(key)  # the undeclared name is what is recorded
                        self.findings.undeclared(child_pointer(at, seg))
                        if self._remove:
                            del obj[key]
                            continue
                        declared, dynamic = OPEN, True  # kept (report, block, shadow): scanned
                    child = declared
            mark = child.sensitive
            if mark is None:
                child_guarded = guarded
            elif mark is True and not self._may_see(child):
                self._withhold(obj, key, child_pointer(at, seg), SENSITIVE_MARK)
                continue
            else:
                child_guarded = False
            if child_guarded:
                if dynamic:
                    if self._key_flagged(obj, key, at):
                        continue
                elif key in named:
                    self._withhold(obj, key, child_pointer(at, key), FIELD_NAME)
                    continue
            kind = type(value)
            if kind is dict or kind is list:
                if clean is not None:
                    check = clean(child, child_guarded)
                    if check is not None and check.is_valid(value):
                        continue
                if kind is dict:
                    self._object(value, child, child_pointer(at, seg), child_guarded)
                else:
                    self._array(value, child, child_pointer(at, seg), child_guarded)
            elif not child_guarded:
                continue
            elif kind is str:
                if len(value) >= min_length:
                    self._leaf(obj, key, value, child_pointer(at, seg))
            elif (kind is int or kind is float) and not (
                -CARD_NUMBER_FLOOR < value < CARD_NUMBER_FLOOR
            ):
                self._leaf(obj, key, value, child_pointer(at, seg))

    def _array(self, items: list[Any], node: Node, at: str, guarded: bool) -> None:
        if node.open:
            each = OPEN
        elif node.items is not None:
            each = node.items
        elif arrays_closed(node):
            each = CLOSED  # an array where the schema allows none: nothing in it is declared
        else:
            each = OPEN  # an array without `items`: any items
        prefix = () if node.open else node.prefix
        first = len(prefix)  # items from here on are `each`
        hidden = each.sensitive is True and not self._may_see(each)
        each_guarded = guarded and each.sensitive is None
        clean = None
        if self._clean is not None and not hidden:
            clean = self._clean(each, each_guarded)
        misses = 0
        min_length = self._min_length
        for i, value in enumerate(items):
            child = each
            child_guarded = each_guarded
            if i < first:
                child = prefix[i]
                if child.sensitive is True and not self._may_see(child):
                    self._withhold(items, i, child_pointer(at, i), SENSITIVE_MARK)
                    continue
                child_guarded = guarded and child.sensitive is None
            elif hidden:
                self._withhold(items, i, child_pointer(at, i), SENSITIVE_MARK)
                continue
            kind = type(value)
            if kind is dict or kind is list:
                if i < first:
                    check = self._clean(child, child_guarded) if self._clean else None
                    if check is not None and check.is_valid(value):
                        continue
                elif clean is not None:
                    if clean.is_valid(value):
                        misses = 0
                        continue
                    misses += 1
                    if misses == _MAX_MISSES:
                        clean = None  # every item needs the walk: stop asking
                if kind is dict:
                    self._object(value, child, child_pointer(at, i), child_guarded)
                else:
                    self._array(value, child, child_pointer(at, i), child_guarded)
            elif not child_guarded:
                continue
            elif kind is str:
                if len(value) >= min_length:
                    self._leaf(items, i, value, child_pointer(at, i))
            elif (kind is int or kind is float) and not (
                -CARD_NUMBER_FLOOR < value < CARD_NUMBER_FLOOR
            ):
                self._leaf(items, i, value, child_pointer(at, i))
