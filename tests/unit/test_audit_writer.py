"""The audit writer: N requests give N records in every sink, nothing leaks, nothing is lost."""

from __future__ import annotations

import asyncio
import logging
import stat
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from bastion.audit.redact import Redactor
from bastion.audit.writer import Auditor
from bastion.core.exchange import Exchange, Headers, Principal, RequestView
from bastion.errors import ConfigError
from bastion.events.bus import EventBus
from bastion.gateway.layers.audit.config import AuditConfig, FileSink, StdoutSink, StoreSink
from bastion.gateway.layers.audit.layer import AuditLayer
from bastion.gateway.layers.base import Layer
from bastion.store.memory import MemoryStore

JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
API_SECRET = "Qx9vLm2Zp8Rt4Yk6Wn0Jc3Hb7Fd5Gs1Ue9Io2Kq4Mab"
API_KEY = f"bsk_0a1b2c3d4e5f6a7b_{API_SECRET}"
PASSWORD = "hunter2-Sup3rS3cret"
CARD = "4111111111111111"


def exchange(i: int, **kw: Any) -> Exchange:
    headers = Headers([("host", "api.example"), ("user-agent", kw.pop("ua", "curl/8.4.0"))])
    for name, value in kw.pop("headers", []):
        headers.add(name, value)
    req = RequestView(
        "GET", kw.pop("path", f"/v1/items/{i}"), kw.pop("query", ""), headers, "192.0.2.10"
    )
    ex = Exchange(req, f"req-{i:05d}", time.monotonic(), time.time(), route_name="api")
    ex.status = 200
    ex.principal = Principal("api_key", "client-a", client_id="client-a", key_id="0a1b2c3d4e5f6a7b")
    for k, v in kw.items():
        setattr(ex, k, v)
    return ex


def config(*sinks: Any, **kw: Any) -> AuditConfig:
    return AuditConfig(sinks=list(sinks), **kw)


def file_sink(tmp_path: Path, **kw: Any) -> FileSink:
    return FileSink(type="file", path=str(tmp_path / "audit.log"), **kw)


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def ids(lines: list[bytes]) -> list[str]:
    return [orjson.loads(line)["http"]["request"]["id"] for line in lines]


