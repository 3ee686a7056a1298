"""Where audit records go: a rotated JSON-lines file, standard output, the state store.

A sink receives batches of :class:`~bastion.audit.record.AuditEntry` from the
:class:`~bastion.audit.writer.Auditor` and either writes the whole batch or raises; the writer
keeps a failed batch and retries it, so a sink never has to buffer. Blocking file I/O runs in a
thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import os
import sys
from collections.abc import Sequence
from typing import BinaryIO, Protocol

import orjson

from bastion.audit.record import AuditEntry
from bastion.errors import ConfigError
from bastion.gateway.layers.audit import config as cfg
from bastion.store.base import Store

#: Audit files hold personal data: owner read/write only, whatever the umask.
FILE_MODE = 0o600

_LINE = operator.attrgetter("line")


class AuditSink(Protocol):
    """A destination for audit records. ``write`` is all-or-raise for one batch."""

    name: str

    async def open(self) -> None:
        """Acquire the destination; ConfigError if it cannot be used at all."""

    async def write(self, entries: Sequence[AuditEntry]) -> None:
        """Write every entry of the batch, in order, or raise."""

    async def aclose(self) -> None:
        """Release the destination (called once, after the last write)."""


class FileSink:
    """JSON lines appended to ``path`` (mode 0600), rotated by size.

    When a write would take the file past ``max_bytes`` it is renamed ``path.1`` (older ones
    shift to ``path.2`` … ``path.<backups>``; the oldest is deleted) and a new file is started.
    A batch that fails half-way is truncated back off the file, so a retry does not leave torn
    or doubled lines (except across a rotation). One process per file: two processes rotating
    the same file would lose records.
    """

    def __init__(self, path: str, max_bytes: int, backups: int) -> None:
        self.path = path
        self.name = f"file:{path}"
        self.max_bytes = max_bytes
        self.backups = backups
        self._fd = -1
        self._size = 0

    async def open(self) -> None:
        """Open (create) the file; ConfigError if the directory or permissions forbid it."""
        try:
            await asyncio.to_thread(self._open_file)
        except OSError as exc:
            raise ConfigError([f"audit.sinks: cannot open {self.path!r}: {exc.strerror}"]) from exc

    async def write(self, entries: Sequence[AuditEntry]) -> None:
        """Append the batch's lines (rotating as needed) in a worker thread."""
        await asyncio.to_thread(self._write_lines, list(map(_LINE, entries)))

    async def aclose(self) -> None:
        """Close the file."""
        await asyncio.to_thread(self._close_file)

    def _open_file(self) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.path, flags, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # an existing file keeps its mode otherwise
            self._size = os.fstat(fd).st_size
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def _close_file(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def _write_lines(self, lines: list[bytes]) -> None:
        if self._fd < 0:
            self._open_file()
        data = b"".join(lines)
        if self._size + len(data) <= self.max_bytes:  # the usual case: no rotation in the batch
            self._write_chunk([data])
            return
        chunk: list[bytes] = []
        chunk_bytes = 0
        for line in lines:
            if self._size + chunk_bytes + len(line) > self.max_bytes and self._size + chunk_bytes:
                self._write_chunk(chunk)
                chunk, chunk_bytes = [], 0
                self._rotate()
            chunk.append(line)
            chunk_bytes += len(line)
        self._write_chunk(chunk)

    def _write_chunk(self, chunk: list[bytes]) -> None:
        if not chunk:
            return
        data = memoryview(b"".join(chunk))
        start = self._size
        try:
            while data:
                n = os.write(self._fd, data)
                data = data[n:]
                self._size += n
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
                self._size = start
            raise

    def _rotate(self) -> None:
        self._close_file()
        if self.backups == 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        else:
            for i in range(self.backups - 1, 0, -1):
                older = f"{self.path}.{i}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._open_file()


class StdoutSink:
    """JSON lines on standard output (or ``stream``, a binary stream, for tests)."""

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self.name = "stdout"
        self._stream = stream

    async def open(self) -> None:
        """Nothing to open."""

    async def write(self, entries: Sequence[AuditEntry]) -> None:
        """Write and flush the batch's lines in a worker thread (a full pipe must not block)."""
        await asyncio.to_thread(self._write, b"".join(e.line for e in entries))

    def _write(self, data: bytes) -> None:
        stream = self._stream if self._stream is not None else sys.stdout.buffer
        stream.write(data)
        stream.flush()

    async def aclose(self) -> None:
        """Standard output stays open; only flushed."""


class StoreSink:
    """Rows in the store's ``audit_log`` table, one transaction per batch."""

    def __init__(self, store: Store) -> None:
        self.name = "store"
        self._store = store

    async def open(self) -> None:
        """The store is opened by its owner, before the auditor starts."""

    async def write(self, entries: Sequence[AuditEntry]) -> None:
        """``store.write_audit`` of the batch's records."""
        await self._store.write_audit(
            [e.record if e.record is not None else orjson.loads(e.line) for e in entries]
        )

    async def aclose(self) -> None:
        """The store is closed by its owner, after the auditor."""


def build_sinks(configs: Sequence[cfg.Sink], store: Store | None) -> list[AuditSink]:
    """The sinks named by the config (nothing opened yet); ConfigError if a ``store`` sink is
    configured without a store."""
    sinks: list[AuditSink] = []
    for i, c in enumerate(configs):
        if isinstance(c, cfg.FileSink):
            sinks.append(FileSink(c.path, c.max_bytes, c.backups))
        elif isinstance(c, cfg.StdoutSink):
            sinks.append(StdoutSink())
        elif store is None:
            raise ConfigError([f"audit.sinks[{i}]: a 'store' sink needs a state store"])
        else:
            sinks.append(StoreSink(store))
    return sinks
