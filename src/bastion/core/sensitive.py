"""Sensitive data in JSON values: card numbers, SSNs, IBANs, keys, tokens, hashes, field names.

Pure functions over plain values, no I/O. A :class:`ValueDetector` is data — a name, a regular
expression that finds candidates, an optional validator that confirms one (Luhn, mod-97, the SSN
ranges, a JOSE header) and a *hint*: a cheaper pattern every candidate contains, in the regex
dialect shared by Python and JSON Schema (ECMA-262 as ``jsonschema-rs`` reads it), so a compiled
schema can prove a whole document clean without a Python walk. Detectors live in the
:data:`DETECTORS` registry; :func:`register` adds one. Field names are the pseudo-detector
``field_name``: a key such as ``password_hash``, ``cardNumber`` or ``x-api-key``.

:class:`SensitiveScanner` compiles a selection of detectors (and extra field names) once; it is
immutable apart from a bounded cache of field names already classified, and safe to share.
Callers record *which* detector fired and *where*, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import jsonschema_rs
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.util import json_b64decode

from bastion.core.apikeys import ID_LENGTH, KEY_PREFIX, SECRET_LENGTH, parse_api_key
from bastion.core.fieldnames import FieldNames

REDACTED = "[REDACTED]"
#: The pseudo-detector that flags keys by their name rather than values by their content.
FIELD_NAME = "field_name"
#: Numbers at least this large (in absolute value) may be card numbers (13 digits and more).
CARD_NUMBER_FLOOR = 10**12


#: Every second digit from the right is doubled, and a two-digit result replaced by its sum.
_LUHN_DOUBLED = str.maketrans("0123456789", "0246813579")


def luhn_valid(digits: str) -> bool:
    """True if the string of ASCII digits passes the Luhn (mod 10) check."""
    kept = digits[-1::-2]
    doubled = digits[-2::-2].translate(_LUHN_DOUBLED)
    # The digits' values are their code points minus 48: summed in C, not digit by digit.
    total = sum((kept + doubled).encode("ascii", "replace")) - 48 * len(digits)
    return total % 10 == 0


def _card_brand_plausible(digits: str) -> bool:
    """The issuer prefix and length of a real card network (Visa, Mastercard, Amex, Discover,
    Diners, JCB, UnionPay, Maestro): order numbers that happen to pass Luhn mostly do not."""
    n, first = len(digits), digits[0]
    if first == "4":
        return True
    if first == "3":
        return n == 15 if digits[:2] in ("34", "37") else n >= 14
    if first in "56":
        return True
    return first == "2" and n == 16 and 2221 <= int(digits[:4]) <= 2720


_GROUP_SPLIT = re.compile(r"[ -]")


def find_card(run: str) -> str | None:
    """The card number (digits only) in a run of digit groups, or None.

    The whole run is tried first, then every window of whole groups, so ``4111 1111 1111 1111
    12/25`` still yields the card. A run of 20 digits or more without separators is no card.
    """
    groups = _GROUP_SPLIT.split(run)
    for i in range(len(groups)):
        count = 0
        for j in range(i, len(groups)):
            count += len(groups[j])
            if count > 19:
                break
            if count >= 13:
                digits = "".join(groups[i : j + 1])
                if _card_brand_plausible(digits) and luhn_valid(digits):
                    return digits
    return None


_SSN_PARTS = re.compile(r"([0-9]{3})-([0-9]{2})-([0-9]{4})")


def ssn_valid(text: str) -> bool:
    """A US social security number ``AAA-GG-SSSS`` outside the ranges never issued: area 000,
    666 or 900-999, group 00, serial 0000."""
    m = _SSN_PARTS.fullmatch(text)
    if m is None:
        return False
    area, group, serial = m.groups()
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


#: IBAN length per country (ISO 13616 registry).
IBAN_LENGTHS: dict[str, int] = {
    item[:2]: int(item[3:])
    for item in " ".join(
        (
            "AD:24 AE:23 AL:28 AT:20 AZ:28 BA:20 BE:16 BG:22 BH:22 BI:27 BR:29 BY:28 CH:21",
            "CR:22 CY:28 CZ:24 DE:22 DJ:27 DK:18 DO:28 EE:20 EG:29 ES:24 FI:18 FK:18 FO:18",
            "FR:27 GB:22 GE:22 GI:23 GL:18 GR:27 GT:28 HR:21 HU:28 IE:22 IL:23 IQ:23 IS:26",
            "IT:27 JO:30 KW:30 KZ:20 LB:28 LC:32 LI:21 LT:20 LU:20 LV:21 LY:25 MC:27 MD:24",
            "ME:22 MK:19 MN:20 MR:27 MT:31 MU:30 NI:28 NL:18 NO:15 OM:23 PK:24 PL:28 PS:29",
            "PT:25 QA:29 RO:24 RS:22 RU:33 SA:24 SC:31 SD:18 SE:24 SI:19 SK:24 SM:27 SO:23",
            "ST:25 SV:28 TL:23 TN:24 TR:26 UA:29 VA:22 VG:24 XK:20 YE:30",
        )
    ).split(" ")
}


def iban_valid(text: str) -> bool:
    """An IBAN (spaces allowed): the country's length and the ISO 7064 mod-97 check."""
    iban = text.replace(" ", "")
    if IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def jose_compact(text: str) -> bool:
    """A JWS (three parts) or JWE (five parts) compact serialisation: a protected header that is
    a JSON object with ``alg`` (and ``enc`` for JWE), read with joserfc, never verified."""
    try:
        if text.count(".") == 2:
            return "alg" in jws.extract_compact(text.encode("ascii")).headers()
        header = json_b64decode(text.split(".", 1)[0].encode("ascii"))
        return isinstance(header, dict) and "alg" in header and "enc" in header
    except (JoseError, ValueError, TypeError, KeyError):
        return False


