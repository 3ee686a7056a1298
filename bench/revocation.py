"""How fast a revocation reaches every gateway node: p50 and p99 over many revocations.

Starts ``--nodes`` (3) ``bastion gateway`` processes on loopback sharing PostgreSQL and Redis,
keeps a steady load on every node with a long-lived API key and JWT, then per round:

1. makes a fresh API key (in the store) and a fresh JWT (new ``jti``), and waits until every
   node accepts both;
2. revokes both the way a writer does (``bastion keys revoke``, the control plane): commit to
   PostgreSQL, then push on Redis;
3. polls every node on its own keep-alive connection until each refuses both, and records the
   time from the start of step 2 to the last refusal.

``change_poll_interval`` is 4 s, so a convergence faster than that is Redis push, not the
store's change feed. Needs the PostgreSQL (database ``test``) and Redis servers of DEVELOPERS.md.

    .venv/bin/python bench/revocation.py                 # 3 nodes, 100 revocations
    .venv/bin/python bench/revocation.py --rounds 50 --json revocation.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench.*` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
import yaml
from joserfc import jwt
from joserfc.jwk import ECKey

from bastion.core.apikeys import hash_secret, new_api_key
from bastion.events.redis_bus import publish_control, redis_client
from bastion.store.base import ApiKeyRecord, ClientRecord, Revocation
from bastion.store.postgres import PostgresStore
from bench.backends import postgres_schema, redis_prefix
from bench.processes import Children, free_port, wait_for_port

ISSUER = "https://idp.bench"
AUDIENCE = "https://api.bench"
PEPPER = secrets.token_hex(32)
BASTION = str(Path(sys.executable).with_name("bastion"))


async def upstream(port: int) -> asyncio.Server:
    """A keep-alive upstream answering every request with a small 200."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", port)


