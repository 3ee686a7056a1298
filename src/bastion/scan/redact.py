"""Redaction of the scanner's own credentials in everything it reports.

Reports go to CI logs, SARIF uploads and HTML files that many people read. Every secret the
scanner holds (tokens it obtained, passwords, API keys, client secrets) is registered here and
shortened wherever it appears: a token keeps its first characters so a reader can tell two
apart (``eyJhbG…[redacted]``), a password keeps nothing. Credential-carrying headers are
shortened whatever their value (a forged token is ours too).
"""

from __future__ import annotations

import re

__all__ = ["CREDENTIAL_HEADERS", "Redactor", "excerpt"]

#: Header names whose values are always shortened in reports (lower case).
CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-access-token",
    }
)
_KEEP = 6
_MIN_SECRET = 4


def excerpt(text: str, limit: int = 2048) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"…[{len(text) - limit} more characters]"


class Redactor:
    """Knows the scanner's secrets and removes them from text."""

    def __init__(self) -> None:
        self._secrets: dict[str, bool] = {}  # secret -> keep a prefix
        self._pattern: re.Pattern[str] | None = None

    def add(self, secret: str | None, *, keep_prefix: bool = True) -> None:
        """Register ``secret``; ``keep_prefix=False`` for passwords (nothing of them shown)."""
        if not secret or len(secret) < _MIN_SECRET:
            return
        if self._secrets.get(secret) is False:
            return
        self._secrets[secret] = keep_prefix
        self._pattern = None

    def shorten(self, secret: str, *, keep_prefix: bool = True) -> str:
        if not keep_prefix or len(secret) <= _KEEP * 2:
            return "[redacted]"
        return secret[:_KEEP] + "…[redacted]"

    def redact(self, text: str) -> str:
        """``text`` with every registered secret shortened (longest secrets first)."""
        if not self._secrets or not text:
            return text
        if self._pattern is None:
            alts = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in alts))
        return self._pattern.sub(
            lambda m: self.shorten(m.group(0), keep_prefix=self._secrets[m.group(0)]), text
        )

    def header(self, name: str, value: str) -> str:
        """A header value for a report: credential headers always shortened."""
        lower = name.lower()
        if lower in CREDENTIAL_HEADERS:
            if lower in ("cookie", "set-cookie"):
                return re.sub(r"=([^;,\s]+)", lambda m: "=" + self.shorten(m.group(1)), value)
            scheme, sep, rest = value.partition(" ")
            if sep and scheme.isalpha() and len(scheme) < 16:
                return f"{scheme} {self.shorten(rest)}"
            return self.shorten(value)
        return self.redact(value)
