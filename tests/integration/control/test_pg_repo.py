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