@dataclass(frozen=True, slots=True)
class ValueDetector:
    """One kind of sensitive value. ``pattern`` finds candidates in a string, ``validator``
    (if any) confirms a candidate's text. ``hint`` is contained in every candidate and must be
    valid, with the same meaning, both for Python's ``re`` and for JSON Schema ``pattern``
    (literals and ASCII classes such as ``[0-9]``; not ``\\d``, ``\\w`` or ``\\b``, which
    ECMA-262 and Python read differently): the scanner searches it with ``jsonschema-rs``'s
    linear-time engine. ``min_length`` is the shortest string that can hold a candidate."""

    name: str
    description: str
    pattern: re.Pattern[str]
    hint: str
    min_length: int
    validator: Callable[[str], bool] | None = None
    scans_numbers: bool = False  # JSON numbers are checked too (as their decimal digits)

    def finds(self, text: str) -> Iterator[str]:
        """The confirmed matches in ``text`` (candidates the validator accepts)."""
        for m in self.pattern.finditer(text):
            found = m.group(0)
            if self.validator is None or self.validator(found):
                yield found


_B64 = r"[A-Za-z0-9+/]+={0,2}"
_CRYPT = r"[./A-Za-z0-9]"
_PASSWORD_HASH = "|".join(
    [
        rf"\$2[abxy]?\$[0-9]{{2}}\${_CRYPT}{{53}}",  # bcrypt
        rf"\$argon2(?:id|i|d)\$(?:v=[0-9]+\$)?m=[0-9]+,t=[0-9]+,p=[0-9]+\${_B64}\${_B64}",
        r"\$scrypt\$ln=[0-9]+,r=[0-9]+,p=[0-9]+\$[A-Za-z0-9+/.=]+\$[A-Za-z0-9+/.=]+",
        rf"\$7\${_CRYPT}{{11,}}\${_CRYPT}{{43}}",  # scrypt, crypt(3) form
        r"scrypt:[0-9]+:[0-9]+:[0-9]+\$[A-Za-z0-9]+\$[a-f0-9]{64,}",  # werkzeug
        r"\$pbkdf2(?:-sha(?:1|256|512))?\$[0-9]+\$[./A-Za-z0-9+=]+\$[./A-Za-z0-9+=]+",  # passlib
        r"pbkdf2_sha(?:1|256)\$[0-9]+\$[A-Za-z0-9./+=]+\$[A-Za-z0-9./+=]{20,}",  # django
        r"pbkdf2:sha(?:1|256|512):[0-9]+\$[A-Za-z0-9]+\$[a-f0-9]{40,}",  # werkzeug
        rf"\$[56]\$(?:rounds=[0-9]+\$)?{_CRYPT}{{1,16}}\${_CRYPT}{{43,86}}",  # sha-crypt
        rf"\$1\${_CRYPT}{{1,8}}\${_CRYPT}{{22}}",  # md5-crypt
        rf"\$y\${_CRYPT}+\${_CRYPT}+\${_CRYPT}{{43}}",  # yescrypt
    ]
)

#: Every known detector by name, in the order they are tried. See :func:`register`.
DETECTORS: dict[str, ValueDetector] = {}


