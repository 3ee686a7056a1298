"""One contract, every backend: the same suite runs against each store in ``BACKENDS``.

PostgreSQL runs against the real server on 127.0.0.1:5432, each test in a schema of its own
(``tests/support/postgres.py``), migrated with ``bastion db upgrade``'s code path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import orjson
import pytest

from bastion.errors import ConfigError, StoreError
from bastion.store import MemoryStore, PostgresStore, SqliteStore, open_store
from bastion.store.base import ApiKeyRecord, ClientRecord, IpBlock, Revocation, Store
from tests.support.postgres import pg_schema

StoreFactory = Callable[[Path], AbstractAsyncContextManager[Store]]


@asynccontextmanager
async def _memory(tmp_path: Path) -> AsyncIterator[Store]:
    yield MemoryStore()


@asynccontextmanager
async def _sqlite(tmp_path: Path) -> AsyncIterator[Store]:
    yield SqliteStore(str(tmp_path / "state.db"))


@asynccontextmanager
async def _postgres(tmp_path: Path) -> AsyncIterator[Store]:
    async with pg_schema("contract") as url:
        store = PostgresStore(url)
        await store.upgrade()
        yield store


BACKENDS: dict[str, StoreFactory] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "postgres": _postgres,
}


@pytest.fixture(params=sorted(BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with BACKENDS[request.param](tmp_path) as s:
        await s.open()
        yield s
        await s.close()


def _client(cid: str = "acme", at: float = 100.0) -> ClientRecord:
    return ClientRecord(id=cid, name=f"{cid} inc", created_at=at)


def _key(kid: str = "k1", client: str = "acme", at: float = 200.0, **kw: object) -> ApiKeyRecord:
    fields: dict[str, object] = {
        "id": kid,
        "client_id": client,
        "secret_hash": "ab" * 32,
        "scopes": ("invoices:read", "users:read"),
        "created_at": at,
        "expires_at": at + 3600,
        "name": "ci key",
    }
    fields.update(kw)
    return ApiKeyRecord(**fields)  # type: ignore[arg-type]


def _jti(value: str = "tok-1", expires: float = 5000.0, at: float = 300.0) -> Revocation:
    return Revocation("jti", value, "https://issuer", None, expires, at)


# -- clients ------------------------------------------------------------------------------


async def test_client_round_trip(store: Store) -> None:
    await store.put_client(_client("b", 2.0))
    await store.put_client(_client("a", 2.0))
    await store.put_client(_client("c", 1.0))
    assert await store.get_client("a") == _client("a", 2.0)
    assert await store.get_client("zzz") is None
    assert [c.id for c in await store.list_clients()] == ["c", "a", "b"]


async def test_duplicate_client_is_refused(store: Store) -> None:
    await store.put_client(_client())
    with pytest.raises(StoreError):
        await store.put_client(_client())
    assert len(await store.list_clients()) == 1


# -- API keys -----------------------------------------------------------------------------


async def test_api_key_round_trip(store: Store) -> None:
    await store.put_client(_client())
    key = _key()
    await store.put_api_key(key)
    got = await store.get_api_key("k1")
    assert got == key
    assert got is not None
    assert got.scopes == ("invoices:read", "users:read")
    assert await store.get_api_key("nope") is None


async def test_api_key_without_expiry_or_scopes(store: Store) -> None:
    await store.put_client(_client())
    key = _key(expires_at=None, scopes=())
    await store.put_api_key(key)
    assert await store.get_api_key("k1") == key


async def test_list_api_keys_filters_by_client(store: Store) -> None:
    await store.put_client(_client("acme"))
    await store.put_client(_client("globex"))
    await store.put_api_key(_key("k2", "acme", at=20.0))
    await store.put_api_key(_key("k1", "acme", at=10.0))
    await store.put_api_key(_key("k3", "globex", at=5.0))
    assert [k.id for k in await store.list_api_keys()] == ["k3", "k1", "k2"]
    assert [k.id for k in await store.list_api_keys("acme")] == ["k1", "k2"]
    assert await store.list_api_keys("nobody") == []


async def test_api_key_of_unknown_client_is_refused_and_leaves_no_change(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.put_api_key(_key(client="ghost"))
    assert await store.get_api_key("k1") is None
    assert await store.changes_since(0) == []


async def test_duplicate_api_key_is_refused_and_leaves_one_change(store: Store) -> None:
    await store.put_client(_client())
    await store.put_api_key(_key())
    with pytest.raises(StoreError):
        await store.put_api_key(_key())
    assert [c.kind for c in await store.changes_since(0)] == ["api_key.created"]


async def test_put_api_key_appends_created_change(store: Store) -> None:
    await store.put_client(_client())
    await store.put_api_key(_key())
    [change] = await store.changes_since(0)
    assert change.kind == "api_key.created"
    assert change.payload == {"key_id": "k1", "client_id": "acme"}
    assert change.at == 200.0
    assert "secret_hash" not in orjson.dumps(change.payload).decode()


async def test_revoke_api_key(store: Store) -> None:
    await store.put_client(_client())
    await store.put_api_key(_key())
    assert await store.revoke_api_key("k1", 1000.0) is True
    got = await store.get_api_key("k1")
    assert got is not None
    assert got.revoked_at == 1000.0
    assert got.state(1000.0) == "revoked"
    changes = await store.changes_since(0)
    assert [c.kind for c in changes] == ["api_key.created", "api_key.revoked"]
    assert changes[1].payload == {"key_id": "k1", "at": 1000.0}


async def test_revoke_twice_or_unknown_is_false_without_change(store: Store) -> None:
    await store.put_client(_client())
    await store.put_api_key(_key())
    assert await store.revoke_api_key("k1", 1000.0) is True
    assert await store.revoke_api_key("k1", 2000.0) is False
    assert await store.revoke_api_key("ghost", 2000.0) is False
    got = await store.get_api_key("k1")
    assert got is not None
    assert got.revoked_at == 1000.0
    assert len(await store.changes_since(0)) == 2


# -- API-key lifecycle (schema version 6) ------------------------------------------------


async def test_lifecycle_fields_round_trip(store: Store) -> None:
    await store.put_client(_client())
    await store.put_api_key(_key())
    plain = await store.get_api_key("k1")
    assert plain is not None
    assert (plain.owner, plain.rotated_from, plain.replaced_by) == ("", None, None)
    assert (plain.last_used_at, plain.usage_count) == (None, 0)
    key = _key("k2", owner="alice@example.com", last_used_at=250.0, usage_count=7)
    await store.put_api_key(key)
    assert await store.get_api_key("k2") == key


async def test_rotate_links_both_keys_and_shortens_the_old_one(store: Store) -> None:
    await store.put_client(_client())
    await store.put_api_key(_key("old", at=200.0, expires_at=100_000.0))
    successor = _key("new", at=1000.0, expires_at=50_000.0, owner="bob")
    assert await store.rotate_api_key("old", successor, 1000.0 + 600) is True
    old = await store.get_api_key("old")
    new = await store.get_api_key("new")
    assert old is not None
    assert new is not None
    assert old.expires_at == 1600.0
    assert old.replaced_by == "new"
    assert old.rotated_from is None
    assert new.rotated_from == "old"
    assert new.replaced_by is None
    assert new.owner == "bob"
    assert new.expires_at == 50_000.0
    assert old.state(1599.0) == "active"
    assert old.state(1600.0) == "expired"
    changes = await store.changes_since(0)
    assert [c.kind for c in changes] == ["api_key.created", "api_key.created"]
    assert changes[1].payload == {
        "key_id": "new",
        "client_id": "acme",
        "replaces": "old",
        "replaces_until": 1600.0,
    }
    assert changes[1].at == 1000.0


async def test_rotation_never_extends_the_old_key(store: Store) -> None:
    await store.put_client(_client())
    await store.put_api_key(_key("old", at=200.0, expires_at=1200.0))
    assert await store.rotate_api_key("old", _key("new", at=1000.0), 99_999.0) is True
    old = await store.get_api_key("old")
    assert old is not None
    assert old.expires_at == 1200.0
    assert (await store.changes_since(1))[0].payload["replaces_until"] == 1200.0


async def test_rotating_a_key_without_expiry_gives_it_one(store: Store) -> None:
    await store.put_client(_client())
    await store.put_api_key(_key("old", expires_at=None))
    assert await store.rotate_api_key("old", _key("new", at=1000.0), 1500.0) is True
    old = await store.get_api_key("old")
    assert old is not None
    assert old.expires_at == 1500.0


@pytest.mark.parametrize("case", ["unknown", "revoked", "expired", "rotated"])
async def test_a_key_that_cannot_rotate_is_left_alone(store: Store, case: str) -> None:
    await store.put_client(_client())
    await store.put_api_key(_key("old", at=200.0, expires_at=900.0))
    if case == "revoked":
        await store.revoke_api_key("old", 500.0)
    if case == "rotated":
        assert await store.rotate_api_key("old", _key("first", at=400.0), 800.0)
    before = await store.changes_since(0)
    old_id = "ghost" if case == "unknown" else "old"
    at = 950.0 if case == "expired" else 600.0
    assert await store.rotate_api_key(old_id, _key("new", at=at), at + 100) is False
    assert await store.get_api_key("new") is None
    assert await store.changes_since(0) == before


async def test_rotation_to_another_client_or_a_taken_id_is_refused_whole(store: Store) -> None:
    await store.put_client(_client("acme"))
    await store.put_client(_client("globex"))
    await store.put_api_key(_key("old", "acme", expires_at=10_000.0))
    await store.put_api_key(_key("taken", "acme"))
    before = await store.changes_since(0)
    with pytest.raises(StoreError):
        await store.rotate_api_key("old", _key("new", "globex", at=1000.0), 2000.0)
    with pytest.raises(StoreError):
        await store.rotate_api_key("old", _key("taken", "acme", at=1000.0), 2000.0)
    old = await store.get_api_key("old")
    assert old is not None
    assert old.expires_at == 10_000.0
    assert old.replaced_by is None
    assert await store.get_api_key("new") is None
    assert await store.changes_since(0) == before


async def test_record_key_usage_adds_counts_in_batches(store: Store) -> None:
    await store.put_client(_client())
    await store.put_api_key(_key("k1"))
    await store.put_api_key(_key("k2"))
    before = await store.last_change_seq()
    await store.record_key_usage({"k1": (3, 500.0), "k2": (1, 450.0), "ghost": (9, 1.0)})
    await store.record_key_usage({"k1": (2, 400.0)})  # an older batch: last_used stays
    await store.record_key_usage({})
    k1, k2 = await store.get_api_key("k1"), await store.get_api_key("k2")
    assert k1 is not None
    assert k2 is not None
    assert (k1.usage_count, k1.last_used_at) == (5, 500.0)
    assert (k2.usage_count, k2.last_used_at) == (1, 450.0)
    assert await store.get_api_key("ghost") is None
    assert await store.last_change_seq() == before  # usage is not announced


async def test_record_key_usage_keeps_a_revoked_key_revoked(store: Store) -> None:
    await store.put_client(_client())
    await store.put_api_key(_key("k1"))
    await store.revoke_api_key("k1", 300.0)
    await store.record_key_usage({"k1": (1, 400.0)})
    got = await store.get_api_key("k1")
    assert got is not None
    assert got.revoked_at == 300.0
    assert got.usage_count == 1


# -- revocations --------------------------------------------------------------------------


async def test_jti_revocation_and_change(store: Store) -> None:
    rev = _jti()
    await store.add_revocation(rev)
    assert await store.active_revocations(now=400.0) == [rev]
    [change] = await store.changes_since(0)
    assert change.kind == "token.revoked"
    assert change.payload == {"jti": "tok-1", "expires_at": 5000.0, "issuer": "https://issuer"}
    assert change.at == 300.0


async def test_subject_revocation_and_change(store: Store) -> None:
    rev = Revocation("subject", "user-7", None, 250.0, 9000.0, 260.0)
    await store.add_revocation(rev)
    assert await store.active_revocations(now=400.0) == [rev]
    [change] = await store.changes_since(0)
    assert change.kind == "subject.revoked"
    assert change.payload == {
        "subject": "user-7",
        "issuer": None,
        "not_before": 250.0,
        "expires_at": 9000.0,
    }


async def test_active_revocations_drops_expired(store: Store) -> None:
    await store.add_revocation(_jti("old", expires=500.0))
    await store.add_revocation(_jti("new", expires=1500.0))
    assert [r.value for r in await store.active_revocations(now=400.0)] == ["old", "new"]
    assert [r.value for r in await store.active_revocations(now=500.0)] == ["new"]
    assert await store.active_revocations(now=1500.0) == []


async def test_client_revocation_and_change(store: Store) -> None:
    rev = Revocation("client", "acme", "https://issuer", 250.0, 4150.0, 250.0)
    await store.add_revocation(rev)
    later = Revocation("jti", "tok-9", None, None, 5000.0, 260.0)
    await store.add_revocation(later)
    assert await store.active_revocations(now=400.0) == [rev, later]
    assert await store.active_revocations(now=4150.0) == [later]
    first, _ = await store.changes_since(0)
    assert first.kind == "client.revoked"
    assert first.payload == {
        "client_id": "acme",
        "issuer": "https://issuer",
        "not_before": 250.0,
        "expires_at": 4150.0,
    }
    assert first.at == 250.0


@pytest.mark.parametrize(
    "rev",
    [
        Revocation("session", "x", None, None, 10.0, 1.0),
        Revocation("subject", "user-7", None, None, 10.0, 1.0),
        Revocation("client", "acme", None, None, 10.0, 1.0),
        Revocation("CLIENT", "acme", None, 1.0, 10.0, 1.0),
    ],
    ids=[
        "unknown-kind",
        "subject-without-not-before",
        "client-without-not-before",
        "kind-is-case-sensitive",
    ],
)
async def test_malformed_revocation_is_refused(store: Store, rev: Revocation) -> None:
    with pytest.raises(StoreError):
        await store.add_revocation(rev)
    assert await store.active_revocations(now=0.0) == []
    assert await store.changes_since(0) == []


# -- IP blocks ------------------------------------------------------------------------------


async def test_ip_block_round_trip_and_change(store: Store) -> None:
    block = IpBlock("203.0.113.0/24", "credential stuffing", 100.0, 3700.0)
    await store.add_ip_block(block)
    assert await store.active_ip_blocks(now=200.0) == [block]
    [change] = await store.changes_since(0)
    assert change.kind == "ip.blocked"
    assert change.payload == {
        "cidr": "203.0.113.0/24",
        "until": 3700.0,
        "reason": "credential stuffing",
    }
    assert change.at == 100.0


async def test_expired_ip_blocks_are_not_active(store: Store) -> None:
    await store.add_ip_block(IpBlock("198.51.100.7/32", "", 100.0, 500.0))
    await store.add_ip_block(IpBlock("2001:db8::/32", "", 110.0, 1500.0))
    assert [b.cidr for b in await store.active_ip_blocks(400.0)] == [
        "198.51.100.7/32",
        "2001:db8::/32",
    ]
    assert [b.cidr for b in await store.active_ip_blocks(500.0)] == ["2001:db8::/32"]


async def test_lifting_an_ip_block(store: Store) -> None:
    await store.add_ip_block(IpBlock("198.51.100.7/32", "", 100.0, 5000.0))
    await store.add_ip_block(IpBlock("198.51.100.8/32", "", 100.0, 5000.0))
    assert await store.lift_ip_block("198.51.100.7/32", 200.0) is True
    assert [b.cidr for b in await store.active_ip_blocks(300.0)] == ["198.51.100.8/32"]
    kinds = [(c.kind, c.payload) for c in await store.changes_since(0)]
    assert kinds[-1] == ("ip.unblocked", {"cidr": "198.51.100.7/32", "at": 200.0})
    # Lifting again, an unknown network or an expired block changes nothing.
    seq = await store.last_change_seq()
    assert await store.lift_ip_block("198.51.100.7/32", 250.0) is False
    assert await store.lift_ip_block("192.0.2.1/32", 250.0) is False
    assert await store.lift_ip_block("198.51.100.8/32", 6000.0) is False
    assert await store.last_change_seq() == seq


async def test_announce_appends_config_changed_only(store: Store) -> None:
    await store.announce("config.changed", {"digest": "ab" * 32, "at": 5.0}, 5.0)
    [change] = await store.changes_since(0)
    assert (change.kind, change.payload, change.at) == (
        "config.changed",
        {"digest": "ab" * 32, "at": 5.0},
        5.0,
    )
    # Kinds with a table of their own must be written with their record.
    for kind in ("api_key.revoked", "token.revoked", "ip.blocked", "anything"):
        with pytest.raises(StoreError, match="cannot be announced"):
            await store.announce(kind, {}, 6.0)
    with pytest.raises(StoreError, match="not serialisable"):
        await store.announce("config.changed", {"x": object()}, 6.0)
    assert await store.last_change_seq() == change.seq


# -- change feed --------------------------------------------------------------------------


async def test_changes_since_is_ordered_paged_and_exclusive(store: Store) -> None:
    assert await store.last_change_seq() == 0
    assert await store.changes_since(0) == []
    for i in range(5):
        await store.add_revocation(_jti(f"t{i}", at=float(i)))
    all_changes = await store.changes_since(0)
    seqs = [c.seq for c in all_changes]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 5
    assert [c.payload["jti"] for c in all_changes] == ["t0", "t1", "t2", "t3", "t4"]
    assert await store.last_change_seq() == seqs[-1]
    assert [c.seq for c in await store.changes_since(seqs[1])] == seqs[2:]
    assert [c.seq for c in await store.changes_since(seqs[1], limit=2)] == seqs[2:4]
    assert await store.changes_since(seqs[-1]) == []
    assert await store.changes_since(0, limit=0) == []


# -- audit log ----------------------------------------------------------------------------


async def test_write_and_count_audit(store: Store) -> None:
    assert await store.count_audit() == 0
    await store.write_audit([])
    records = [
        {
            "@timestamp": "2024-01-01T00:00:00.000Z",
            "event": {"outcome": "success"},
            "http": {"request": {"id": f"r{i}"}},
            "source": {"ip": "192.0.2.1"},
            "user": {"id": "alice"},
        }
        for i in range(3)
    ]
    await store.write_audit(records)
    await store.write_audit([{"@timestamp": "2024-01-01T00:00:01.000Z"}])
    assert await store.count_audit() == 4


async def test_unserialisable_audit_record_is_a_store_error(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.write_audit([{"@timestamp": "x", "bad": object()}])
    assert await store.count_audit() == 0


async def test_store_has_no_audit_update_or_delete() -> None:
    for cls in (MemoryStore, SqliteStore, PostgresStore):
        public = {n for n in dir(cls) if not n.startswith("_") and "audit" in n}
        assert public <= {"write_audit", "count_audit", "audit_rows"}


# -- lifecycle ----------------------------------------------------------------------------


async def test_every_call_after_close_is_a_store_error(store: Store) -> None:
    await store.close()
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.put_client(_client()),
        lambda: store.get_client("acme"),
        lambda: store.list_clients(),
        lambda: store.put_api_key(_key()),
        lambda: store.get_api_key("k1"),
        lambda: store.list_api_keys(),
        lambda: store.revoke_api_key("k1", 1.0),
        lambda: store.rotate_api_key("k1", _key("k2"), 1.0),
        lambda: store.record_key_usage({"k1": (1, 1.0)}),
        lambda: store.add_revocation(_jti()),
        lambda: store.active_revocations(0.0),
        lambda: store.add_ip_block(IpBlock("192.0.2.1/32", "", 1.0, 2.0)),
        lambda: store.lift_ip_block("192.0.2.1/32", 1.0),
        lambda: store.active_ip_blocks(0.0),
        lambda: store.announce("config.changed", {}, 1.0),
        lambda: store.changes_since(0),
        lambda: store.last_change_seq(),
        lambda: store.write_audit([{"@timestamp": "x"}]),
        lambda: store.count_audit(),
    ]
    for call in calls:
        with pytest.raises(StoreError):
            await call()


# -- open_store ---------------------------------------------------------------------------


def test_open_store_maps_urls(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    rel = open_store("sqlite:///bastion.db")
    assert isinstance(rel, SqliteStore)
    assert rel.path == "bastion.db"
    absolute = open_store(f"sqlite:///{tmp_path}/x.db")
    assert isinstance(absolute, SqliteStore)
    assert absolute.path == f"{tmp_path}/x.db"
    for url in ("postgresql://bob:hunter2@db:6543/x", "postgres://bob:hunter2@db:6543/x"):
        pg = open_store(url)
        assert isinstance(pg, PostgresStore)
        assert pg.target == "db:6543/x"
        assert "hunter2" not in repr(pg)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://bob:hunter2@db/x",
        "postgresql://",
        "sqlite:///",
        "sqlite://relative.db",
        "redis://x",
        "",
    ],
)
def test_open_store_refuses_other_urls_without_echoing_credentials(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_store(url)
    assert "hunter2" not in str(info.value)