async def test_n_requests_give_n_records_in_every_sink(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    n = 1000
    store = MemoryStore()
    bus = EventBus()
    published: list[dict[str, Any]] = []
    bus.subscribe("audit", published.append)
    cfg = config(
        file_sink(tmp_path),
        StdoutSink(type="stdout"),
        StoreSink(type="store"),
        batch_size=7,
        queue_size=100,
        flush_interval=0.01,
    )
    auditor = Auditor(cfg, store, bus, Redactor())
    layer = AuditLayer(auditor)
    await auditor.start()
    for i in range(n):
        await layer.finish(exchange(i))
        if i % 50 == 0:
            await asyncio.sleep(0)
    await auditor.aclose()

    expected = [f"req-{i:05d}" for i in range(n)]
    assert ids(lines_of(tmp_path / "audit.log")) == expected
    assert ids(capsysbinary.readouterr().out.splitlines()) == expected
    assert [orjson.loads(r)["http"]["request"]["id"] for r in store.audit_rows] == expected
    assert [e["http"]["request"]["id"] for e in published] == expected


async def test_shutdown_flushes_what_the_interval_has_not(tmp_path: Path) -> None:
    cfg = config(file_sink(tmp_path), batch_size=500, flush_interval=10)
    auditor = Auditor(cfg, None, None, Redactor())
    await auditor.start()
    for i in range(10):
        auditor.submit(exchange(i))
    await asyncio.sleep(0.05)
    assert not (tmp_path / "audit.log").read_bytes()  # still buffered: no full batch yet
    await auditor.aclose()
    assert len(lines_of(tmp_path / "audit.log")) == 10


async def test_records_submitted_before_start_are_written(tmp_path: Path) -> None:
    auditor = Auditor(config(file_sink(tmp_path)), None, None, Redactor())
    auditor.submit(exchange(1))
    await auditor.start()
    await auditor.flush()
    assert ids(lines_of(tmp_path / "audit.log")) == ["req-00001"]
    await auditor.aclose()


async def test_rotation_keeps_backups_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(b"")
    path.chmod(0o644)
    sink = file_sink(tmp_path, max_bytes=4000, backups=2)
    auditor = Auditor(config(sink, batch_size=5), None, None, Redactor())
    await auditor.start()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for i in range(60):
        auditor.submit(exchange(i))
    await auditor.aclose()
    files = [path, tmp_path / "audit.log.1", tmp_path / "audit.log.2"]
    assert not (tmp_path / "audit.log.3").exists()
    for f in files:
        assert f.stat().st_size <= 4000
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    kept = [rid for f in reversed(files) for rid in ids(lines_of(f))]
    assert kept == [f"req-{i:05d}" for i in range(60 - len(kept), 60)]  # newest, in order
    assert len(kept) < 60


async def test_rotation_without_backups_starts_over(tmp_path: Path) -> None:
    sink = file_sink(tmp_path, max_bytes=2000, backups=0)
    auditor = Auditor(config(sink), None, None, Redactor())
    await auditor.start()
    for i in range(30):
        auditor.submit(exchange(i))
    await auditor.aclose()
    assert not (tmp_path / "audit.log.1").exists()
    assert ids(lines_of(tmp_path / "audit.log"))[-1] == "req-00029"


async def test_planted_secrets_never_reach_any_sink(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    store = MemoryStore()
    bus = EventBus()
    published: list[dict[str, Any]] = []
    bus.subscribe("audit", published.append)
    cfg = config(file_sink(tmp_path), StdoutSink(type="stdout"), StoreSink(type="store"))
    auditor = Auditor(cfg, store, bus, Redactor())
    await auditor.start()
    auditor.submit(
        exchange(
            1,
            path=f"/v1/pay/{CARD}/keys/{API_KEY}",
            query=f"password={PASSWORD}&access_token={JWT}&note=card+{CARD}",
            ua=f"evil/1.0 Bearer {JWT} {API_KEY}",
            headers=[
                ("authorization", f"Bearer {JWT}"),
                ("x-api-key", API_KEY),
                ("cookie", f"session={PASSWORD}"),
            ],
            diagnosis=f"api_key: wrong secret {API_KEY} password={PASSWORD}",
        )
    )
    await auditor.aclose()
    outputs = {
        "file": (tmp_path / "audit.log").read_bytes(),
        "stdout": capsysbinary.readouterr().out,
        "store": "\n".join(store.audit_rows).encode(),
        "bus": b"".join(orjson.dumps(e) for e in published),
    }
    for where, raw in outputs.items():
        assert b"req-00001" in raw, where
        for secret in (PASSWORD, JWT, API_SECRET, CARD, "4111+1111"):
            assert secret.encode() not in raw, f"{secret[:6]}... leaked to {where}"
        assert b"bsk_0a1b2c3d4e5f6a7b_***" in raw, where


async def test_header_injection_cannot_forge_records(tmp_path: Path) -> None:
    auditor = Auditor(config(file_sink(tmp_path)), None, None, Redactor())
    await auditor.start()
    auditor.submit(exchange(1, ua='x\n{"fake": "record"}'))
    auditor.submit(exchange(2, ua='x\r\n{"fake": "record"}\u2028{"fake": 2}'))
    await auditor.aclose()
    raw = (tmp_path / "audit.log").read_bytes()
    assert raw.count(b"\n") == 2
    records = [orjson.loads(line) for line in raw.decode().splitlines()]
    assert [r["http"]["request"]["id"] for r in records] == ["req-00001", "req-00002"]
    assert all("fake" not in r for r in records)


async def test_failing_sink_recovers_without_loss_or_leak(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    cfg = config(StoreSink(type="store"), file_sink(tmp_path), batch_size=10)
    auditor = Auditor(cfg, store, None, Redactor())
    await auditor.start()
    store.set_unavailable(True)
    with caplog.at_level(logging.WARNING, logger="bastion.audit"):
        for i in range(25):
            auditor.submit(exchange(i, query=f"password={PASSWORD}"))
        await asyncio.sleep(0.3)
        assert store.audit_rows == []  # not written yet ...
        assert auditor.buffered == 25  # ... and not dropped either
        assert len(lines_of(tmp_path / "audit.log")) == 25  # the healthy sink went on
        store.set_unavailable(False)
        await asyncio.wait_for(auditor.flush(), timeout=10)
    assert ids([r.encode() for r in store.audit_rows]) == [f"req-{i:05d}" for i in range(25)]
    assert auditor.buffered == 0
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "audit sink store failed" in messages
    assert "recovered" in messages
    assert PASSWORD not in caplog.text
    assert "req-000" not in caplog.text
    await auditor.aclose()


async def test_backpressure_waits_and_nothing_is_dropped(tmp_path: Path) -> None:
    store = MemoryStore()
    cfg = config(StoreSink(type="store"), queue_size=10, batch_size=5)
    auditor = Auditor(cfg, store, None, Redactor())
    layer = AuditLayer(auditor)
    await auditor.start()
    await auditor.wait_for_space()  # returns at once while there is room
    store.set_unavailable(True)
    for i in range(10):
        await layer.finish(exchange(i))
    await asyncio.sleep(0.05)
    assert auditor.full
    blocked = asyncio.create_task(layer.finish(exchange(10)))
    await asyncio.sleep(0.2)
    assert not blocked.done()  # the request waits instead of its record being dropped
    store.set_unavailable(False)
    await asyncio.wait_for(blocked, timeout=10)
    await auditor.aclose()
    assert len(store.audit_rows) == 11


async def test_aclose_gives_up_on_a_dead_sink_after_the_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    cfg = config(StoreSink(type="store"), shutdown_timeout=0.2)
    auditor = Auditor(cfg, store, None, Redactor())
    await auditor.start()
    store.set_unavailable(True)
    auditor.submit(exchange(1))
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="bastion.audit"):
        await auditor.aclose()
    assert time.monotonic() - started < 5
    assert "1 records not written" in caplog.text
    with pytest.raises(RuntimeError):
        auditor.submit(exchange(2))


async def test_configuration_errors_surface_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Auditor(config(StoreSink(type="store")), None, None, Redactor())
    missing_dir = FileSink(type="file", path=str(tmp_path / "no" / "such" / "audit.log"))
    auditor = Auditor(config(missing_dir), None, None, Redactor())
    with pytest.raises(ConfigError):
        await auditor.start()
    with pytest.raises(RuntimeError):
        await auditor.flush()


async def test_audit_to_the_bus_only(tmp_path: Path) -> None:
    bus = EventBus()
    got: list[dict[str, Any]] = []
    bus.subscribe("audit", got.append)
    bus.subscribe("audit", lambda e: 1 / 0)  # a broken subscriber cannot stop the records
    auditor = Auditor(AuditConfig(sinks=[]), None, bus, Redactor())
    await auditor.start()
    auditor.submit(exchange(3))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert [e["http"]["request"]["id"] for e in got] == ["req-00003"]
    await auditor.aclose()


def test_layer_contract() -> None:
    auditor = Auditor(AuditConfig(sinks=[]), None, None, Redactor())
    layer = AuditLayer(auditor)
    assert isinstance(layer, Layer)
    assert layer.name == "audit"


class BrokenRedactor(Redactor):
    """A redactor with a bug: rendering fails on every record."""

    __slots__ = ()

    def redact_text(self, s: str) -> str:
        raise ValueError(f"boom on {s}")


async def test_a_render_bug_costs_detail_not_the_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    auditor = Auditor(config(file_sink(tmp_path)), None, None, BrokenRedactor())
    await auditor.start()
    with caplog.at_level(logging.ERROR, logger="bastion.audit"):
        auditor.submit(exchange(1, path=f"/x/{PASSWORD}"))
        await auditor.aclose()
    [line] = lines_of(tmp_path / "audit.log")
    record = orjson.loads(line)
    assert record["bastion"] == {"decision": "allow", "render_error": True}
    assert record["http"]["response"]["status_code"] == 200
    assert PASSWORD not in caplog.text
    assert "could not be rendered" in caplog.text


async def test_file_sink_writes_a_batch_that_fits_in_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bastion.audit import sinks

    writes: list[int] = []
    real_write = sinks.os.write

    def counting(fd: int, data: Any) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(sinks.os, "write", counting)
    sink = sinks.FileSink(str(tmp_path / "audit.log"), max_bytes=10_000, backups=1)
    await sink.open()
    lines = [b'{"n":%d}\n' % i for i in range(50)]
    sink._write_lines(lines)
    assert writes == [sum(map(len, lines))]
    assert (tmp_path / "audit.log").read_bytes() == b"".join(lines)
    sink._write_lines(lines * 30)  # does not fit: rotated, never past max_bytes
    assert (tmp_path / "audit.log").stat().st_size <= 10_000
    assert (tmp_path / "audit.log.1").exists()
    await sink.aclose()


def test_the_bus_says_whether_a_topic_has_subscribers() -> None:
    # The auditor renders record dicts only when a subscriber (or sink) needs them.
    bus = EventBus()
    assert not bus.has_subscribers("audit")
    unsubscribe = bus.subscribe("audit", lambda event: None)
    assert bus.has_subscribers("audit")
    assert not bus.has_subscribers("control")
    unsubscribe()
    assert not bus.has_subscribers("audit")
    assert not bus.has_subscribers("no-such-topic")
