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


async def test_set_user_roles_on_postgres() -> None:
    import dataclasses

    from bastion.authserver.users.config import UsersConfig
    from bastion.authserver.users.service import open_user_service
    from bastion.control.admin.users import set_user_roles
    from tests.unit.control.harness import FAST_HASH

    async with pg_schema("control") as url:
        await PostgresStore(url).upgrade()
        store = PostgresStore(url)
        await store.open()
        try:
            service = await open_user_service(
                UsersConfig(password_hash=FAST_HASH), store, issuer="https://auth.test"
            )
            user = await service.create_user("dora", "a-long-enough-password", roles=("auditor",))
            changed = dataclasses.replace(user, roles=("security",), updated_at=5.0)
            assert await set_user_roles(store, service, changed)
            got = await service.repo.get_user(user.id)
            assert got is not None
            assert got.roles == ("security",)
            assert not await set_user_roles(store, service, dataclasses.replace(changed, id="no"))
        finally:
            await store.close()
