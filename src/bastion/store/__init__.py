"""State stores behind one protocol: memory (unit tests), SQLite (embedded default).

``open_store(url)`` builds the backend a config's ``store:`` URL names; the caller then awaits
``store.open()`` (connect and migrate) and, at shutdown, ``store.close()``.
"""

from __future__ import annotations

from bastion.errors import ConfigError
from bastion.store.base import ApiKeyRecord, Change, ClientRecord, Revocation, Store
from bastion.store.memory import MemoryStore
from bastion.store.sqlite import SqliteStore

__all__ = [
    "ApiKeyRecord",
    "Change",
    "ClientRecord",
    "MemoryStore",
    "Revocation",
    "SqliteStore",
    "Store",
    "open_store",
]


def open_store(url: str) -> Store:
    """The (not yet opened) store for ``url``: ``memory://`` or ``sqlite:///PATH``.

    ``sqlite:///bastion.db`` is relative to the working directory, ``sqlite:////var/lib/x.db``
    is absolute. Any other URL raises ConfigError.
    """
    if url == "memory://":
        return MemoryStore()
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path or "?" in path or "#" in path:
            raise ConfigError([f"store: {url!r} needs a file path, e.g. sqlite:///bastion.db"])
        return SqliteStore(path)
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise ConfigError(
        [f"store: unsupported store URL scheme {scheme!r}; use sqlite:///PATH or memory://"]
    )
