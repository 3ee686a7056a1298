"""Config reload: a node serves the routes of its re-read file, and nothing else changes.

The gateway runs in-process (tests/support/gateway.py); its config is also written to a file,
which each test edits and reloads from, as ``SIGHUP`` or a ``config.changed`` event would.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bastion.gateway.reload import ConfigReloader
from tests.support.gateway import GatewayHarness, default_doc

pytestmark = pytest.mark.integration


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[GatewayHarness]:
    g = GatewayHarness(tmp_path)
    yield g
    g.close()


def base_doc(gw: GatewayHarness) -> dict[str, Any]:
    return default_doc(gw.tmp, gw.upstream.port)


def write(gw: GatewayHarness, doc: dict[str, Any]) -> Path:
    path = gw.tmp / "bastion.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def reloader(gw: GatewayHarness, doc: dict[str, Any]) -> ConfigReloader:
    return ConfigReloader(gw.running.gateway, write(gw, doc))


def test_added_route_is_served_and_removed_route_is_gone(gw: GatewayHarness) -> None:
    doc = base_doc(gw)
    assert gw.request("GET", "/extra/x").status == 404
    new = copy.deepcopy(doc)
    new["routes"] = [r for r in new["routes"] if r["name"] != "public"]
    new["routes"].append(
        {
            "name": "extra",
            "path_prefix": "/extra",
            "upstream": f"http://127.0.0.1:{gw.upstream.port}",
            "strip_prefix": True,
            "authn": {"methods": [], "unsafe_allow_anonymous": True},
        }
    )
    r = reloader(gw, new)
    assert gw.thread.call(r.reload_now()) is True
    assert gw.request("GET", "/extra/x").status == 200
    assert gw.request("GET", "/public/x").status == 404
    # Authenticated routes keep working with the credentials they had.
    assert gw.request("GET", "/api/x", key=True).status == 200
    assert r.reloads == 1
    assert r.digest is not None


def test_invalid_file_keeps_the_running_routes(
    gw: GatewayHarness, caplog: pytest.LogCaptureFixture
) -> None:
    doc = base_doc(gw)
    doc["routes"][2]["authn"] = {"methods": [], "unsafe_allow_anonymous": True, "bogus": 1}
    r = reloader(gw, doc)
    with caplog.at_level(logging.ERROR, logger="bastion.gateway.reload"):
        assert gw.thread.call(r.reload_now()) is False
    assert "routes[2].authn.bogus" in caplog.text
    assert gw.request("GET", "/public/x").status == 200
    assert r.failures == 1


def test_unreadable_file_or_unbuildable_route_changes_nothing(
    gw: GatewayHarness, caplog: pytest.LogCaptureFixture
) -> None:
    missing = ConfigReloader(gw.running.gateway, gw.tmp / "nope.yaml")
    assert gw.thread.call(missing.reload_now()) is False
    doc = base_doc(gw)
    doc["routes"][2]["openapi"] = {"spec": str(gw.tmp / "no-such-spec.yaml")}
    r = reloader(gw, doc)
    assert gw.thread.call(r.reload_now()) is False
    assert gw.request("GET", "/public/x").status == 200


def test_start_only_sections_are_named_and_keep_running_values(
    gw: GatewayHarness, caplog: pytest.LogCaptureFixture
) -> None:
    doc = base_doc(gw)
    doc["listeners"] = [{"name": "http", "bind": "127.0.0.1:1"}]
    doc["server"]["max_url_bytes"] = 4096
    r = reloader(gw, doc)
    with caplog.at_level(logging.WARNING, logger="bastion.gateway.reload"):
        assert gw.thread.call(r.reload_now()) is True
    assert "changes to listeners, server take effect only after a restart" in caplog.text
    # The running limit (1024) still applies.
    assert gw.request("GET", "/public/" + "a" * 2000).status == 414


def test_config_changed_event_triggers_one_coalesced_reload(gw: GatewayHarness) -> None:
    doc = base_doc(gw)
    doc["routes"][2]["path_prefix"] = "/open"
    r = reloader(gw, doc)
    unsubscribe = r.attach()

    async def announce() -> None:
        for _ in range(3):
            gw.services.bus.publish("control", {"type": "config.changed", "digest": "x"})
        gw.services.bus.publish("control", {"type": "token.revoked", "jti": "j", "expires_at": 1})

    gw.thread.call(announce())
    deadline = time.monotonic() + 5
    while gw.request("GET", "/open/x").status != 200:
        assert time.monotonic() < deadline, "the route was not reloaded"
        time.sleep(0.02)
    assert 1 <= r.reloads <= 2
    unsubscribe()
