"""The whole ``bastion.yaml`` as pydantic models. Unknown keys are errors everywhere."""

from __future__ import annotations

from pydantic import Field, HttpUrl, field_validator

from bastion.authserver.config import AuthConfig
from bastion.config.types import Duration, Secret, StrictModel
from bastion.control.config import ControlConfig
from bastion.gateway.layers.audit.config import AuditConfig
from bastion.gateway.layers.authn.config import ApiKeysConfig, AuthnConfig, IssuerConfig
from bastion.gateway.layers.authz.config import AuthzConfig
from bastion.gateway.layers.cors.config import CorsConfig
from bastion.gateway.layers.openapi.config import OpenApiConfig
from bastion.gateway.layers.proxy.config import ProxyConfig
from bastion.gateway.layers.ratelimit.config import RateLimitConfig
from bastion.gateway.layers.response_filter.config import ResponseFilterConfig
from bastion.gateway.layers.transport.config import TransportConfig


class TlsConfig(StrictModel):
    """Certificate and key for an HTTPS listener. TLS 1.2 is the floor."""

    cert: str = Field(description="PEM certificate chain file.")
    key: str = Field(description="PEM private key file.")
    key_password: Secret | None = None
    min_version: str = Field(default="1.2", pattern=r"^1\.[23]$", description="'1.2' or '1.3'.")


