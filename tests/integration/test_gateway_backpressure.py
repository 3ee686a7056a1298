"""Audit backpressure through the front end: a stalled sink holds requests back, loses none.

The front end answers requests without a task in the common case and hands each exchange to
the audit log itself; when the audit buffer is full it must wait (in a task) before it reads
the next request of the connection, and once the sink recovers every record must be there.
"""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
from pathlib import Path

from tests.support.gateway import GatewayHarness

REQUESTS = 25


def test_a_stalled_audit_sink_holds_requests_back_and_loses_none(tmp_path: Path) -> None:
    audit = {
        "sinks": [{"type": "file", "path": str(tmp_path / "audit.jsonl")}],
        "queue_size": 10,
        "batch_size": 1,
        "flush_interval": 0.01,
    }
    gw = GatewayHarness(tmp_path, doc_overrides={"audit": audit})
    release = threading.Event()
    answered: list[int] = []
    try:
        sink = gw.services.auditor.sinks[0]
        original = sink.write

        async def stalled(batch: list[object]) -> None:
            while not release.is_set():
                await asyncio.sleep(0.01)
            await original(batch)  # type: ignore[arg-type]

        sink.write = stalled  # type: ignore[method-assign]

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", gw.http_port, timeout=20)
            try:
                for i in range(REQUESTS):
                    conn.request("GET", f"/public/echo?n={i}")
                    resp = conn.getresponse()
                    resp.read()
                    answered.append(resp.status)
            finally:
                conn.close()

        worker = threading.Thread(target=client)
        worker.start()
        deadline = time.monotonic() + 5
        while len(answered) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)
        held_at = len(answered)
        # The buffer holds 10 records: the connection is held back well before 25 requests.
        assert 10 <= held_at < REQUESTS
        release.set()
        worker.join(timeout=20)
        assert answered == [200] * REQUESTS
    finally:
        release.set()
        gw.close()
    queries = [r["url"].get("query") for r in gw.audit_records()]
    assert sorted(q for q in queries if q) == sorted(f"n={i}" for i in range(REQUESTS))
