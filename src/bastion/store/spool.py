"""A local, durable spool for audit records the database cannot take right now.

When the PostgreSQL store cannot be reached, its ``write_audit`` appends the batch to a spool
file here instead of failing, so the audit writer keeps going and no request waits on the
outage. A drain task moves the spooled records into the database once it answers again, oldest
first. Nothing is dropped: a record leaves the spool only after the database has committed it.

Layout: a directory (mode 0700) of *segments*, ``audit-<time_ns>-<pid>.spool`` (mode 0600), one
JSON record per line, each append ``fsync``-ed. A process appends only to its own current
segment and holds an exclusive ``flock`` on every segment it writes or drains, so several
workers can share one directory; segments left by a process that died are unlocked and get
adopted by the next drain. Draining seals the current segment (new appends start a new one),
sends the sealed ones in batches and deletes each once it is fully written.

Delivery is at least once: a process that dies between a committed batch and the deletion of
its segment makes the next drain send that batch again. Lines that do not parse (a write torn
by a crash) are skipped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("bastion.store.spool")

DIR_MODE = 0o700
FILE_MODE = 0o600
SUFFIX = ".spool"

Writer = Callable[[list[dict[str, Any]]], Awaitable[None]]


@dataclass
class _Segment:
    path: Path
    fd: int
    offset: int = 0  # bytes already delivered (sealed segments only)


class AuditSpool:
    """Spool segments in ``directory``. Blocking methods (file I/O); call them in a thread.

    Thread-safe: appends and sealing share one lock. :attr:`pending` is True while any record
    written by this process, or adopted from a dead one, is not yet in the database.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._current: _Segment | None = None
        self._sealed: list[_Segment] = []
        self._pending = False
        self.skipped = 0

    @property
    def pending(self) -> bool:
        """Whether records wait to be drained (cheap: no I/O)."""
        return self._pending

    def open(self) -> None:
        """Create the directory and adopt segments left by processes that are gone."""
        self.directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        self.adopt()

    def append(self, records: list[dict[str, Any]]) -> None:
        """Write ``records`` durably (one fsync); raises OSError or TypeError (unserialisable)."""
        if not records:
            return
        data = b"".join(orjson.dumps(r) + b"\n" for r in records)
        with self._lock:
            seg = self._current
            if seg is None:
                seg = self._current = self._new_segment()
            start = os.lseek(seg.fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(seg.fd, view) :]
                os.fsync(seg.fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(seg.fd, start)  # no torn line for the drain to skip
                raise
            self._pending = True

    def adopt(self) -> int:
        """Take over unlocked segments of dead processes; returns how many were adopted."""
        with self._lock:
            mine = {s.path for s in self._sealed}
            if self._current is not None:
                mine.add(self._current.path)
            adopted = 0
            for path in sorted(self.directory.glob("*" + SUFFIX)):
                if path in mine:
                    continue
                seg = self._lock_existing(path)
                if seg is not None:
                    self._sealed.append(seg)
                    adopted += 1
            self._sealed.sort(key=lambda s: s.path.name)
            if adopted:
                self._pending = True
            return adopted

    def seal(self) -> list[Path]:
        """End the current segment (appends start a new one); the sealed segments, oldest first."""
        with self._lock:
            if self._current is not None:
                self._sealed.append(self._current)
                self._current = None
            return [s.path for s in self._sealed]

    def read_batch(self, limit: int) -> tuple[Path, list[dict[str, Any]], int] | None:
        """Up to ``limit`` records from the oldest sealed segment, and the offset after them;
        None when nothing is sealed. A fully read empty segment is deleted here."""
        while True:
            with self._lock:
                if not self._sealed:
                    if self._current is None:
                        self._pending = False
                    return None
                seg = self._sealed[0]
            records, end = self._read(seg, limit)
            if records or end > seg.offset:
                if not records:  # only skipped lines: step over them
                    seg.offset = end
                    continue
                return seg.path, records, end
            self._finish(seg)

    def commit(self, path: Path, end: int) -> None:
        """Mark the batch read from ``path`` up to ``end`` as stored in the database."""
        with self._lock:
            for seg in self._sealed:
                if seg.path == path:
                    seg.offset = end
                    return

    async def drain(self, write: Writer, batch_size: int = 500) -> int:
        """Seal, then send every sealed record through ``write`` (oldest first); returns how
        many were sent. ``write``'s exception propagates; the failed batch stays spooled."""
        await asyncio.to_thread(self.adopt)
        await asyncio.to_thread(self.seal)
        sent = 0
        while True:
            batch = await asyncio.to_thread(self.read_batch, batch_size)
            if batch is None:
                return sent
            path, records, end = batch
            await write(records)
            sent += len(records)
            self.commit(path, end)

    def close(self) -> None:
        """Release every lock and file; undelivered segments stay for the next process."""
        with self._lock:
            segs = list(self._sealed)
            if self._current is not None:
                segs.append(self._current)
            self._sealed, self._current = [], None
        for seg in segs:
            with contextlib.suppress(OSError):
                os.close(seg.fd)

    # -- files --------------------------------------------------------------------------------

    def _new_segment(self) -> _Segment:
        path = self.directory / f"audit-{time.time_ns():020d}-{os.getpid()}{SUFFIX}"
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags, FILE_MODE)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new file: nobody else holds it
        return _Segment(path, fd)

    @staticmethod
    def _lock_existing(path: Path) -> _Segment | None:
        try:
            fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return None  # drained and deleted by its owner meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # a live process owns it
            return None
        if not path.exists():  # deleted between open and lock: nothing left in it
            os.close(fd)
            return None
        return _Segment(path, fd)

    def _read(self, seg: _Segment, limit: int) -> tuple[list[dict[str, Any]], int]:
        records: list[dict[str, Any]] = []
        pos = seg.offset
        with open(seg.fd, "rb", closefd=False) as f:
            f.seek(pos)
            while len(records) < limit:
                line = f.readline()
                if not line or not line.endswith(b"\n"):
                    break  # end of file, or a torn last line that was never acknowledged
                pos += len(line)
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError:
                    rec = None
                if isinstance(rec, dict):
                    records.append(rec)
                else:
                    self.skipped += 1
                    log.error("audit spool %s: skipped an unreadable line", seg.path.name)
        return records, pos

    def _finish(self, seg: _Segment) -> None:
        with self._lock:
            if seg in self._sealed:
                self._sealed.remove(seg)
        with contextlib.suppress(FileNotFoundError):
            seg.path.unlink()
        os.close(seg.fd)
