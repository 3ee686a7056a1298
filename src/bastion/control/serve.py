"""``bastion control serve``: the admin API on its own listener, under uvicorn.

Wiring, from the config file: the store (applications, audit trail, keys, users); the user
directory and the signing keys of the authorization server when the file has an ``auth``
section (otherwise ``control.jwks_url``); KEYLIFE's KeyService when ``api_keys.pepper`` is set;
a publisher that pushes committed changes to every node through Redis when ``cache`` is set;
the revocation state of the store, so a revoked admin token stops working at once; and the
``on_disable`` hook that revokes a disabled user's refresh-token families.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import httpx
import uvicorn
from joserfc.jwk import KeySet

from bastion.config.model import BastionConfig
from bastion.control.admin import AdminApi, AdminContext, AdminTokenVerifier, build_admin_api
from bastion.control.admin.repo import control_repo
from bastion.control.admin.roles import ADMIN_ROLES
from bastion.control.admin.users import revoke_tokens_on_disable
from bastion.control.config import ControlConfig
from bastion.control.keys import KeyPolicy, KeyService
from bastion.core.clock import Clock, SystemClock
from bastion.errors import AuthenticationFailed, ConfigError
from bastion.events.bus import Event, EventBus
from bastion.store import open_store
from bastion.store.base import Store

log = logging.getLogger("bastion.control")

#: The largest JWKS document accepted from ``control.jwks_url``.
MAX_JWKS_BYTES = 256 * 1024


def control_settings(cfg: BastionConfig) -> ControlConfig:
    """The ``control`` section (defaults when absent) with its issuer resolved."""
    section: ControlConfig | None = getattr(cfg, "control", None)
    section = section or ControlConfig()
    issuer = section.issuer or (cfg.auth.issuer if cfg.auth is not None else None)
    if issuer is None:
        raise ConfigError(["control.issuer: set it, or add an 'auth' section to this file"])
    if cfg.auth is None and section.jwks_url is None:
        raise ConfigError(["control.jwks_url: needed when the file has no 'auth' section"])
    return section.model_copy(update={"issuer": issuer})


def redis_publisher(cfg: BastionConfig) -> Any:
    """Push committed changes through Redis (distributed mode); a failure is logged only: nodes
    also read every change from the store's change feed."""

    async def publish(event: Event) -> None:
        if cfg.cache is None:
            return
        from bastion.events.redis_bus import publish_control, redis_client

        client = redis_client(cfg.cache, timeout=max(1.0, cfg.cluster.redis_timeout))
        try:
            await publish_control(client, cfg.cluster.key_prefix, event)
        except Exception as exc:
            log.warning("control push of %s failed (%s)", event.get("type"), type(exc).__name__)
        finally:
            await client.aclose()

    return publish


def bus_publisher(cfg: BastionConfig, bus: EventBus | None) -> Any:
    """Publish on ``bus`` (``bastion up``: the gateway of this process shares it and applies
    a revocation at once) and push through Redis to the other nodes."""
    redis = redis_publisher(cfg)

    async def publish(event: Event) -> None:
        if bus is not None:
            bus.publish("control", event)
        await redis(event)

    return publish


class JwksFetcher:
    """The issuer's JWKS from ``url``, cached for ``ttl`` seconds; a failed refresh keeps the
    last good set for one more ``ttl`` and then fails closed (every token refused)."""

    def __init__(self, url: str, ttl: float, clock: Clock) -> None:
        self.url = url
        self.ttl = ttl
        self.clock = clock
        self._keys: KeySet | None = None
        self._at = -1e18
        self._lock = asyncio.Lock()

    async def __call__(self) -> KeySet:
        async with self._lock:
            age = self.clock.monotonic() - self._at
            if self._keys is not None and age < self.ttl:
                return self._keys
            try:
                async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as client:
                    r = await client.get(self.url)
                if r.status_code != 200 or len(r.content) > MAX_JWKS_BYTES:
                    raise ValueError(f"JWKS answered {r.status_code}")
                self._keys = KeySet.import_key_set(r.json())
                self._at = self.clock.monotonic()
            except Exception as exc:
                if self._keys is None or age > 2 * self.ttl:
                    raise AuthenticationFailed(diagnosis=f"JWKS unavailable: {exc}") from None
                log.warning("JWKS refresh failed (%s); using the last good set", exc)
            return self._keys


