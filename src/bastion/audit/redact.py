"""Redaction of secrets and personal data before anything is written to a log or an event.

Pure functions over strings. A :class:`Redactor` holds the compiled patterns (built once, with
the config's extra field names); the module-level :func:`redact_text`, :func:`redact_query` and
:func:`redact_headers` use one with the default names.

What is masked, wherever it appears in a string:

* JWTs and other base64url JSON blobs (``eyJ…``), credentials after ``Bearer``/``Basic``/…;
* our API keys ``bsk_<id>_<secret>`` → ``bsk_<id>_***`` (the id stays: it is public);
* vendor tokens with a known shape (AWS, GitHub, Slack, Stripe, Google), PEM private keys,
  passwords in URLs (``scheme://user:pass@``);
* ``name=value`` / ``name: value`` / ``"name": "value"`` pairs whose name is sensitive;
* card numbers of 13 to 19 digits (spaces or dashes allowed) that pass the Luhn check →
  ``****`` + last 4; digit runs that fail it (order numbers) are left alone;
* US social security numbers ``123-45-6789``.

Over-masking is the accepted failure mode: a value that merely looks like a secret is masked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote_plus

from mypy_extensions import mypyc_attr

from bastion.core.exchange import Headers
from bastion.core.sensitive import luhn_valid

REDACTED = "[REDACTED]"

HeaderSource = Headers | Mapping[str, str] | Iterable[tuple[str, str]]

#: Parameter, field and JSON key names whose value is always masked (lower-case, exact).
SENSITIVE_NAMES = frozenset(
    [
        "password",
        "passwd",
        "pwd",
        "pass",
        "secret",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "api_key",
        "apikey",
        "key",
        "client_secret",
        "authorization",
        "code",
        "session",
        "sig",
        "otp",
        "totp",
    ]
)

#: A name containing one of these (lower-case) is sensitive too: ``new_password``, ``x-auth-token``.
SENSITIVE_WORDS = tuple(
    [
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "apikey",
        "api_key",
        "api-key",
        "credential",
        "private_key",
        "private-key",
        "session",
        "authorization",
        "cookie",
        "signature",
    ]
)

#: Headers whose value is never kept, whatever it looks like.
SENSITIVE_HEADERS = frozenset(
    [
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "x-auth-token",
        "x-access-token",
        "x-refresh-token",
        "x-csrf-token",
        "x-xsrf-token",
        "x-session-token",
        "x-amz-security-token",
        "x-goog-api-key",
    ]
)


@dataclass(frozen=True)
class Detector:
    """One kind of secret: ``pattern`` is replaced by ``replacement`` (a string without group
    references, or a function of the match), tried only when one of ``hints`` (lower-case) occurs
    in the lower-cased text, which keeps clean text cheap."""

    name: str
    hints: tuple[str, ...]
    pattern: re.Pattern[str]
    replacement: str | Callable[[re.Match[str]], str]


def _keep_group(template: str) -> Callable[[re.Match[str]], str]:
    return lambda m: template.format(*m.groups())


#: The detectors, in the order they run.
DETECTORS: tuple[Detector, ...] = (
    Detector(
        "private_key",
        ("private key",),
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)",
            re.DOTALL,
        ),
        "[REDACTED_PRIVATE_KEY]",
    ),
    Detector(  # scheme://user:password@host keeps the user
        "url_password",
        ("://",),
        re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+):[^/\s@]+@"),
        _keep_group("{}:" + REDACTED + "@"),
    ),
    Detector(  # JWS/JWE compact serialisations and bare base64url JSON
        "jwt",
        ("eyj",),
        re.compile(r"eyJ[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*)*"),
        "[REDACTED_JWT]",
    ),
    Detector(  # our API keys: the id is public, the secret is not; no leading boundary
        "bastion_api_key",
        ("bsk_",),
        re.compile(r"bsk_([A-Za-z0-9-]{1,64})_[A-Za-z0-9_-]+"),
        _keep_group("bsk_{}_***"),
    ),
    Detector(
        "aws_key_id", ("akia", "asia"), re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED
    ),
    Detector(
        "github_token",
        ("gh", "github_pat_"),
        re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{20,})"),
        REDACTED,
    ),
    Detector("slack_token", ("xox",), re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), REDACTED),
    Detector(
        "stripe_key",
        ("k_live_", "k_test_"),
        re.compile(r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"),
        REDACTED,
    ),
    Detector("google_api_key", ("aiza",), re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), REDACTED),
    Detector(  # credentials after an HTTP auth scheme, wherever they appear
        "auth_scheme",
        ("bearer", "basic", "digest", "negotiate"),
        re.compile(r"(?i)\b(bearer|basic|digest|negotiate)(\s+)[A-Za-z0-9._~+/=-]{8,}"),
        _keep_group("{}{}" + REDACTED),
    ),
)


def _any_of(words: Iterable[str]) -> re.Pattern[str]:
    """One pattern finding any of ``words`` (a single scan instead of one per word)."""
    return re.compile("|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True)))


_ANY_HINT = _any_of(h for det in DETECTORS for h in det.hints)

#: Substrings (lower-case) of every sensitive name: a ``name=value`` pair is only looked for
#: when one occurs.
_NAME_HINTS = (
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "code",
    "session",
    "sig",
    "otp",
    "auth",
    "cookie",
    "credential",
)

# name <sep> value, for JSON ("password": "x"), query/form (password=x) and header-like text
# (password: x). The name is checked in Python, so one pattern serves any list of names.
_PAIR = re.compile(
    r"""(?<![\w.-])(?P<name>\\?["']?[A-Za-z][\w.-]{0,63}\\?["']?)"""
    r"""(?P<sep>\s*[:=]\s*)"""
    r"""(?P<val>\\"(?:[^"\\]|\\[^"])*\\"|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'"""
    r"""|(?:(?i:bearer|basic|digest)\s+)?[^\s&,;"'}\\]+)"""
)

# Candidate card numbers: 13 or more digits, single spaces or dashes between them (not the
# public id of one of our API keys, which may be all digits).
_DIGITS = re.compile(r"(?<!\d)(?<!bsk_)\d(?:[ -]?\d){12,}(?!\d)", re.ASCII)
_GROUP_SPLIT = re.compile(r"[ -]")
_SSN = re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])", re.ASCII)
_DIAGNOSIS_TAG = re.compile(r"([A-Za-z][\w .-]{0,39}): ")
# Byte -> 1 for an ASCII digit, 0 otherwise: translate(_DIGIT_FLAGS).count(1) counts the digits
# (translate's delete argument rebuilds a table on every call).
_DIGIT_FLAGS = bytes(1 if 48 <= b <= 57 else 0 for b in range(256))
# Hex digits and dashes only (request and trace ids, UUIDs): no detector hint and no
# ``name=value`` pair can occur in such a string (every hint holds another character; a test
# keeps it so), so only digit runs can need masking.
# s.strip(_HEX_CHARS) is empty for such a string (one C call, cheaper than a regex match).
_HEX_CHARS = "0123456789abcdefABCDEF-"
#: Strings of at most this length found clean are remembered (up to _CLEAN_CACHE_MAX of them):
#: user agents and routes repeat, and a hit costs a set lookup instead of a scan.
_CLEAN_CACHE_LEN = 512
_CLEAN_CACHE_MAX = 4096


