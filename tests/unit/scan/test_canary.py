"""The SSRF canary records who fetched which token, and nothing else."""

from __future__ import annotations

import asyncio

import httpx

from bastion.scan.canary import Canary


async def test_hit_is_recorded_for_its_token_only() -> None:
    async with Canary() as canary:
        token = canary.new_token()
        assert canary.url(token).startswith("http://127.0.0.1:")
        async with httpx.AsyncClient() as client:
            reply = await client.get(canary.url(token) + "?x=1")
            assert reply.text == "ok"
            await client.get(f"{canary.base_url}/other/path")
        hit = await canary.wait(token, seconds=2.0)
        assert hit is not None
        assert hit.method == "GET"
        assert hit.peer == "127.0.0.1"
        assert await canary.wait(canary.new_token(), seconds=0.05) is None
        assert len(canary.hits) == 1


async def test_waiting_sees_a_later_hit() -> None:
    async with Canary() as canary:
        token = canary.new_token()

        async def later() -> None:
            await asyncio.sleep(0.05)
            async with httpx.AsyncClient() as client:
                await client.post(canary.url(token), content=b"body")

        task = asyncio.create_task(later())
        hit = await canary.wait(token, seconds=5.0)
        await task
        assert hit is not None
        assert hit.method == "POST"


async def test_garbage_and_silence_are_ignored() -> None:
    async with Canary() as canary:
        reader, writer = await asyncio.open_connection("127.0.0.1", canary.port)
        writer.write(b"\x00\x01 not http\r\n\r\n")
        await writer.drain()
        await reader.read()  # the canary closes the connection
        writer.close()
        _r2, w2 = await asyncio.open_connection("127.0.0.1", canary.port)
        w2.close()
        await asyncio.sleep(0.05)
        assert canary.hits == []
    await canary.close()  # closing twice is harmless