def revocation_check(store: Store, clock: Clock) -> Any:
    """``is_revoked(claims)`` from the store's active revocations (admin traffic is small:
    one indexed read per request keeps a revoked admin token from working anywhere)."""

    async def is_revoked(claims: dict[str, Any]) -> bool:
        now = clock.now()
        iat = claims.get("iat")
        for rev in await store.active_revocations(now):
            if rev.kind == "jti" and rev.value == claims.get("jti"):
                return True
            if rev.kind == "subject" and rev.value == claims.get("sub"):
                if not isinstance(iat, int | float) or rev.not_before is None:
                    return True
                if iat < rev.not_before:
                    return True
            client = claims.get("client_id") or claims.get("azp")
            if rev.kind == "client" and rev.value == client:
                if not isinstance(iat, int | float) or rev.not_before is None:
                    return True
                if iat < rev.not_before:
                    return True
        return False

    return is_revoked


async def build_from_config(
    cfg: BastionConfig,
    store: Store,
    *,
    clock: Clock | None = None,
    bus: EventBus | None = None,
) -> tuple[AdminApi, list[Any]]:
    """The admin API over an opened ``store``; also the objects to close at shutdown.
    ``bus``: an event bus shared with a gateway in this process (changes are published on it
    too)."""
    clock = clock or SystemClock()
    section = control_settings(cfg)
    closers: list[Any] = []
    publish = bus_publisher(cfg, bus)
    from bastion.authserver.oauth.repo import open_oauth_repo

    oauth = open_oauth_repo(store)
    ctx = AdminContext(
        store=store,
        repo=control_repo(store),
        clock=clock,
        publish=publish,
        issuer=section.issuer,
        oauth=oauth,
    )
    if cfg.api_keys.pepper is not None:
        ctx.keys = KeyService(
            store,
            cfg.api_keys.pepper.get_secret_value().encode(),
            policy=KeyPolicy.from_config(cfg.api_keys),
            clock=clock,
            publish=publish,
        )
    if cfg.auth is not None:
        from bastion.authserver.keys.signing import open_key_manager
        from bastion.authserver.users.service import open_user_service

        users = await open_user_service(cfg.auth.users, store, issuer=cfg.auth.issuer)
        missing = set(ADMIN_ROLES) - set(cfg.auth.users.mfa_required_roles)
        if missing:
            log.warning(
                "auth.users.mfa_required_roles does not list %s: such users can sign in "
                "without MFA, and the admin API refuses their tokens",
                ", ".join(sorted(missing)),
            )

        async def families(user_id: str, now: float) -> list[Any]:
            return list(await oauth.revoke_subject_families(user_id, now, "user"))

        users.on_disable.append(revoke_tokens_on_disable(ctx, families))
        ctx.users = users
        manager = await open_key_manager(
            cfg.auth.keys,
            store,
            token_max_lifetime=max(cfg.auth.access_token_ttl, cfg.auth.id_token_ttl),
        )
        closers.append(manager)
        keys: Any = manager.public_key_set
    else:
        if section.jwks_url is None:  # control_settings checked it; kept for the type checker
            raise ConfigError(["control.jwks_url: needed when the file has no 'auth' section"])
        keys = JwksFetcher(str(section.jwks_url), section.jwks_cache_ttl, clock)
    verifier = AdminTokenVerifier(
        issuer=section.issuer or "",
        audience=section.audience,
        keys=keys,
        clock=clock,
        is_revoked=revocation_check(store, clock),
        allowed_clients=frozenset(section.allowed_clients),
    )
    return build_admin_api(ctx, verifier), closers