class Conn:
    """One keep-alive connection to a node."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.r: asyncio.StreamReader | None = None
        self.w: asyncio.StreamWriter | None = None

    async def status(self, credential: str) -> int:
        if self.w is None:
            self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.r is not None
        self.w.write(
            f"GET /api/x HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {credential}\r\n\r\n".encode()
        )
        head = await self.r.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await self.r.readexactly(length)
        return int(head.split(b" ", 2)[1])


def token(key: ECKey, jti: str) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "bench",
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
        "jti": jti,
    }
    return jwt.encode({"alg": "ES256", "kid": "k1"}, claims, key)


def write_config(
    work: Path, store: str, cache: str, prefix: str, ports: list[int], up: int
) -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"})
    (work / "jwks.json").write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    (work / "signing.json").write_bytes(orjson.dumps(key.as_dict(private=True)))
    for i, port in enumerate(ports):
        doc: dict[str, Any] = {
            "store": store,
            "cache": cache,
            "cluster": {"nodes": len(ports), "key_prefix": prefix},
            "change_poll_interval": 4,
            "listeners": [{"bind": f"127.0.0.1:{port}"}],
            "issuers": [
                {"issuer": ISSUER, "jwks_file": str(work / "jwks.json"), "audiences": [AUDIENCE]}
            ],
            "api_keys": {"pepper": "${BASTION_BENCH_PEPPER}"},
            "audit": {"sinks": []},
            "routes": [
                {
                    "name": "api",
                    "path_prefix": "/api",
                    "upstream": f"http://127.0.0.1:{up}",
                    "ratelimit": {"limits": [{"rate": 1_000_000, "per": "1s"}]},
                    # The polling below is a stream of refused credentials from one IP: the
                    # credential-stuffing lockout would answer 429 to everything after a while.
                    "authn": {"failed_attempts_limit": {"rate": 1_000_000, "per": "1s"}},
                }
            ],
        }
        (work / f"node{i}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


async def put_key(store: PostgresStore) -> tuple[str, str]:
    key_id, secret, full = new_api_key()
    now = time.time()
    rec = ApiKeyRecord(key_id, "bench", hash_secret(PEPPER.encode(), secret), (), now, None)
    await store.put_api_key(rec)
    return key_id, full


async def steady_load(ports: list[int], credentials: list[str], stop: asyncio.Event) -> int:
    """About 300 requests/s per node with credentials that stay valid; returns the count."""
    count = 0

    async def one(port: int) -> None:
        nonlocal count
        conn = Conn(port)
        while not stop.is_set():
            for i, c in enumerate(credentials):
                status = await conn.status(c)
                if status != 200:
                    raise RuntimeError(
                        f"valid credential {i} refused ({status}) by :{port} under steady load"
                    )
                count += 1
            await asyncio.sleep(0.005)

    await asyncio.gather(*(one(p) for p in ports))
    return count


async def measure(args: argparse.Namespace, store_url: str, prefix: str, ports: list[int],
                  signing: ECKey) -> dict[str, Any]:  # fmt: skip
    store = PostgresStore(store_url)
    await store.open()
    redis = redis_client(args.cache, timeout=1.0)
    try:
        await store.put_client(ClientRecord("bench", "bench", time.time()))
        _, steady_key = await put_key(store)
        stop = asyncio.Event()
        load = asyncio.create_task(steady_load(ports, [steady_key, token(signing, "steady")], stop))
        conns = [Conn(p) for p in ports]
        samples: list[float] = []
        for _ in range(args.rounds):
            key_id, key = await put_key(store)
            jti = secrets.token_hex(8)
            tok = token(signing, jti)
            for c in conns:  # every node accepts both before the revocation
                while await c.status(key) != 200 or await c.status(tok) != 200:
                    await asyncio.sleep(0.01)
            start = time.perf_counter()
            at = time.time()
            await store.revoke_api_key(key_id, at)
            await store.add_revocation(Revocation("jti", jti, None, None, at + 600, at))
            await publish_control(
                redis, prefix, {"type": "api_key.revoked", "key_id": key_id, "at": at}
            )
            await publish_control(
                redis, prefix, {"type": "token.revoked", "jti": jti, "expires_at": at + 600}
            )

            async def until_refused(c: Conn, key: str = key, tok: str = tok) -> None:
                while await c.status(key) != 401 or await c.status(tok) != 401:
                    pass

            await asyncio.wait_for(asyncio.gather(*(until_refused(c) for c in conns)), 10)
            samples.append((time.perf_counter() - start) * 1000)
        stop.set()
        steady = await load
    finally:
        await redis.aclose()
        await store.close()
    samples.sort()
    return {
        "nodes": len(ports),
        "revocations": len(samples),
        "p50_ms": round(statistics.median(samples), 2),
        "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 2),
        "max_ms": round(samples[-1], 2),
        "steady_requests": steady,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--store", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--cache", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args(argv)
    if args.rounds < 50:
        parser.error("--rounds must be at least 50 for a p99")
    env = {**os.environ, "BASTION_BENCH_PEPPER": PEPPER}
    with (
        postgres_schema(args.store) as store_url,
        redis_prefix(args.cache) as prefix,
        tempfile.TemporaryDirectory(prefix="bastion-revocation-") as tmp,
        Children() as kids,
    ):
        work = Path(tmp)
        ports = [free_port() for _ in range(args.nodes)]
        up_port = free_port()
        write_config(work, store_url, args.cache, prefix, ports, up_port)
        signing = ECKey.import_key(orjson.loads((work / "signing.json").read_bytes()))
        subprocess.run([BASTION, "db", "upgrade", "-c", str(work / "node0.yaml")],
                       env=env, check=True, capture_output=True)  # fmt: skip

        async def run() -> dict[str, Any]:
            server = await upstream(up_port)
            try:
                for i, port in enumerate(ports):
                    log = work / f"node{i}.log"
                    proc = kids.start([BASTION, "gateway", "-c", str(work / f"node{i}.yaml")],
                                      log=log, env=env, cwd=work)  # fmt: skip
                    await asyncio.to_thread(wait_for_port, port, proc, log, 60.0)
                return await measure(args, store_url, prefix, ports, signing)
            finally:
                await asyncio.to_thread(kids.stop_all)  # their upstream connections end
                server.close()
                await server.wait_closed()

        result = asyncio.run(run())
    print(
        f"revocation reached all {result['nodes']} nodes: p50 {result['p50_ms']} ms, "
        f"p99 {result['p99_ms']} ms, max {result['max_ms']} ms over {result['revocations']} "
        f"revocations (API key + JWT each; {result['steady_requests']} steady requests meanwhile)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