def _mask_card_run(m: re.Match[str]) -> str:
    """Mask the Luhn-valid card number(s) inside one run of digit groups."""
    run = m.group(0)
    digits = "".join(_GROUP_SPLIT.split(run))
    if 13 <= len(digits) <= 19 and luhn_valid(digits):
        return "****" + digits[-4:]
    # A card followed or preceded by other numbers ("4111 1111 1111 1111 12/25"): try every
    # window of whole groups. A run of 20+ digits without separators is not a card.
    groups = _GROUP_SPLIT.split(run)
    seps = _GROUP_SPLIT.findall(run)
    out: list[str] = []
    i = 0
    while i < len(groups):
        hit = 0
        count = 0
        for j in range(i, len(groups)):
            count += len(groups[j])
            if count > 19:
                break
            if count >= 13 and luhn_valid("".join(groups[i : j + 1])):
                hit = j + 1
        if hit:
            out.append("****" + "".join(groups[i:hit])[-4:])
            if hit < len(groups):
                out.append(seps[hit - 1])
            i = hit
        else:
            out.append(groups[i])
            if i < len(seps):
                out.append(seps[i])
            i += 1
    return "".join(out)


def _remember(clean: set[str], s: str) -> None:
    """Add a string found clean to a bounded cache (emptied when full)."""
    if len(s) <= _CLEAN_CACHE_LEN:
        if len(clean) >= _CLEAN_CACHE_MAX:
            clean.clear()
        clean.add(s)


def _is_sensitive(name: str, exact: frozenset[str], words: tuple[str, ...]) -> bool:
    lowered = name.lower()
    return lowered in exact or any(w in lowered for w in words)