class _Server(uvicorn.Server):
    """uvicorn's server, except that a SIGTERM/SIGINT that stopped it gracefully is not
    raised again afterwards: a requested stop exits 0, like ``bastion auth serve``."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


async def serve_control(cfg: BastionConfig) -> None:
    """Run the admin API until SIGINT/SIGTERM (a graceful stop)."""
    section = control_settings(cfg)
    if (section.tls_cert is None) != (section.tls_key is None):
        raise ConfigError(["control: set both tls_cert and tls_key, or neither"])
    store = open_store(cfg.store)
    await store.open()
    closers: list[Any] = []
    try:
        api, closers = await build_from_config(cfg, store)
        if section.tls_cert is None and section.host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("control.bind %s is not loopback and has no TLS", section.bind)
        config = uvicorn.Config(
            api.app,
            host=section.host,
            port=section.port,
            ssl_certfile=section.tls_cert,
            ssl_keyfile=section.tls_key,
            log_level="warning",
            access_log=False,
            server_header=False,
            date_header=True,
            lifespan="off",
        )
        log.info("admin API on %s (started %s)", section.bind, time.strftime("%H:%M:%S"))
        await _Server(config).serve()
    finally:
        for closer in closers:
            closer.close()
        await store.close()


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside a process that owns its signals (``bastion up``): it must not install
    signal handlers of its own; the host process stops it through :meth:`RunningControl.aclose`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class RunningControl:
    """The admin API started inside another server's process: its address, and how to stop."""

    server: uvicorn.Server
    task: asyncio.Task[None]
    sock: socket.socket
    store: Store
    owns_store: bool
    closers: list[Any] = field(default_factory=list)

    @property
    def address(self) -> tuple[str, int]:
        name = self.sock.getsockname()
        return str(name[0]), int(name[1])

    async def aclose(self, grace: float = 5.0) -> None:
        """Stop accepting, let in-flight requests end (up to ``grace`` s), close what was
        opened here."""
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), grace)
        except TimeoutError:
            self.server.force_exit = True
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        finally:
            self.sock.close()
            for closer in self.closers:
                closer.close()
            if self.owns_store:
                await self.store.close()


def _listen(host: str, port: int) -> socket.socket:
    """Bind here, so a taken port is an OSError for the caller (uvicorn would exit the
    process)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=512)
    sock.setblocking(False)
    return sock


async def start_control_server(
    cfg: BastionConfig,
    *,
    store: Store | None = None,
    bus: EventBus | None = None,
    clock: Clock | None = None,
) -> RunningControl:
    """Serve the admin API of ``cfg.control`` in this process (``bastion up``), on ``bus``
    shared with the gateway. OSError if the port cannot be bound; ConfigError for a bad
    ``control`` section. Returns once it accepts connections."""
    section = control_settings(cfg)
    if (section.tls_cert is None) != (section.tls_key is None):
        raise ConfigError(["control: set both tls_cert and tls_key, or neither"])
    owns_store = store is None
    if store is None:
        store = open_store(cfg.store)
        await store.open()
    closers: list[Any] = []
    sock: socket.socket | None = None
    try:
        api, closers = await build_from_config(cfg, store, clock=clock, bus=bus)
        if section.tls_cert is None and section.host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("control.bind %s is not loopback and has no TLS", section.bind)
        sock = _listen(section.host, section.port)
        config = uvicorn.Config(
            api.app,
            ssl_certfile=section.tls_cert,
            ssl_keyfile=section.tls_key,
            log_level="warning",
            access_log=False,
            server_header=False,
            date_header=True,
            lifespan="off",
        )
        server = _EmbeddedServer(config)
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                task.result()  # raises what stopped it
                raise OSError("the admin API stopped while starting")
            await asyncio.sleep(0.01)
    except BaseException:
        if sock is not None:
            sock.close()
        for closer in closers:
            closer.close()
        if owns_store:
            await store.close()
        raise
    running = RunningControl(server, task, sock, store, owns_store, closers)
    host, port = running.address
    scheme = "https" if section.tls_cert else "http"
    log.info("admin API listening on %s://%s:%d", scheme, host, port)
    return running
