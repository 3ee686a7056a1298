"""Our own secrets never reach a report in full."""

from __future__ import annotations

from bastion.scan.redact import Redactor, excerpt


def test_tokens_shortened_passwords_removed() -> None:
    r = Redactor()
    r.add("eyJhbGciOiJIUzI1NiJ9.payload.signature")
    r.add("hunter2-password", keep_prefix=False)
    r.add("hunter2-password")  # a password stays fully hidden even if added again
    r.add("abc")  # too short to redact safely: ignored
    r.add(None)
    text = r.redact("token eyJhbGciOiJIUzI1NiJ9.payload.signature pw hunter2-password abc")
    assert "payload.signature" not in text
    assert "eyJhbG…[redacted]" in text
    assert "hunter2" not in text
    assert text.endswith("abc")
    assert Redactor().redact("nothing") == "nothing"


def test_credential_headers_always_shortened() -> None:
    r = Redactor()
    assert r.header("Authorization", "Bearer forged.token.value-1234") == "Bearer forged…[redacted]"
    assert r.header("X-API-Key", "k") == "[redacted]"
    assert "sessionvalue" not in r.header("Cookie", "sid=sessionvalue123; other=2")
    assert r.header("Content-Type", "application/json") == "application/json"


def test_excerpt() -> None:
    assert excerpt("abc", 10) == "abc"
    assert excerpt("a" * 20, 10) == "a" * 10 + "…[10 more characters]"