def register(detector: ValueDetector) -> ValueDetector:
    """Add ``detector`` to :data:`DETECTORS` (its name must be new)."""
    if detector.name in DETECTORS or detector.name == FIELD_NAME:
        raise ValueError(f"a detector named {detector.name!r} exists already")
    re.compile(detector.hint)
    jsonschema_rs.validator_for({"pattern": detector.hint})  # the JSON Schema dialect too
    DETECTORS[detector.name] = detector
    return detector


for _detector in (
    ValueDetector(
        "private_key",
        "PEM private key block (RSA, EC, PKCS#8, OpenSSH, PGP)",
        re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
        hint="-----BEGIN",
        min_length=27,
    ),
    ValueDetector(
        "jwt",
        "JWS or JWE compact serialisation with a JOSE header",
        re.compile(r"eyJ[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*){2,4}"),
        hint="eyJ",
        min_length=12,
        validator=jose_compact,
    ),
    ValueDetector(
        "bastion_api_key",
        f"a Bastion API key ({KEY_PREFIX}<id>_<secret>)",
        re.compile(rf"{KEY_PREFIX}[a-z0-9]{{{ID_LENGTH}}}_[A-Za-z0-9_-]{{{SECRET_LENGTH}}}"),
        hint=KEY_PREFIX,
        min_length=len(KEY_PREFIX) + ID_LENGTH + 1 + SECRET_LENGTH,
        validator=lambda text: parse_api_key(text) is not None,
    ),
    ValueDetector(
        "password_hash",
        "password hash: bcrypt, argon2, scrypt, pbkdf2, sha-crypt, md5-crypt, yescrypt",
        re.compile(_PASSWORD_HASH),
        hint=r"\$(?:2[abxy]?\$|argon2|scrypt\$|pbkdf2|[1567y]\$)|pbkdf2[_:]|scrypt:",
        min_length=20,
    ),
    ValueDetector(
        "iban",
        "IBAN with a valid country length and mod-97 check",
        re.compile(
            r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4})+(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])"
        ),
        hint="[A-Z]{2}[0-9]{2}",
        min_length=15,
        validator=iban_valid,
    ),
    ValueDetector(
        "card_number",
        "payment card number, 13-19 digits, issuer prefix and Luhn check",
        re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,}(?![0-9])"),
        hint="[0-9](?:[ -]?[0-9]){12}",
        min_length=13,
        validator=lambda run: find_card(run) is not None,
        scans_numbers=True,
    ),
    ValueDetector(
        "us_ssn",
        "US social security number AAA-GG-SSSS outside the never-issued ranges",
        re.compile(r"(?<![0-9-])[0-9]{3}-[0-9]{2}-[0-9]{4}(?![0-9-])"),
        hint="[0-9]{3}-[0-9]{2}-[0-9]{4}",
        min_length=11,
        validator=ssn_valid,
    ),
):
    register(_detector)


def detector_names() -> tuple[str, ...]:
    """Every name a config may list: the registered detectors, then ``field_name``."""
    return (*DETECTORS, FIELD_NAME)


# -- the scanner ---------------------------------------------------------------------------------
def child_pointer(base: str, key: str | int) -> str:
    """The RFC 6901 JSON Pointer of ``key`` under ``base`` (``~`` and ``/`` escaped)."""
    if isinstance(key, int):
        return f"{base}/{key}"
    return f"{base}/{key.replace('~', '~0').replace('/', '~1')}"