class ListenerConfig(StrictModel):
    """A socket the gateway listens on."""

    name: str = Field(default="", description="Label used in logs.")
    bind: str = Field(description="host:port, e.g. 127.0.0.1:8443 or [::1]:8443.")
    tls: TlsConfig | None = None
    public: bool = Field(
        default=False, description="Reachable from outside; config check warns if it has no TLS."
    )

    @property
    def host(self) -> str:
        host, _, _ = self.bind.rpartition(":")
        return host.strip("[]")

    @property
    def port(self) -> int:
        return int(self.bind.rpartition(":")[2])

    @field_validator("bind")
    @classmethod
    def _bind(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("bind must be host:port with a port between 0 and 65535")
        return v


class ServerConfig(StrictModel):
    """Limits of the HTTP front end, applied before routing."""

    max_header_bytes: int = Field(default=16_384, ge=1024, description="431 above this.")
    max_url_bytes: int = Field(default=8_192, ge=256, description="414 above this.")
    max_headers: int = Field(default=100, ge=10, description="431 above this many header lines.")
    header_timeout: Duration = Field(
        default=10, gt=0, description="Time to receive a request head."
    )
    body_timeout: Duration = Field(default=30, gt=0, description="Time to receive a request body.")
    keepalive_timeout: Duration = Field(
        default=75, gt=0, description="Idle keep-alive connections closed after this."
    )
    workers: int = Field(
        default=1, ge=1, le=64, description="Worker processes (bastion gateway --workers)."
    )


class LayerSettings(StrictModel):
    """Per-layer settings; under `defaults` they apply to every route, a route overrides them."""

    transport: TransportConfig = Field(default_factory=TransportConfig)
    cors: CorsConfig = Field(default_factory=CorsConfig)
    authn: AuthnConfig = Field(default_factory=AuthnConfig)
    ratelimit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    openapi: OpenApiConfig = Field(default_factory=OpenApiConfig)
    authz: AuthzConfig = Field(default_factory=AuthzConfig)
    response_filter: ResponseFilterConfig = Field(default_factory=ResponseFilterConfig)
    proxy: ProxyConfig = Field(default_factory=ProxyConfig)


class RouteConfig(LayerSettings):
    """A route: requests whose host and path prefix match go to `upstream`."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    host: str | None = Field(default=None, description="Exact Host (no port); none: any host.")
    path_prefix: str = Field(default="/", description="Matches this path and everything below it.")
    upstream: HttpUrl | None = Field(
        default=None,
        description="http(s)://host:port[/base-path] of the service. Required by the gateway; "
        "unused in middleware mode (the wrapped app is the upstream).",
    )
    strip_prefix: bool = Field(default=False, description="Remove path_prefix before forwarding.")

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v.startswith("/") or "?" in v or "#" in v or ".." in v:
            raise ValueError("path_prefix must start with '/' and contain no '?', '#' or '..'")
        return v

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        return v.lower() if v else v


class ClusterConfig(StrictModel):
    """Distributed mode: how the nodes share state, and what a node does when a backend fails."""

    nodes: int = Field(
        default=1,
        ge=1,
        le=4096,
        description="Gateway processes sharing the rate limits (every worker on every host). "
        "While Redis cannot be reached, each one enforces 1/nodes of every limit locally.",
    )
    revocation_max_staleness: Duration = Field(
        default=5,
        gt=0,
        le=300,
        description="Longest a node may go without confirming that its revocation state is "
        "current (a change-feed poll that reached the store, or a Redis heartbeat). Past it, "
        "API keys and tokens are refused until the store or Redis answers again.",
    )
    store_outage_grace: Duration = Field(
        default=300,
        gt=0,
        le=86_400,
        description="How long API keys keep authenticating from the node's cache while the "
        "store cannot be reached (revocations still arrive through Redis); then they are "
        "refused.",
    )
    audit_spool_dir: str = Field(
        default="bastion-spool",
        min_length=1,
        description="Directory where a PostgreSQL store spools audit records while the "
        "database is unreachable; they are moved into it when it answers again.",
    )
    redis_timeout: Duration = Field(
        default=0.25,
        gt=0,
        le=10,
        description="Connect and read timeout of Redis calls. A rate-limit check that takes "
        "longer is decided by the local limiter.",
    )
    redis_retry: Duration = Field(
        default=1,
        gt=0,
        le=60,
        description="After a Redis failure, how long rate limits stay local before Redis is "
        "tried again.",
    )
    key_prefix: str = Field(
        default="bastion:",
        pattern=r"^[A-Za-z0-9:_.-]{1,64}$",
        description="Prefix of every Redis key Bastion uses, so several clusters can share "
        "one Redis.",
    )
    event_stream_maxlen: int = Field(
        default=100_000,
        ge=1000,
        description="Approximate bound (MAXLEN ~) of the Redis streams of audit records and "
        "security events.",
    )


class BastionConfig(StrictModel):
    """Root of ``bastion.yaml``."""

    version: int = Field(default=1, ge=1, le=1)
    store: str = Field(
        default="sqlite:///bastion.db",
        description="State store URL: sqlite:///PATH, memory://, or postgresql://USER@HOST/DB "
        "for distributed mode (apply the schema with `bastion db upgrade` first).",
    )
    cache: str | None = Field(
        default=None,
        description="Redis URL (redis://HOST:PORT/DB or rediss:// for TLS) for distributed "
        "mode: shared rate limits, revocation push to every node, event streams. None: all "
        "of that stays in each process.",
    )
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    listeners: list[ListenerConfig] = Field(
        default_factory=list,
        description="Sockets the gateway listens on; at least one to run the gateway (a file "
        "for `bastion auth serve` alone may have none).",
    )
    server: ServerConfig = Field(default_factory=ServerConfig)
    issuers: list[IssuerConfig] = Field(default_factory=list)
    api_keys: ApiKeysConfig = Field(default_factory=ApiKeysConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    change_poll_interval: Duration = Field(
        default=1.0, gt=0, le=60, description="How often a node polls the store's change feed."
    )
    routes: list[RouteConfig] = Field(
        default_factory=list,
        description="Where requests go; at least one to run the gateway.",
    )
    auth: AuthConfig | None = Field(
        default=None,
        description="The authorization server: `bastion auth serve` runs it, `bastion up` runs "
        "it beside the gateway (whose `jwt` routes then trust its tokens). None: no "
        "authorization server.",
    )
    control: ControlConfig | None = Field(
        default=None,
        description="The admin API: `bastion control serve` runs it, and `bastion up` runs it "
        "beside the gateway. None: `bastion control serve` uses defaults; `bastion up` does not "
        "serve it.",
    )


def cross_check(cfg: BastionConfig) -> list[str]:
    """Problems that involve several parts of the file, one ``location: message`` each."""
    problems: list[str] = []
    seen: set[str] = set()
    for i, r in enumerate(cfg.routes):
        if r.name in seen:
            problems.append(f"routes[{i}].name: {r.name!r} is used by an earlier route")
        seen.add(r.name)
    issuer_names = {i.issuer for i in cfg.issuers}
    if cfg.auth is not None:  # `bastion up` trusts its own authorization server
        issuer_names.add(cfg.auth.issuer)
    for i, r in enumerate(cfg.routes):
        if "jwt" in r.authn.methods and not issuer_names:
            problems.append(f"routes[{i}].authn.methods: 'jwt' needs at least one entry in issuers")
        for iss in r.authn.issuers or []:
            if iss not in issuer_names:
                problems.append(f"routes[{i}].authn.issuers: {iss!r} is not in issuers")
        if "api_key" in r.authn.methods and cfg.api_keys.pepper is None:
            problems.append(f"routes[{i}].authn.methods: 'api_key' needs api_keys.pepper")
    if not cfg.store.startswith(("sqlite:///", "memory://", "postgresql://", "postgres://")):
        problems.append("store: use sqlite:///PATH, postgresql://HOST/DB or memory://")
    if cfg.cache is not None and not cfg.cache.startswith(("redis://", "rediss://", "unix://")):
        problems.append("cache: use redis://HOST:PORT/DB, rediss://… or unix://PATH")
    if cfg.auth is not None and any(lst.bind == cfg.auth.bind for lst in cfg.listeners):
        problems.append("auth.bind: the authorization server needs a port of its own")
    if cfg.cluster.revocation_max_staleness <= cfg.change_poll_interval:
        problems.append(
            "cluster.revocation_max_staleness: must be longer than change_poll_interval, "
            "or every request would be refused between two polls"
        )
    return problems


def gateway_problems(cfg: BastionConfig) -> list[str]:
    """Problems that only matter when running the standalone gateway."""
    problems = []
    if not cfg.listeners:
        problems.append("listeners: at least one listener is required to run the gateway")
    if not cfg.routes:
        problems.append("routes: at least one route is required to run the gateway")
    problems += [
        f"routes[{i}].upstream: required when running the gateway"
        for i, r in enumerate(cfg.routes)
        if r.upstream is None
    ]
    return problems
