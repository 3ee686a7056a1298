"""API3 object property level authorization: sensitive values in answers (password hashes,
SSNs, card numbers that pass Luhn, private keys, secrets), properties the response schema does
not declare, and mass assignment — privileged properties (and properties seen in responses but
absent from the request schema) sent on create, kept only when they took effect.
"""

from __future__ import annotations

import re
from typing import Any

from bastion.scan.checks import register
from bastion.scan.checks._probe import json_leaves, path_for, send, unique_body
from bastion.scan.checks.base import ANONYMOUS, USER_A, Check, ScanContext
from bastion.scan.errors import SafetyRefused
from bastion.scan.model import Confidence, Severity
from bastion.scan.spec import ScanOperation

__all__ = ["Properties", "looks_like_card", "luhn_ok", "sensitive_fields", "undeclared"]

PRIVILEGED: dict[str, Any] = {
    "is_admin": True,
    "admin": True,
    "isAdmin": True,
    "role": "admin",
    "roles": ["admin"],
    "verified": True,
    "is_verified": True,
    "balance": 1000000,
    "credit": 1000000,
    "permissions": ["*"],
    "is_staff": True,
    "is_superuser": True,
    "approved": True,
}
_SENSITIVE_NAME = re.compile(
    r"(?i)^(password|passwd|pwd|password_?hash|hashed_?password|ssn|social_?security(_number)?|"
    r"card_?number|cc_?number|credit_?card|cvv|cvc|private_?key|secret|client_?secret|pin)$"
)
_HASH = re.compile(r"^(\$2[aby]?\$\d\d\$[./A-Za-z0-9]{53}|\$argon2(id|i|d)\$.+|\$[56]\$.+)$")
_SSN = re.compile(r"^\d{3}-\d{2}-\d{4}$")
_MASKED = re.compile(r"^(\*+|x+|X+|•+|\[REDACTED\]|\*+\d{4}|X+\d{4})$")
_CARD_NAME = re.compile(r"(?i)(card|pan$|cc_?num|ccnum|credit)")
#: Visa, Mastercard (51-55, 2221-2720), Amex, Discover, Diners, JCB: the lengths they issue.
_CARD_RANGE = re.compile(
    r"^(4\d{12}(\d{3})?(\d{3})?|5[1-5]\d{14}|2(2[2-9]|[3-6]\d|7[01]|720)\d{12}|3[47]\d{13}|"
    r"6(011|5\d\d)\d{12}|3(0[0-5]|[68]\d)\d{11}|35\d{14})$"
)
_PRIVATE_KEY = re.compile(r"-----BEGIN ([A-Z ]+ )?PRIVATE KEY-----")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a card number (13 to 19 digits)."""
    if not digits.isdigit() or not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def sensitive_fields(doc: Any) -> list[str]:
    """Names of properties in ``doc`` whose value is a secret or personal number."""
    out: list[str] = []
    for path, value in json_leaves(doc).items():
        name = re.sub(r"\[\d+\]", "", path).rsplit(".", 1)[-1]
        if not isinstance(value, str | int) or isinstance(value, bool) or value in ("", None):
            continue
        text = str(value)
        if _MASKED.match(text):
            continue  # already masked: what we want to see
        if (
            _HASH.match(text)
            or _PRIVATE_KEY.search(text)
            or (_SSN.match(text) and "ssn" in name.lower())
            or looks_like_card(text, name)
            or (_SENSITIVE_NAME.match(name) and len(text) >= 4)
        ) and name not in out:
            out.append(name)
    return out


def looks_like_card(text: str, name: str = "") -> bool:
    """A card number: Luhn-valid, and either in a card network's number range or in a field
    named like one (an id that happens to pass Luhn — one in ten do — is not enough)."""
    compact = text.replace(" ", "").replace("-", "")
    if not luhn_ok(compact):
        return False
    return bool(_CARD_NAME.search(name) or _CARD_RANGE.match(compact))


def undeclared(doc: Any, schema: Any, prefix: str = "") -> list[str]:
    """Properties of ``doc`` that ``schema`` does not declare (where it lists properties)."""
    if not isinstance(schema, dict):
        return []
    out: list[str] = []
    if isinstance(doc, dict) and isinstance(schema.get("properties"), dict):
        props = schema["properties"]
        extra = schema.get("additionalProperties", True)
        for key, value in doc.items():
            if key in props:
                out += undeclared(value, props[key], f"{prefix}{key}.")
            elif extra is False or not isinstance(extra, dict):
                out.append(prefix + key)
    elif isinstance(doc, list):
        for item in doc[:5]:
            for name in undeclared(item, schema.get("items"), prefix):
                if name not in out:
                    out.append(name)
    return out


@register
class Properties(Check):
    id = "properties"
    title = "Broken object property level authorization"
    owasp = "API3"
    cwe = "CWE-213"
    severity = Severity.HIGH
    remediation = (
        "Return only the properties the caller may see (an explicit response model); copy only "
        "declared, client-writable properties from request bodies."
    )
    order = 30

    def applies_to(self, op: ScanOperation) -> bool:
        return op.method in ("GET", "POST")

    async def run_operation(self, ctx: ScanContext, op: ScanOperation) -> None:
        if op.method == "GET":
            path = await path_for(ctx, op)
            if path is None:
                return
            reply = await send(ctx, "GET", path, identity=USER_A, operation=op)
            if reply.ok:
                self._inspect(ctx, op, reply)
            return
        if "{" not in op.path and op.body_schema is not None:
            await self._mass_assignment(ctx, op)

    def _inspect(self, ctx: ScanContext, op: ScanOperation, reply: Any) -> None:
        doc = reply.json()
        if doc is None:
            return
        names = sensitive_fields(doc)
        if names:
            ctx.report(
                self.finding(
                    ctx,
                    op,
                    "the answer carries sensitive data: " + ", ".join(names),
                    confidence=Confidence.FIRM,
                    key="sensitive-data",
                    evidence=(reply,),
                    title="Sensitive data in the response",
                )
            )
        extra = undeclared(doc, op.response_schema(reply.status))
        if extra:
            ctx.report(
                self.finding(
                    ctx,
                    op,
                    "the answer has properties its schema does not declare: "
                    + ", ".join(extra[:10]),
                    severity=Severity.MEDIUM,
                    confidence=Confidence.FIRM,
                    key="undeclared-properties",
                    evidence=(reply,),
                    title="Undeclared properties in the response",
                )
            )

    async def _mass_assignment(self, ctx: ScanContext, op: ScanOperation) -> None:
        schema = op.body_schema or {}
        declared = set(schema.get("properties") or {}) if isinstance(schema, dict) else set()
        base = unique_body(ctx.sample_body(op))
        if not isinstance(base, dict):
            return
        extra = {k: v for k, v in PRIVILEGED.items() if k not in declared}
        out_schema = op.response_schema(201) or op.response_schema(200) or {}
        for name, prop in (out_schema.get("properties") or {}).items():
            if name in declared or name in extra or not isinstance(prop, dict):
                continue
            if prop.get("type") == "boolean":
                extra[name] = True
        if not extra:
            return
        for who in (USER_A, ANONYMOUS):
            try:
                plain = await send(
                    ctx,
                    "POST",
                    ctx.fill_path(op),
                    identity=who,
                    json=unique_body(base),
                    operation=op,
                )
            except SafetyRefused:
                return
            if plain.ok:
                break
        else:
            return
        self._inspect(ctx, op, plain)
        sent = await send(
            ctx,
            "POST",
            ctx.fill_path(op),
            identity=who,
            json={**unique_body(base), **extra},
            operation=op,
        )
        before, after = plain.json(), sent.json()
        if not sent.ok or not isinstance(before, dict) or not isinstance(after, dict):
            return
        took = [k for k, v in extra.items() if after.get(k) == v and before.get(k) != v]
        if took:
            ctx.report(
                self.finding(
                    ctx,
                    op,
                    "properties the client should not set took effect: " + ", ".join(took),
                    confidence=Confidence.CERTAIN,
                    key="mass-assignment",
                    cwe="CWE-915",
                    evidence=(plain, sent),
                    notes=("without the extra properties", "with them"),
                    title="Mass assignment",
                )
            )
