"""The scenarios ``examples/demo.py`` runs: each one sends real requests (to the gateway, and
to the upstream directly where the point is to show what the gateway prevents), prints the
equivalent curl commands and returns a one-line result, or raises :class:`DemoFailure`.

Scenarios 12 to 15 attack the flaws ``examples/saas_api.py --vulnerable`` plants (listed in
``examples/ground_truth.yaml``): each succeeds against the upstream and is refused or cleaned
by the gateway.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

ORIGIN = "https://app.example"


class DemoFailure(Exception):
    """A scenario or a start-up step did not behave as expected; the message is one line."""


@dataclass(frozen=True)
class Answer:
    """One HTTP response: status, headers (lower-cased names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    def __str__(self) -> str:
        return f"{self.status} {self.headers.get('content-type', '')}".strip()


class Session(Protocol):
    """What a scenario uses of the running demo (``demo.Demo``)."""

    http: str
    https: str
    direct: str
    auth: str
    secrets: dict[str, str]
    leaked_id: str

    def call(
        self,
        method: str,
        url: str,
        *,
        auth: str | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Answer: ...

    def cli(self, *args: str) -> str: ...


def expect(ok: bool, expected: str, got: object) -> None:
    """Fail the current scenario with ``expected …, got …`` unless ``ok``."""
    if not ok:
        raise DemoFailure(f"expected {expected}, got {got}")


# -- scenarios --------------------------------------------------------------------------------------
Check = Callable[["Session"], str]
#: (title, curl commands, check); the check returns a one-line result or raises DemoFailure.
SCENARIOS: list[tuple[str, tuple[str, ...], Check]] = []
AUTH = '-H "Authorization: Bearer ${}"'


def scenario(title: str, *curl: str) -> Callable[[Check], Check]:
    """Register a scenario; ``curl`` lines may use {http}, {https}, {direct}, {key}, {token}…"""

    def register(check: Check) -> Check:
        SCENARIOS.append((title, curl, check))
        return check

    return register


def problem_code(r: Answer) -> str:
    """The ``code`` of an RFC 9457 problem answer (fails unless it is one)."""
    expect(r.headers.get("content-type") == "application/problem+json", "problem+json", r)
    return str(r.json().get("code"))


@scenario("An allowed request with an API key", "curl -s {key} {http}/api/invoices?user_id=1")
def allowed(d: Session) -> str:
    r = d.call("GET", f"{d.http}/api/invoices?user_id=1", auth="KEY")
    expect(r.status == 200, "200", r)
    expect(r.headers.get("cache-control") == "no-store", "Cache-Control: no-store", r.headers)
    return f"200 OK: {r.json()['total']} invoices of user 1, with Cache-Control: no-store"


@scenario("No credential", "curl -si {http}/api/invoices")
def no_key(d: Session) -> str:
    r = d.call("GET", f"{d.http}/api/invoices")
    expect(r.status == 401, "401", r)
    code, challenge = problem_code(r), r.headers.get("www-authenticate")
    expect(code == "authn.failed" and challenge is not None, "authn.failed + challenge", r)
    return f"401 application/problem+json, code {code}, WWW-Authenticate: {challenge}"


@scenario(
    "A forged token (the issuer's kid, an attacker's key, sub=admin)",
    "curl -si {forged} {http}/api/users/1",
)
def forged(d: Session) -> str:
    r = d.call("GET", f"{d.http}/api/users/1", auth="FORGED")
    expect(r.status == 401, "401", r)
    expect(problem_code(r) == "authn.failed", "code authn.failed", r.body[:80])
    return "401 with the same opaque answer as no credential (the reason is in the audit log)"


@scenario("A valid JWT (ES256, trusted issuer and audience)", "curl -s {token} {http}/api/echo")
def valid_jwt(d: Session) -> str:
    r = d.call("GET", f"{d.http}/api/echo", auth="TOKEN")
    expect(r.status == 200, "200", r)
    seen = r.json()["headers"]
    expect(seen.get("x-bastion-subject") == "alice", "x-bastion-subject: alice", seen)
    expect("authorization" not in seen, "no Authorization header upstream", seen)
    return "200 OK: the upstream got x-bastion-subject: alice and no Authorization header"


@scenario(
    "CORS preflights from an allowed and a foreign origin",
    "curl -si -X OPTIONS -H 'Origin: https://app.example' -H 'Access-Control-Request-Method: POST' {http}/api/invoices",
    "curl -si -X OPTIONS -H 'Origin: https://evil.example' -H 'Access-Control-Request-Method: POST' {http}/api/invoices",
)
def cors(d: Session) -> str:
    asked = {"Access-Control-Request-Method": "POST"}
    ok = d.call("OPTIONS", f"{d.http}/api/invoices", headers={"Origin": ORIGIN, **asked})
    expect(ok.status == 204, "204 for the allowed origin", ok)
    expect(ok.headers.get("access-control-allow-origin") == ORIGIN, "its origin echoed", ok.headers)
    evil = d.call(
        "OPTIONS", f"{d.http}/api/invoices", headers={"Origin": "https://evil.example", **asked}
    )
    expect(evil.status == 403, "403 for a foreign origin", evil)
    expect("access-control-allow-origin" not in evil.headers, "no ACAO", evil.headers)
    return f"{ORIGIN}: 204 with Access-Control-Allow-Origin; https://evil.example: 403, no CORS headers"


@scenario(
    "An oversized body (70 000 bytes; the limit is 64 KiB)",
    "head -c 70000 /dev/zero | curl -si -X POST {key} --data-binary @- {http}/api/echo",
)
def oversized(d: Session) -> str:
    r = d.call("POST", f"{d.http}/api/echo", auth="KEY", body=b"\0" * 70_000)
    expect(r.status == 413, "413", r)
    return f"413 application/problem+json, code {problem_code(r)}; the upstream never saw it"


@scenario("HTTPS with HSTS", "curl -si --cacert .demo/cert.pem {https}/api/health")
def hsts(d: Session) -> str:
    r = d.call("GET", f"{d.https}/api/health")
    value = r.headers.get("strict-transport-security", "")
    expect(r.status == 200 and "max-age=31536000" in value, "200 with HSTS", r.headers)
    expect("includeSubDomains" in value, "includeSubDomains", value)
    return f"200 OK over TLS, Strict-Transport-Security: {value}"


@scenario(
    "An upstream 500 with a stack trace",
    "curl -s {direct}/api/boom            # the upstream itself",
    "curl -si {key} {http}/api/boom",
)
def boom(d: Session) -> str:
    raw = d.call("GET", f"{d.direct}/api/boom")
    expect(raw.status == 500 and b"Traceback" in raw.body, "a 500 traceback upstream", raw)
    r = d.call("GET", f"{d.http}/api/boom", auth="KEY")
    expect(r.status == 502 and b"Traceback" not in r.body, "502 without the traceback", r)
    return f"upstream: 500 with a Python traceback; via Bastion: 502, code {problem_code(r)}"


@scenario(
    "Version headers of the upstream stripped",
    "curl -si {direct}/api/health         # the upstream itself",
    "curl -si {http}/api/health",
)
def version_headers(d: Session) -> str:
    leaks = ("server", "x-powered-by")
    raw = d.call("GET", f"{d.direct}/api/health")
    expect(all(h in raw.headers for h in leaks), "Server and X-Powered-By upstream", raw.headers)
    r = d.call("GET", f"{d.http}/api/health")
    expect(r.status == 200 and not any(h in r.headers for h in leaks), "both removed", r.headers)
    shown = ", ".join(f"{h}: {raw.headers[h]}" for h in leaks)
    return f"upstream sends {shown}; via Bastion neither"


@scenario(
    "A burst of 10 requests (limit: 5/s and 1000/h per caller)",
    "for i in $(seq 10); do curl -s -o /dev/null -w '%{{http_code}} ' {key} {http}/api/invoices; done",
)
def burst(d: Session) -> str:
    time.sleep(1.0)  # the caller's budget refills after the earlier scenarios: a clean burst
    answers = [d.call("GET", f"{d.http}/api/invoices", auth="KEY") for _ in range(10)]
    codes = [a.status for a in answers]
    refused = [a for a in answers if a.status == 429]
    expect(
        codes[:5] == [200] * 5 and bool(refused) and set(codes) == {200, 429},
        "5 answered, then 429s",
        codes,
    )
    expect(all(a.headers.get("retry-after") for a in refused), "Retry-After on every 429", codes)
    wait = refused[0].headers["retry-after"]
    return (
        f"{codes.count(200)} answered, then {len(refused)} refused with 429 (Retry-After: {wait})"
    )


@scenario(
    "A leaked key revoked with `bastion keys revoke`",
    "{bastion} keys revoke {leaked_id} -c {config}",
    "curl -si {leaked} {http}/api/invoices",
)
def revoke(d: Session) -> str:
    before = d.call("GET", f"{d.http}/api/invoices", auth="LEAKED")
    expect(before.status == 200, "200 before the revocation", before)
    d.cli("keys", "revoke", d.leaked_id)
    revoked_at, status = time.monotonic(), 200
    while status != 401 and time.monotonic() - revoked_at < 3:
        time.sleep(0.2)
        status = d.call("GET", f"{d.http}/api/invoices", auth="LEAKED").status
    expect(status == 401, "401 within 3 s of the revocation", status)
    took = time.monotonic() - revoked_at
    return f"200 before; 401 {took:.1f} s after the revocation (the change feed picked it up)"


# -- the planted flaws (saas_api.py --vulnerable; examples/ground_truth.yaml) ----------------------
def as_user(user_id: int) -> dict[str, str]:
    """The identity header the gateway would send for user ``user_id`` (direct calls)."""
    return {"x-bastion-subject": str(user_id)}


JSON = {"Content-Type": "application/json"}
IS_ADMIN = b'{"is_admin": true}'


@scenario(
    "A BOLA: Bob (user 2) reads invoice 7, which is Carol's",
    "curl -s -H 'x-bastion-subject: 2' {direct}/api/invoices/7   # the upstream itself",
    "curl -si {bob} {http}/api/invoices/7",
)
def bola(d: Session) -> str:
    raw = d.call("GET", f"{d.direct}/api/invoices/7", headers=as_user(2))
    expect(raw.status == 200 and raw.json()["user_id"] == 3, "Carol's invoice upstream", raw)
    r = d.call("GET", f"{d.http}/api/invoices/7", auth="BOB")
    expect(r.status == 403 and b"amount_cents" not in r.body, "403 without the invoice", r)
    return (
        f"upstream: 200 with user 3's invoice; via Bastion: 403, code {problem_code(r)} "
        "(x-bastion-owner: the owner is looked up and is not Bob)"
    )


@scenario(
    "Mass assignment: a user sends is_admin to become an administrator",
    """curl -s -X PATCH -H 'x-bastion-subject: 4' -d '{{"is_admin": true}}' {direct}/api/users/4""",
    """curl -si -X PATCH {bob} -H 'Content-Type: application/json' -d '{{"is_admin": true}}' {http}/api/users/2""",
)
def mass_assignment(d: Session) -> str:
    raw = d.call("PATCH", f"{d.direct}/api/users/4", headers=as_user(4), body=IS_ADMIN)
    expect(raw.status == 200 and raw.json()["is_admin"] is True, "Dave made admin upstream", raw)
    r = d.call("PATCH", f"{d.http}/api/users/2", auth="BOB", headers=JSON, body=IS_ADMIN)
    expect(r.status == 400, "400", r)
    return (
        "upstream: Dave (user 4) is now an administrator; "
        f"via Bastion: 400, code {problem_code(r)} (is_admin is not in the request schema)"
    )


@scenario(
    "Excessive data exposure: a user record with SSN, card number and password hash",
    "curl -s -H 'x-bastion-subject: 2' {direct}/api/users/2   # the upstream itself",
    "curl -s {bob} {http}/api/users/2",
)
def exposure(d: Session) -> str:
    secret = ("ssn", "card_number", "password_hash")
    raw = d.call("GET", f"{d.direct}/api/users/2", headers=as_user(2))
    leaked = raw.json()
    expect(raw.status == 200 and all(f in leaked for f in secret), "the secrets upstream", raw)
    r = d.call("GET", f"{d.http}/api/users/2", auth="BOB")
    user = r.json()
    expect(r.status == 200 and not any(f in user for f in secret), "200 without them", user)
    expect(not any(str(leaked[f]).encode() in r.body for f in secret), "no secret value", r)
    expect(user.get("phone") == "[REDACTED]", "phone masked (x-bastion-sensitive)", user)
    return (
        f"upstream: 200 with {', '.join(secret)}; via Bastion: 200 without them "
        "(not in the response schema: removed), phone masked (x-bastion-sensitive, admins only)"
    )


@scenario(
    "An administrative operation without a role check: Bob deletes users",
    "curl -si -X DELETE -H 'x-bastion-subject: 2' {direct}/api/users/9   # the upstream itself",
    "curl -si -X DELETE {bob} {http}/api/users/10",
)
def bfla(d: Session) -> str:
    raw = d.call("DELETE", f"{d.direct}/api/users/9", headers=as_user(2))
    expect(raw.status == 204, "204 upstream", raw)
    r = d.call("DELETE", f"{d.http}/api/users/10", auth="BOB")
    expect(r.status == 403, "403", r)
    kept = d.call("GET", f"{d.direct}/api/users/10", headers=as_user(1))
    expect(kept.status == 200, "user 10 still there", kept)
    return (
        f"upstream: 204, user 9 deleted by Bob; via Bastion: 403, code {problem_code(r)} "
        "(x-bastion-roles: admin), user 10 still there"
    )


# -- the authorization server (bastion up runs it beside the gateway) -----------------------------
def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}", "Content-Type": "application/x-www-form-urlencoded"}


@scenario(
    "An OAuth access token by client credentials, used through the gateway, then revoked",
    "curl -s -u demo-service:$CLIENT_SECRET -d grant_type=client_credentials {auth}/token",
    'curl -s -H "Authorization: Bearer $SERVICE_TOKEN" {http}/api/echo',
    "curl -s -u demo-service:$CLIENT_SECRET -d token=$SERVICE_TOKEN {auth}/revoke",
)
def oauth(d: Session) -> str:
    creds = basic("demo-service", d.secrets["CLIENT_SECRET"])
    r = d.call("POST", f"{d.auth}/token", headers=creds, body=b"grant_type=client_credentials")
    expect(r.status == 200, "200 from /token", r)
    token = r.json()
    expect(token.get("token_type") == "Bearer", "a Bearer token", token.get("token_type"))
    d.secrets["SERVICE_TOKEN"] = str(token["access_token"])
    before = d.call("GET", f"{d.http}/api/echo", auth="SERVICE_TOKEN")
    expect(before.status == 200, "200 through the gateway with the new token", before)
    subject = before.json().get("headers", {}).get("x-bastion-subject")
    expect(subject == "demo-service", "x-bastion-subject: demo-service", subject)
    revoked = d.call(
        "POST", f"{d.auth}/revoke", headers=creds, body=f"token={token['access_token']}".encode()
    )
    expect(revoked.status == 200, "200 from /revoke", revoked)
    after = d.call("GET", f"{d.http}/api/echo", auth="SERVICE_TOKEN")
    expect(after.status == 401, "401 once revoked", after)
    return (
        f"token for demo-service ({token['expires_in']} s, ES256, typ at+jwt); 200 through the "
        "gateway; revoked at /revoke; the same call: 401"
    )
