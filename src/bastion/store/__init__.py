"""State stores behind one protocol: memory (unit tests), SQLite (embedded default),
PostgreSQL (distributed mode).

``open_store(url)`` builds the backend a config's ``store:`` URL names; the caller then awaits
``store.open()`` (connect; SQLite also migrates, PostgreSQL checks the schema) and, at
shutdown, ``store.close()``. ``upgrade_store(url)`` is ``bastion db upgrade``.
"""

from __future__ import annotations

import asyncio

from bastion.errors import ConfigError
from bastion.store.base import ApiKeyRecord, Change, ClientRecord, IpBlock, Revocation, Store
from bastion.store.memory import MemoryStore
from bastion.store.migrations import LATEST_VERSION
from bastion.store.postgres import PostgresStore, describe_target
from bastion.store.sqlite import SqliteStore, sqlite_schema_version

__all__ = [
    "ApiKeyRecord",
    "Change",
    "ClientRecord",
    "IpBlock",
    "MemoryStore",
    "PostgresStore",
    "Revocation",
    "SqliteStore",
    "Store",
    "open_store",
    "upgrade_store",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(url: str, *, spool_dir: str | None = None) -> Store:
    """The (not yet opened) store for ``url``: ``memory://``, ``sqlite:///PATH`` or
    ``postgresql://…``.

    ``sqlite:///bastion.db`` is relative to the working directory, ``sqlite:////var/lib/x.db``
    is absolute. ``spool_dir`` is where a PostgreSQL store spools audit records during an
    outage (None: no spool; writes fail while the server is down). Any other URL raises
    ConfigError, whose message never repeats the URL (it may hold a password).
    """
    if url == "memory://":
        return MemoryStore()
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path or "?" in path or "#" in path:
            raise ConfigError([f"store: {url!r} needs a file path, e.g. sqlite:///bastion.db"])
        return SqliteStore(path)
    if url.startswith(POSTGRES_SCHEMES):
        if len(url.split("://", 1)[1]) == 0:
            raise ConfigError(["store: a postgresql:// URL needs a host and a database"])
        return PostgresStore(url, spool_dir=spool_dir)
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise ConfigError(
        [
            f"store: unsupported store URL scheme {scheme!r}; "
            "use sqlite:///PATH, postgresql://HOST/DB or memory://"
        ]
    )


async def upgrade_store(url: str) -> tuple[str, int, int]:
    """Bring the schema of the store at ``url`` to this code's version (``bastion db upgrade``).

    Returns ``(where, version_before, version_after)``; ``where`` names the database without
    credentials. SQLite migrates when opened; memory has nothing to do. StoreError on failure.
    """
    store = open_store(url)
    if isinstance(store, PostgresStore):
        before, after = await store.upgrade()
        return describe_target(url), before, after
    if isinstance(store, SqliteStore):
        before = await asyncio.to_thread(sqlite_schema_version, store.path)
        await store.open()
        await store.close()
        return store.path, before, max(before, LATEST_VERSION)
    return url, LATEST_VERSION, LATEST_VERSION
