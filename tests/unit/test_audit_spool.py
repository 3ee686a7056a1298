"""The audit spool: durable, ordered, nothing lost, shared safely by several processes."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from bastion.store.spool import AuditSpool


def recs(start: int, n: int) -> list[dict[str, Any]]:
    return [{"@timestamp": f"t{i}", "n": i} for i in range(start, start + n)]


class Sink:
    """A database stand-in: stores what it is given, or fails while ``down``."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.down = False
        self.calls = 0

    async def write(self, records: list[dict[str, Any]]) -> None:
        self.calls += 1
        if self.down:
            raise OSError("database unreachable")
        self.rows.extend(records)


@pytest.fixture
def spool(tmp_path: Path) -> AuditSpool:
    s = AuditSpool(tmp_path / "spool")
    s.open()
    return s


async def test_appended_records_drain_in_order_and_files_go(spool: AuditSpool) -> None:
    assert not spool.pending
    spool.append(recs(0, 3))
    spool.append(recs(3, 2))
    assert spool.pending
    sink = Sink()
    assert await spool.drain(sink.write, batch_size=2) == 5
    assert [r["n"] for r in sink.rows] == [0, 1, 2, 3, 4]
    assert sink.calls == 3
    assert not spool.pending
    assert list(spool.directory.iterdir()) == []


async def test_failed_drain_keeps_the_rest_and_resumes_without_duplicates(
    spool: AuditSpool,
) -> None:
    spool.append(recs(0, 5))
    sink = Sink()
    calls = 0

    async def flaky(records: list[dict[str, Any]]) -> None:
        nonlocal calls
        calls += 1
        sink.down = calls == 2
        await sink.write(records)

    with pytest.raises(OSError, match="unreachable"):
        await spool.drain(flaky, batch_size=2)
    assert spool.pending
    spool.append(recs(5, 1))  # arrives during the outage: after the older ones
    sink.down = False
    await spool.drain(sink.write, batch_size=2)
    assert [r["n"] for r in sink.rows] == [0, 1, 2, 3, 4, 5]
    assert not spool.pending


def test_files_are_private(spool: AuditSpool) -> None:
    spool.append(recs(0, 1))
    assert stat.S_IMODE(spool.directory.stat().st_mode) == 0o700
    [segment] = spool.directory.iterdir()
    assert stat.S_IMODE(segment.stat().st_mode) == 0o600


async def test_segments_of_a_dead_process_are_adopted(tmp_path: Path) -> None:
    first = AuditSpool(tmp_path / "spool")
    first.open()
    first.append(recs(0, 3))
    first.close()  # the process is gone: its lock is released, its file stays
    second = AuditSpool(tmp_path / "spool")
    second.open()
    assert second.pending
    sink = Sink()
    await second.drain(sink.write)
    assert [r["n"] for r in sink.rows] == [0, 1, 2]


async def test_segments_locked_by_a_live_process_are_left_alone(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    other = AuditSpool(directory)
    other.open()
    other.append(recs(0, 2))
    mine = AuditSpool(directory)
    mine.open()
    sink = Sink()
    assert await mine.drain(sink.write) == 0  # another process owns that segment
    assert sink.rows == []
    assert await other.drain(sink.write) == 2
    other.close()
    mine.close()


async def test_torn_and_garbage_lines_are_skipped_not_fatal(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    directory.mkdir(mode=0o700)
    path = directory / "audit-00000000000000000001-1.spool"
    path.write_bytes(b'{"n": 0}\nnot json\n[1, 2]\n{"n": 1}\n{"n": 2, "torn')
    spool = AuditSpool(directory)
    spool.open()
    sink = Sink()
    await spool.drain(sink.write)
    assert [r["n"] for r in sink.rows] == [0, 1]
    assert spool.skipped == 2
    assert not path.exists()


def test_unserialisable_record_is_refused_before_writing(spool: AuditSpool) -> None:
    with pytest.raises(TypeError):
        spool.append([{"bad": object()}])
    assert not spool.pending


def test_own_segment_is_locked_against_other_processes(spool: AuditSpool) -> None:
    spool.append(recs(0, 1))
    [segment] = spool.directory.iterdir()
    fd = os.open(segment, os.O_RDWR)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
