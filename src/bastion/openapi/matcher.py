"""Path templates (``/accounts/{account_id}/invoices``) compiled into a segment tree.

Matching walks the tree one segment at a time: a literal segment is one dict lookup, a segment
that is a whole template expression (``{id}``) matches any non-empty segment; only a segment
that mixes text and expressions (``{name}.json``) uses a regular expression, compiled here,
once. Literal segments are tried before templated ones, with backtracking, so ``/users/me``
wins over ``/users/{id}`` and ``/users/me/posts`` still reaches ``/users/{id}/posts`` when only
the latter exists (OpenAPI: concrete paths match before templated ones).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from urllib.parse import unquote

T = TypeVar("T")

_EXPR = re.compile(r"\{([^{}/]+)\}")


class TemplateError(ValueError):
    """A path template that cannot be compiled (message says why)."""


@dataclass(slots=True)
class _Pattern:
    """A templated segment: a whole segment (``regex`` None) or a regex, one group per value.
    Values are captured by position; the registered template names them."""

    count: int
    regex: re.Pattern[str] | None


@dataclass(slots=True)
class _Node(Generic[T]):
    static: dict[str, _Node[T]] = field(default_factory=dict)
    templated: list[tuple[str, _Pattern, _Node[T]]] = field(default_factory=list)
    value: tuple[T, tuple[str, ...]] | None = None


def parse_template(template: str) -> tuple[list[str], list[str]]:
    """``(segments, parameter names)`` of a template; TemplateError if malformed."""
    if not template.startswith("/"):
        raise TemplateError("a path must start with '/'")
    if "?" in template or "#" in template:
        raise TemplateError("a path must not contain '?' or '#'")
    segments = template.split("/")[1:]
    names: list[str] = []
    for seg in segments:
        rest = _EXPR.sub("", seg)
        if "{" in rest or "}" in rest:
            raise TemplateError(f"unbalanced braces in segment {seg!r}")
        for name in _EXPR.findall(seg):
            if name in names:
                raise TemplateError(f"parameter {name!r} appears twice")
            names.append(name)
    return segments, names


def _pattern(segment: str) -> _Pattern | None:
    names = _EXPR.findall(segment)
    if not names:
        return None
    if _EXPR.fullmatch(segment):
        return _Pattern(1, None)
    parts = _EXPR.split(segment)  # text, name, text, name, …, text
    regex = "".join(
        re.escape(p) if i % 2 == 0 else f"(?P<g{i // 2}>[^/]+?)" for i, p in enumerate(parts)
    )
    return _Pattern(len(names), re.compile(regex + r"\Z"))


def shape(template: str) -> str:
    """The template with parameter names erased: two templates with one shape are the same
    path to a matcher (``/a/{x}`` and ``/a/{y}``)."""
    return _EXPR.sub("{}", template)


class PathMatcher(Generic[T]):
    """Maps request paths to the value registered for the matching template."""

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()

    def add(self, template: str, value: T) -> None:
        """Register ``template``; TemplateError if malformed or already registered."""
        segments, names = parse_template(template)
        node = self._root
        for seg in segments:
            pattern = _pattern(seg)
            if pattern is None:
                node = node.static.setdefault(seg, _Node())
                continue
            key = shape(seg)
            for existing_key, _, sub in node.templated:
                if existing_key == key:
                    node = sub
                    break
            else:
                sub = _Node()
                node.templated.append((key, pattern, sub))
                # Whole-segment expressions last: a partial one (``{n}.json``) is more specific.
                node.templated.sort(key=lambda e: e[1].regex is None)
                node = sub
        if node.value is not None:
            raise TemplateError("another path has the same template")
        node.value = (value, tuple(names))

    def match(self, path: str) -> tuple[T | None, dict[str, str]]:
        """The value for ``path`` (raw, starting with '/'; segments are percent-decoded before
        they are compared) and the path parameters (decoded), or ``(None, {})``."""
        segs = path.split("/")
        if "%" in path:
            # Literal segments are compared decoded too: /admin/%75sers is /admin/users to the
            # upstream, so it must not fall through to a less protected /admin/{x}.
            segs = [unquote(s) if "%" in s else s for s in segs]
        captured: list[str] = []
        # Greedy descent first (the literal segment, else the first templated one that
        # matches): whatever it finds is what the backtracking walk would find first, and it
        # is all most paths need. Only a dead end falls back to the full walk.
        found = _descend(self._root, segs, captured)
        if found is None:
            captured = []
            found = _walk(self._root, segs, 1, captured)
            if found is None:
                return None, {}
        value, names = found
        return value, dict(zip(names, captured, strict=False)) if names else {}


def _descend(
    node: _Node[T], segs: list[str], captured: list[str]
) -> tuple[T, tuple[str, ...]] | None:
    for i in range(1, len(segs)):
        seg = segs[i]
        sub = node.static.get(seg)
        if sub is None:
            if not seg or not node.templated:
                return None
            for _, pattern, candidate in node.templated:
                if pattern.regex is None:
                    captured.append(seg)
                    sub = candidate
                    break
                m = pattern.regex.match(seg)
                if m is not None:
                    for n in range(pattern.count):
                        captured.append(m.group(f"g{n}"))
                    sub = candidate
                    break
            if sub is None:
                return None
        node = sub
    return node.value


def _walk(
    node: _Node[T], segs: list[str], i: int, captured: list[str]
) -> tuple[T, tuple[str, ...]] | None:
    if i == len(segs):
        return node.value
    seg = segs[i]
    sub = node.static.get(seg)
    if sub is not None:
        found = _walk(sub, segs, i + 1, captured)
        if found is not None:
            return found
    if not seg:
        return None  # a template expression never matches an empty segment
    for _, pattern, sub in node.templated:
        mark = len(captured)
        if pattern.regex is None:
            captured.append(seg)
        else:
            m = pattern.regex.match(seg)
            if m is None:
                continue
            for n in range(pattern.count):
                captured.append(m.group(f"g{n}"))
        found = _walk(sub, segs, i + 1, captured)
        if found is not None:
            return found
        del captured[mark:]
    return None