class SensitiveScanner:
    """The selected detectors (default: all, ``field_name`` included), compiled once.

    Raises ValueError for an unknown detector name. Never stores a value it has seen, only
    field names it has classified (bounded)."""

    __slots__ = ("_hint", "_hint_search", "_min_length", "_numbers", "detectors", "names")

    def __init__(self, detectors: Iterable[str] | None = None, extra_fields: Iterable[str] = ()):
        chosen = set(detector_names() if detectors is None else detectors)
        unknown = sorted(chosen - set(detector_names()))
        if unknown:
            raise ValueError(f"unknown detector(s) {', '.join(unknown)}")
        self.detectors = tuple(d for name, d in DETECTORS.items() if name in chosen)
        self.names = FieldNames(extra_fields) if FIELD_NAME in chosen else None
        hint = "|".join(f"(?:{d.hint})" for d in self.detectors)
        self._hint = re.compile(hint) if hint else None
        # The same pattern on jsonschema-rs's regex engine (its `pattern` keyword searches):
        # 10-30x faster than Python's backtracking on digit runs. is_valid(text): a match.
        self._hint_search = jsonschema_rs.validator_for({"pattern": hint}) if hint else None
        self._min_length = min((d.min_length for d in self.detectors), default=0)
        self._numbers = any(d.scans_numbers for d in self.detectors)

    @property
    def min_length(self) -> int:
        """The shortest string in which a selected detector can find something."""
        return self._min_length

    @property
    def value_hint(self) -> str:
        """One pattern every value candidate of the selected detectors contains ('' if none)."""
        return self._hint.pattern if self._hint is not None else ""

    def hint_matches(self, text: str) -> bool:
        """Whether ``text`` contains the hint of a selected detector: False proves that
        :meth:`scan_string` finds nothing in it."""
        search = self._hint_search
        if search is None:
            return False
        try:
            return bool(search.is_valid(text))
        except (UnicodeEncodeError, ValueError):  # a lone surrogate: not UTF-8
            return self._hint is not None and self._hint.search(text) is not None

    def scan_string(self, text: str) -> tuple[str, ...]:
        """Names of the detectors that find something in ``text`` (empty: clean)."""
        if len(text) < self._min_length or not self.hint_matches(text):
            return ()
        return tuple(
            d.name
            for d in self.detectors
            if len(text) >= d.min_length and next(d.finds(text), None) is not None
        )

    def scan_number(self, value: float) -> tuple[str, ...]:
        """``('card_number',)`` for a JSON number that is a card number, else empty."""
        if (
            not self._numbers
            or isinstance(value, bool)
            or -CARD_NUMBER_FLOOR < value < CARD_NUMBER_FLOOR
        ):
            return ()
        if isinstance(value, float) and not value.is_integer():
            return ()
        return ("card_number",) if find_card(str(abs(int(value)))) else ()

    def is_sensitive_name(self, name: str) -> bool:
        """True if ``field_name`` is selected and a field called ``name`` is sensitive."""
        return self.names is not None and self.names.is_sensitive(name)

    @staticmethod
    def mask_string(text: str, found: tuple[str, ...]) -> str:
        """What replaces a string in which ``found`` detectors fired: ``****`` and the last four
        digits when it held only a card number, else ``[REDACTED]``."""
        if found == ("card_number",):
            for m in DETECTORS["card_number"].pattern.finditer(text):
                card = find_card(m.group(0))
                if card is not None:
                    return "****" + card[-4:]
        return REDACTED

    @property
    def key_hint(self) -> str:
        """One pattern every flagged object key contains: a sensitive name, or a value a
        detector finds ('' if nothing is selected)."""
        parts = [p for p in (self.names.hint if self.names else "", self.value_hint) if p]
        return "|".join(parts)

    def guard_schema(self, ref: str) -> dict[str, Any]:
        """A JSON Schema (2020-12) that every value on which nothing could fire satisfies.

        ``ref`` is where the caller places it (``#/$defs/…``), for the recursion into arrays
        and objects. A value that fails it is not necessarily sensitive: it needs a scan.
        """
        guard: dict[str, Any] = {"items": {"$ref": ref}, "additionalProperties": {"$ref": ref}}
        if self._hint is not None:
            guard["not"] = {
                "type": "string",
                "minLength": self._min_length,
                "pattern": self._hint.pattern,
            }
        if self._numbers:  # bounds apply to numbers only
            guard["exclusiveMaximum"] = CARD_NUMBER_FLOOR
            guard["exclusiveMinimum"] = -CARD_NUMBER_FLOOR
        if self.key_hint:
            guard["propertyNames"] = {"not": {"pattern": self.key_hint}}
        return guard

    def scan_json(self, doc: Any) -> list[tuple[str, str]]:
        """Every finding in a parsed JSON document as ``(JSON pointer, detector)``, in document
        order; a sensitive field name is reported once for its whole value."""
        found: list[tuple[str, str]] = []
        stack: list[tuple[str, Any]] = [("", doc)]
        while stack:
            where, value = stack.pop()
            if isinstance(value, str):
                found.extend((where, name) for name in self.scan_string(value))
            elif isinstance(value, int | float):
                found.extend((where, name) for name in self.scan_number(value))
            elif isinstance(value, dict):
                children: list[tuple[str, Any]] = []
                for key, child in value.items():
                    at = child_pointer(where, key)
                    if self.is_sensitive_name(key):
                        found.append((at, FIELD_NAME))
                    else:
                        children.append((at, child))
                stack.extend(reversed(children))
            elif isinstance(value, list):
                stack.extend(reversed([(child_pointer(where, i), v) for i, v in enumerate(value)]))
        return found
