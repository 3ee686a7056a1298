"""``bastion config check``: what is valid but dangerous, as warnings with locations.

Errors (invalid config) come from :func:`bastion.config.load.load_config`; this module only
looks at a valid config and says what a careful reviewer would flag.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from bastion.config.model import BastionConfig, RouteConfig
from bastion.errors import ConfigError
from bastion.gateway.layers.authz.config import HttpResolverConfig
from bastion.gateway.layers.authz.layer import resolver_problems
from bastion.openapi.review import review
from bastion.openapi.spec import OpenApiSpec, SpecOptions, load_spec


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


def _openapi_findings(
    loc: str,
    r: RouteConfig,
    specs: dict[tuple[str, SpecOptions], OpenApiSpec],
    errors: list[str],
) -> list[Finding]:
    """Warnings about a route's OpenAPI enforcement; a document that does not compile, or
    rules naming resolvers the route does not define, go to ``errors``."""
    out: list[Finding] = []
    oa, authz = r.openapi, r.authz
    if oa.spec is None:
        return out
    key = (oa.spec, oa.spec_options())
    spec = specs.get(key)
    if spec is None:
        try:
            spec = specs[key] = load_spec(oa.spec, key[1])
        except ConfigError as exc:
            errors.extend(f"{loc}.openapi.spec: {p}" for p in exc.problems)
            return out
    errors.extend(f"{loc}.{p}" for p in resolver_problems(spec, authz))
    out.extend(Finding(f"{loc}.openapi.spec", message) for message in review(spec.operations))
    if not oa.enforce:
        out.append(Finding(f"{loc}.openapi.enforce", "OpenAPI enforcement in shadow mode"))
    if oa.additional_properties != "closed":
        out.append(
            Finding(
                f"{loc}.openapi.additional_properties",
                "request bodies accept undeclared properties (mass assignment)",
            )
        )
    if oa.undeclared_query != "refuse":
        out.append(Finding(f"{loc}.openapi.undeclared_query", "undeclared query parameters pass"))
    if oa.spec.startswith(("https://", "http://")) and oa.spec_sha256 is None:
        out.append(
            Finding(
                f"{loc}.openapi.spec_sha256",
                "the document is fetched from a URL without spec_sha256: whoever can change "
                "it there can change this route's protections at the next start",
            )
        )
    if oa.unsafe_allow_http_spec:
        out.append(
            Finding(f"{loc}.openapi.unsafe_allow_http_spec", "spec may be fetched over HTTP")
        )
    if not authz.enforce:
        out.append(
            Finding(f"{loc}.authz.enforce", "scope, role and ownership checks in shadow mode")
        )
    for j, res in enumerate(authz.resolvers):
        if not isinstance(res, HttpResolverConfig):
            continue
        if res.url.scheme == "http" and not _is_loopback(res.url.host or ""):
            out.append(
                Finding(
                    f"{loc}.authz.resolvers[{j}].url",
                    "ownership resolver over plain HTTP to a non-loopback host",
                )
            )
    return out


def _cluster_findings(cfg: BastionConfig) -> list[Finding]:
    """Multi-process settings that silently weaken limits or expose traffic."""
    out: list[Finding] = []
    if cfg.server.workers > 1 and cfg.cache is None:
        out.append(
            Finding(
                "server.workers",
                f"{cfg.server.workers} workers without `cache`: each worker enforces every rate "
                "limit on its own (a client gets up to that many times the limit) and learns "
                "revocations only from the store's change feed",
            )
        )
    if cfg.cache is not None:
        parsed = urlsplit(cfg.cache)
        if parsed.scheme == "redis" and not _is_loopback(parsed.hostname or ""):
            out.append(
                Finding("cache", "Redis reached without TLS on a non-loopback host (use rediss://)")
            )
    return out


def check_config(cfg: BastionConfig) -> list[Finding]:
    """Warnings for a valid config, in file order.

    Compiles each route's OpenAPI document (once per distinct one): ConfigError when one does
    not compile or its ownership rules name resolvers the route does not define."""
    out: list[Finding] = []
    specs: dict[tuple[str, SpecOptions], OpenApiSpec] = {}
    errors: list[str] = []
    for i, lst in enumerate(cfg.listeners):
        if lst.tls is None and (lst.public or not _is_loopback(lst.host)):
            out.append(
                Finding(
                    f"listeners[{i}]",
                    f"{lst.bind} has no TLS but is reachable from other hosts: credentials "
                    "would cross the network in clear text",
                )
            )
    out.extend(_cluster_findings(cfg))
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
        out.extend(_openapi_findings(loc, r, specs, errors))
    if errors:
        raise ConfigError(errors)
    return out
