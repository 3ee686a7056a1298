"""Which JSON field names carry secrets or personal data: ``password``, ``ssn``, ``cardNumber``.

A name is split into lower-case words (at ``_``, ``-``, ``.``, spaces and camelCase humps) and
is sensitive when it contains a sensitive word or phrase — unless a harmless last word makes it
metadata about the secret (``token_type``, ``api_key_id``, ``ssn_last4``). Word matching keeps
``classname`` (which contains "ssn") and ``secretary`` clean. Pure, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: A name holding one of these words is sensitive (names are split into lower-case words at
#: ``_``, ``-``, ``.``, spaces and camelCase humps: ``passwordHash`` → password, hash).
SENSITIVE_WORDS = _words(
    "password passwd pwd passphrase secret secrets ssn cvv cvv2 cvc cvc2 pin otp totp token "
    "tokens credential credentials salt apikey apisecret privatekey secretkey accesskey "
    "cardnumber creditcard ccnumber clientsecret accesstoken refreshtoken idtoken authtoken "
    "sessiontoken bearertoken sessionid passwordhash hashedpassword socialsecuritynumber "
    "accountnumber"
)
#: Runs of words that are sensitive together (``card_number``, ``x-api-key``, ``SessionId``).
SENSITIVE_PHRASES = frozenset(
    tuple(p.split())
    for p in (
        "card number",
        "credit card",
        "cc number",
        "api key",
        "api secret",
        "private key",
        "secret key",
        "access key",
        "client secret",
        "session id",
        "social security",
        "security code",
        "account number",
    )
)
#: A last word that turns a sensitive name into metadata about the secret: ``token_type``,
#: ``api_key_id``, ``password_updated_at``, ``ssn_last4``. It does not apply when the sensitive
#: words end the name (``session_id`` stays sensitive).
HARMLESS_SUFFIXES = _words(
    "type types expires expiry expiration exp ttl length len count hint hints policy url uri "
    "endpoint id ids at on date time updated created changed set required enabled present "
    "status strength last4 masked"
)
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+[0-9]*|[0-9]+")
_NAME_CACHE_MAX = 4096


def name_words(name: str) -> tuple[str, ...]:
    """The lower-case words of a field name: ``x-API-Key`` → ``('x', 'api', 'key')``."""
    return tuple(w.lower() for w in _WORD.findall(name))


class FieldNames:
    """Which field names are sensitive: the defaults plus ``extra`` names (split into words the
    same way; a multi-word name becomes a phrase). ``hint`` is a case-insensitive pattern that
    every sensitive name contains (a scoped ``(?i:…)`` group, valid for Python, jsonschema-rs
    and RE2)."""

    __slots__ = ("_cache", "_phrases", "_words", "hint")

    def __init__(self, extra: Iterable[str] = ()) -> None:
        words = set(SENSITIVE_WORDS)
        phrases = set(SENSITIVE_PHRASES)
        for name in extra:
            parts = name_words(name)
            if len(parts) == 1:
                words.add(parts[0])
            elif parts:
                phrases.add(parts)
                words.add("".join(parts))
        self._words = frozenset(words)
        self._phrases: dict[str, tuple[tuple[str, ...], ...]] = {}
        for phrase in sorted(phrases):
            self._phrases[phrase[0]] = (*self._phrases.get(phrase[0], ()), phrase)
        stems = sorted(words | set(self._phrases), key=lambda w: (-len(w), w))
        self.hint = "(?i:" + "|".join(re.escape(w) for w in stems) + ")"
        self._cache: dict[str, bool] = {}

    def is_sensitive(self, name: str) -> bool:
        """True if a field called ``name`` holds a secret or personal data."""
        known = self._cache.get(name)
        if known is None:
            known = self._classify(name_words(name))
            if len(self._cache) >= _NAME_CACHE_MAX:
                self._cache.clear()
            self._cache[name] = known
        return known

    def _classify(self, words: tuple[str, ...]) -> bool:
        last = len(words) - 1
        for i, word in enumerate(words):
            end = i if word in self._words else -1
            for phrase in self._phrases.get(word, ()):
                if words[i : i + len(phrase)] == phrase:
                    end = max(end, i + len(phrase) - 1)
            if end >= 0 and (end == last or words[last] not in HARMLESS_SUFFIXES):
                return True
        return False
