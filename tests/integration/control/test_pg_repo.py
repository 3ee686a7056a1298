"""The control repository on the real PostgreSQL server, and its triggers refusing UPDATE,
DELETE and TRUNCATE of the admin audit trail."""

from __future__ import annotations

import pytest

from bastion.control.admin.repo import control_repo
from bastion.errors import StoreError
from bastion.store.postgres import PostgresStore
from tests.support.postgres import pg_schema
from tests.unit.control.repo_contract import check_applications, check_audit, entry

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("hang_guard")]


async def test_postgres_contract_and_append_only_audit() -> None:
    async with pg_schema("control") as url:
        await PostgresStore(url).upgrade()
        store = PostgresStore(url)
        await store.open()
        try:
            await check_applications(store)
            await check_audit(store)
            await control_repo(store).append_audit(entry(99))
            for sql in (
                "UPDATE admin_audit SET actor = 'mallory'",
                "DELETE FROM admin_audit",
                "TRUNCATE admin_audit",
            ):

                async def attack(conn, s=sql):  # type: ignore[no-untyped-def]
                    await conn.execute(s)

                with pytest.raises(StoreError, match="append-only"):
                    await store.write("attack", attack)

            async def count(conn):  # type: ignore[no-untyped-def]
                return await conn.fetchval("SELECT COUNT(*) FROM admin_audit")

            assert await store.read("count", count) == 8
        finally:
            await store.close()


async def test_set_roles_through_the_user_repository_on_postgres() -> None:
    """PUT /users/{id}/roles writes through UserRepo.set_roles on PostgreSQL; an unknown user
    is a 404 and changes nothing."""
    from tests.unit.control.harness import NOW, make_harness, with_users
    from tests.unit.control.test_users import Env

    async with pg_schema("control") as url:
        await PostgresStore(url).upgrade()
        store = PostgresStore(url)
        await store.open()
        try:
            h = make_harness(store)  # type: ignore[arg-type]
            users = await with_users(h)
            e = Env(h, users)
            await e.add("olivia", "owner")
            dora = await e.add("dora", "auditor", "gateway-user")
            h.clock.advance(5)
            r = await e.call("PUT", f"/users/{dora}/roles", "olivia", {"roles": ["security"]})
            assert r.status_code == 200, r.text
            got = await users.repo.get_user(dora)
            assert got is not None
            assert got.roles == ("gateway-user", "security")
            assert got.updated_at == NOW + 5
            r = await e.call("PUT", "/users/nobody/roles", "olivia", {"roles": ["owner"]})
            assert r.status_code == 404
        finally:
            await store.close()