# Subclassed by plain Python (tests): allowed in the compiled build.
@mypyc_attr(allow_interpreted_subclasses=True)
class Redactor:
    """Compiled redaction rules; ``extra_fields`` adds names (query parameters, JSON keys,
    headers) whose values are always masked. Safe to share; it only remembers strings it found
    clean (bounded), never a secret."""

    def __init__(self, extra_fields: Iterable[str] = ()) -> None:
        extra = frozenset(f.strip().lower() for f in extra_fields if f.strip())
        self._names = SENSITIVE_NAMES | extra
        self._words = SENSITIVE_WORDS
        self._header_names = SENSITIVE_HEADERS | extra
        self._name_hints = _any_of(_NAME_HINTS + tuple(sorted(extra)))
        self._clean: set[str] = set()
        self._clean_queries: set[str] = set()

    def is_sensitive_name(self, name: str) -> bool:
        """True if a parameter or field called ``name`` carries a secret."""
        return _is_sensitive(name, self._names, self._words)

    def _mask_pair(self, m: re.Match[str]) -> str:
        name = m.group("name").strip("\\\"'")
        if not self.is_sensitive_name(name):
            return m.group(0)
        val = m.group("val")
        if val.startswith('\\"'):
            masked = f'\\"{REDACTED}\\"'
        elif val[0] in "\"'":
            masked = f"{val[0]}{REDACTED}{val[0]}"
        else:
            masked = REDACTED
        return m.group("name") + m.group("sep") + masked

    def redact_text(self, s: str) -> str:
        """``s`` with every secret this module knows masked (see the module docstring)."""
        if not s or s in self._clean:
            return s
        if not s.strip(_HEX_CHARS):
            # An id (unique per request: never remembered, it would only evict what repeats).
            # Clean for sure without a card's 13 digits or an SSN's two dashes; else scanned.
            # Its length bounds its digits: short ids need no count.
            n = len(s)
            if n < 13 and (n < 9 or s.count("-") < 2):
                return s
            digits = s.encode("ascii").translate(_DIGIT_FLAGS).count(1)
            if digits < 13 and (digits < 9 or s.count("-") < 2):
                return s
            return self._redact(s)
        out = self._redact(s)
        if out == s:
            _remember(self._clean, s)
        return out

    def _redact(self, s: str) -> str:
        lower = s.lower()
        if _ANY_HINT.search(lower):
            for det in DETECTORS:
                for hint in det.hints:
                    if hint in lower:
                        s = det.pattern.sub(det.replacement, s)
                        lower = s.lower()
                        break
        if ("=" in s or ":" in s) and self._name_hints.search(lower):
            s = _PAIR.sub(self._mask_pair, s)
        digits = s.encode("utf-8", "surrogatepass").translate(_DIGIT_FLAGS).count(1)
        if digits >= 13:
            s = _DIGITS.sub(_mask_card_run, s)
        if digits >= 9 and "-" in s:
            s = _SSN.sub("***-**-****", s)
        return s

    def redact_diagnosis(self, text: str) -> str:
        """An internal diagnosis (``"api_key: unknown key id"``) with its leading ``tag: `` kept
        as written and the rest passed through :meth:`redact_text`.

        Without this, a tag such as ``api_key`` would read as a sensitive ``name: value`` pair
        and mask the reason. A tag that names a password or secret is not kept.
        """
        m = _DIAGNOSIS_TAG.match(text)
        if m is None or any(w in m.group(1).lower() for w in ("pass", "pwd", "secret", "cookie")):
            return self.redact_text(text)
        return m.group(0) + self.redact_text(text[m.end() :])

    def redact_query(self, query: str) -> str:
        """A raw query string (no ``?``) with sensitive parameters' values masked, then the rest
        passed through :meth:`redact_text` (percent-decoded first when that reveals a secret)."""
        if not query or query in self._clean_queries:
            return query
        parts: list[str] = []
        for pair in query.split("&"):
            name, eq, value = pair.partition("=")
            if eq and self.is_sensitive_name(unquote_plus(name)):
                parts.append(f"{name}={REDACTED}")
                continue
            if "%" in value or "+" in value:
                decoded = unquote_plus(value)
                cleaned = self.redact_text(decoded)
                if cleaned != decoded:
                    value = quote(cleaned, safe="*[]-_.")
            parts.append(name + eq + value)
        out = self.redact_text("&".join(parts))
        if out == query:
            _remember(self._clean_queries, query)
        return out

    def redact_headers(self, headers: HeaderSource) -> dict[str, str]:
        """Header name (lower-case) → value with credentials replaced by ``[REDACTED]`` and the
        other values passed through :meth:`redact_text`. Repeated headers are joined with ``, ``.
        """
        items: Iterable[tuple[str, str]]
        if isinstance(headers, Headers):
            items = headers.items
        elif isinstance(headers, Mapping):
            items = headers.items()
        else:
            items = headers
        out: dict[str, str] = {}
        for raw_name, value in items:
            name = raw_name.lower()
            if name in self._header_names or any(w in name for w in self._words):
                clean = REDACTED
            else:
                clean = self.redact_text(value)
            out[name] = f"{out[name]}, {clean}" if name in out else clean
        return out


_DEFAULT = Redactor()


def redact_text(s: str) -> str:
    """:meth:`Redactor.redact_text` with the default names."""
    return _DEFAULT.redact_text(s)


def redact_query(query: str) -> str:
    """:meth:`Redactor.redact_query` with the default names."""
    return _DEFAULT.redact_query(query)


def redact_headers(headers: HeaderSource) -> dict[str, str]:
    """:meth:`Redactor.redact_headers` with the default names."""
    return _DEFAULT.redact_headers(headers)
