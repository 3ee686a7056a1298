"""``x-bastion-owner``: object-ownership rules written on an operation, parsed and checked.

::

    x-bastion-owner: {param: path.account_id, equals: principal.sub}
    x-bastion-owner: {param: path.org_id, equals: claims.org_id}
    x-bastion-owner: {param: path.account_id, in: claims.accounts}      # a list claim
    x-bastion-owner: {param: path.invoice_id, resolver: invoices}       # owner looked up
    x-bastion-owner:                                                     # every rule must pass
      - {param: path.account_id, in: claims.accounts}
      - {param: body.account_id, in: claims.accounts}

``param`` is ``path|query|header|cookie.<name>`` (a declared parameter) or ``body.<a.b>`` (a
field of the JSON body). ``equals``/``in`` name what the caller has: ``principal.sub``,
``principal.client_id`` or ``claims.<name>`` (dotted for nested claims; JWTs only). With a
``resolver`` the comparison applies to the object's owner as the resolver reports it, and
defaults to ``equals: principal.sub``.
"""

from __future__ import annotations

import re
from typing import Any, Literal, cast

from bastion.openapi.model import OwnerRule

_KEYS = frozenset({"param", "equals", "in", "resolver"})
_LOCATIONS = ("path", "query", "header", "cookie", "body")
_EXPECTED = re.compile(
    r"^(principal\.(sub|client_id)|claims\.[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*)$"
)
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def parse_owner_rules(
    value: Any, declared: set[tuple[str, str]], has_body: bool
) -> tuple[tuple[OwnerRule, ...], list[str]]:
    """The rules of one ``x-bastion-owner`` value and the problems found (``where: message``
    fragments relative to it). ``declared`` holds the operation's ``(location, name)``
    parameters (header names lower-case); ``has_body``: it declares a request body."""
    if value is None:
        return (), []
    items = value if isinstance(value, list) else [value]
    if not items:
        return (), ["an empty list of rules would allow everything: remove it or add a rule"]
    rules: list[OwnerRule] = []
    problems: list[str] = []
    for i, item in enumerate(items):
        where = f"[{i}]" if isinstance(value, list) else ""
        rule, problem = _parse_one(item, declared, has_body)
        if problem:
            problems.append(f"{where}: {problem}" if where else problem)
        elif rule is not None:
            rules.append(rule)
    return tuple(rules), problems


def _parse_one(
    item: Any, declared: set[tuple[str, str]], has_body: bool
) -> tuple[OwnerRule | None, str]:
    if not isinstance(item, dict):
        return None, "a rule is a mapping with param and equals, in or resolver"
    unknown = sorted(str(k) for k in item if k not in _KEYS)
    if unknown:
        return None, f"unknown key(s) {', '.join(unknown)} (use param, equals, in, resolver)"
    param = item.get("param")
    if not isinstance(param, str) or "." not in param:
        return None, "param must be 'path.<name>', 'query.<name>', … or 'body.<field>'"
    location, _, name = param.partition(".")
    if location not in _LOCATIONS or not name:
        return None, f"param {param!r}: location must be one of {', '.join(_LOCATIONS)}"
    if location == "header":
        name = name.lower()
    if location == "body":
        if not has_body:
            return None, f"param {param!r}: the operation declares no request body"
    elif (location, name) not in declared:
        return None, f"param {param!r}: the operation declares no such parameter"
    if "equals" in item and "in" in item:
        return None, "use either equals or in, not both"
    resolver = item.get("resolver")
    if resolver is not None and (not isinstance(resolver, str) or not _NAME.match(resolver)):
        return None, "resolver must be the name of a resolver in the authz config"
    match: Literal["equals", "in"] = "in" if "in" in item else "equals"
    expected = item.get(match)
    if expected is None:
        if resolver is None:
            return None, "a rule needs equals, in or resolver"
        expected = "principal.sub"
    if not isinstance(expected, str) or not _EXPECTED.match(expected):
        return None, (
            f"{match} must be principal.sub, principal.client_id or claims.<name>, not {expected!r}"
        )
    if match == "in" and not expected.startswith("claims."):
        return None, "in needs a list claim (claims.<name>)"
    loc = cast(Literal["path", "query", "header", "cookie", "body"], location)
    return OwnerRule(loc, name, expected, match, resolver), ""
