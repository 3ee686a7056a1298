"""``bastion config check``: what is valid but dangerous, as warnings with locations.

Errors (invalid config) come from :func:`bastion.config.load.load_config`; this module only
looks at a valid config and says what a careful reviewer would flag.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from bastion.config.model import BastionConfig


@dataclass(frozen=True, slots=True)
class Finding:
    """One warning: where, what, and why it matters."""

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


def _is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_config(cfg: BastionConfig) -> list[Finding]:
    """Warnings for a valid config, in file order."""
    out: list[Finding] = []
    for i, lst in enumerate(cfg.listeners):
        if lst.tls is None and (lst.public or not _is_loopback(lst.host)):
            out.append(
                Finding(
                    f"listeners[{i}]",
                    f"{lst.bind} has no TLS but is reachable from other hosts: credentials "
                    "would cross the network in clear text",
                )
            )
    for i, iss in enumerate(cfg.issuers):
        if not iss.audiences:
            out.append(
                Finding(
                    f"issuers[{i}].audiences",
                    f"no audience for {iss.issuer!r}: a token minted for another API would be "
                    "accepted unless every route sets authn.audience",
                )
            )
        if iss.unsafe_allow_http_jwks:
            out.append(
                Finding(f"issuers[{i}].unsafe_allow_http_jwks", "JWKS fetched over plain HTTP")
            )
    for i, r in enumerate(cfg.routes):
        loc = f"routes[{i}]"
        if not r.ratelimit.limits:
            out.append(Finding(f"{loc}.ratelimit", f"route {r.name!r} has no rate limit"))
        elif not r.ratelimit.enforce:
            out.append(
                Finding(f"{loc}.ratelimit.enforce", "rate limits in shadow mode (not enforced)")
            )
        if "jwt" in r.authn.methods and r.authn.audience is None:
            names = r.authn.issuers
            trusted = [x for x in cfg.issuers if names is None or x.issuer in names]
            if any(not x.audiences for x in trusted):
                out.append(
                    Finding(
                        f"{loc}.authn.audience",
                        "JWTs accepted without an audience check (missing aud)",
                    )
                )
        if r.authn.unsafe_allow_anonymous:
            out.append(
                Finding(f"{loc}.authn.unsafe_allow_anonymous", "route accepts anonymous requests")
            )
        if r.proxy.unsafe_expose_upstream_errors:
            out.append(
                Finding(
                    f"{loc}.proxy.unsafe_expose_upstream_errors",
                    "upstream 5xx bodies reach clients",
                )
            )
        if (
            r.upstream is not None
            and r.upstream.scheme == "http"
            and not _is_loopback(r.upstream.host or "")
        ):
            out.append(
                Finding(f"{loc}.upstream", "upstream over plain HTTP to a non-loopback host")
            )
        if "*" in r.cors.allow_origins:
            out.append(Finding(f"{loc}.cors.allow_origins", "any origin may read responses ('*')"))
    return out
