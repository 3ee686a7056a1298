"""The benchmark's generated configs are valid Bastion configs; its parsers read what they must."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from bench import bastion_target as bt
from bench.nginx import reverse_proxy_conf, static_upstream_conf
from bench.processes import parse_stat_line, parse_vm_hwm
from bench.report import RoundSample, TargetResult, goal_lines, ratios
from bench.wrk import WrkFailed, WrkResult, parse_wrk_output
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet

from bastion.config import load_config, parse_config
from bastion.errors import ConfigError

PEPPER = "ab" * 32
ENV = {bt.PEPPER_ENV: PEPPER}
DISTRIBUTED = {
    "store": "postgresql://postgres@127.0.0.1:5432/test?search_path=bench_x",
    "cache": "redis://127.0.0.1:6379/0",
    "key_prefix": "benchx:",
}


def _config(variant: str, workers: int = 1, audit: bool = True) -> dict[str, Any]:
    return bt.bastion_config(variant, port=18081, upstream_port=18080, workers=workers, audit=audit)


def test_jwt_config_is_valid_and_needs_a_token_from_the_bench_issuer() -> None:
    cfg = parse_config(_config("a", workers=2), ENV)
    route = cfg.routes[0]
    assert route.authn.methods == ["jwt"]
    assert [i.issuer for i in cfg.issuers] == [bt.BENCH_ISSUER]
    assert cfg.issuers[0].jwks_file == "jwks.json"
    assert cfg.issuers[0].audiences == [bt.BENCH_AUDIENCE]
    assert cfg.issuers[0].algorithms == ["ES256"]
    assert [(lim.key, lim.rate) for lim in route.ratelimit.limits] == [
        ("principal", bt.HIGH_RATE),
        ("ip", bt.HIGH_RATE),
    ]
    assert route.ratelimit.enforce is True
    assert cfg.server.workers == 2
    assert cfg.listeners[0].bind == "127.0.0.1:18081"
    assert str(route.upstream) == "http://127.0.0.1:18080/"
    assert [s.type for s in cfg.audit.sinks] == ["file"]
    assert cfg.api_keys.pepper is None


def test_api_key_config_takes_the_pepper_from_the_environment() -> None:
    cfg = parse_config(_config("b"), ENV)
    assert cfg.routes[0].authn.methods == ["api_key"]
    assert cfg.api_keys.pepper is not None
    assert cfg.api_keys.pepper.get_secret_value() == PEPPER
    assert PEPPER not in json.dumps(_config("b"))  # the file holds only the reference
    with pytest.raises(ConfigError, match=bt.PEPPER_ENV):
        parse_config(_config("b"), {})


def test_pure_proxy_config_is_anonymous_without_limits() -> None:
    cfg = parse_config(_config("c"), ENV)
    route = cfg.routes[0]
    assert route.authn.methods == []
    assert route.authn.unsafe_allow_anonymous is True
    assert route.ratelimit.limits == []
    assert [s.type for s in cfg.audit.sinks] == ["file"]
    assert parse_config(_config("c", audit=False), ENV).audit.sinks == []
    assert cfg.issuers == []


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown variant"):
        bt.bastion_config("z", port=1, upstream_port=2)


def test_distributed_variants_need_their_backends() -> None:
    for variant in bt.DISTRIBUTED:
        with pytest.raises(ValueError, match="needs store, cache and key_prefix"):
            bt.bastion_config(variant, port=1, upstream_port=2)
        doc = bt.bastion_config(variant, port=1, upstream_port=2, **DISTRIBUTED)
        cfg = parse_config(doc, ENV)
        assert cfg.store == DISTRIBUTED["store"]
        assert cfg.cache == DISTRIBUTED["cache"]
        assert cfg.cluster.key_prefix == DISTRIBUTED["key_prefix"]


def test_written_config_loads_from_its_directory(tmp_path: Path) -> None:
    for variant in bt.VARIANTS:
        directory = tmp_path / variant
        directory.mkdir()
        extra = DISTRIBUTED if variant in bt.DISTRIBUTED else {}
        path = bt.write_config(
            directory, bt.bastion_config(variant, port=1, upstream_port=2, **extra)
        )
        assert load_config(path, ENV).routes[0].name == "bench"


def test_jwt_material_verifies_against_the_written_jwks(tmp_path: Path) -> None:
    now = time.time()
    material = bt.make_jwt_material(tmp_path, now=now)
    jwks = json.loads(material.jwks_file.read_text())
    assert material.jwks_file == tmp_path / "jwks.json"
    assert [k["kid"] for k in jwks["keys"]] == [bt.BENCH_KID]
    assert "d" not in jwks["keys"][0]  # only the public key is written
    token = jwt.decode(material.token, KeySet.import_key_set(jwks), algorithms=["ES256"])
    assert token.header["alg"] == "ES256"
    assert token.header["typ"] == "at+jwt"
    claims = token.claims
    assert claims["iss"] == bt.BENCH_ISSUER
    assert claims["aud"] == bt.BENCH_AUDIENCE
    assert claims["exp"] - claims["iat"] == 3600
    assert abs(claims["iat"] - now) < 2
    assert len(claims["jti"]) == 32
    (tmp_path / "other").mkdir()
    other = bt.make_jwt_material(tmp_path / "other")
    with pytest.raises(BadSignatureError):
        jwt.decode(material.token, KeySet.import_key_set(json.loads(other.jwks_file.read_text())))


def test_pepper_is_32_random_bytes_in_hex() -> None:
    a, b = bt.new_pepper(), bt.new_pepper()
    assert len(a) == 64
    assert a != b
    assert bytes.fromhex(a)


def test_nginx_configs_bind_loopback_and_keep_upstream_connections_alive(tmp_path: Path) -> None:
    static = static_upstream_conf(tmp_path, 18080, '{"ok":true}')
    assert "listen 127.0.0.1:18080;" in static
    assert "return 200 '{\"ok\":true}';" in static
    assert f"error_log {tmp_path}/error.log" in static
    proxy = reverse_proxy_conf(tmp_path, 18081, 18080, workers=2)
    assert "worker_processes 2;" in proxy
    assert "server 127.0.0.1:18080;" in proxy
    assert "keepalive 64;" in proxy
    assert "proxy_http_version 1.1;" in proxy
    assert 'proxy_set_header Connection "";' in proxy
    assert "daemon" not in proxy  # given with -g on the command line
    for bad in ("it's", "$host", "a\\b"):
        with pytest.raises(ValueError, match="must not contain"):
            static_upstream_conf(tmp_path, 18080, bad)


WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:1/api/echo
Requests/sec:  1999.28
BENCH_RESULT {"requests":20000,"duration_us":10000000,"bytes":3300000,"errors":{"connect":0,"read":1,"write":0,"status":2,"timeout":0},"latency_us":{"mean":92.9,"stdev":93.9,"max":2107,"p50":80,"p90":134,"p99":368,"p999":1481}}
"""


def test_wrk_result_line_is_parsed() -> None:
    r = parse_wrk_output(WRK_OUTPUT)
    assert r.requests == 20000
    assert r.rps == 2000.0
    assert (r.p50_ms, r.p99_ms, r.max_ms) == (0.08, 0.368, 2.107)
    assert r.error_count == 3
    with pytest.raises(WrkFailed, match="no BENCH_RESULT"):
        parse_wrk_output("Requests/sec: 1.0\n")


def test_proc_stat_fields_are_counted_from_the_last_parenthesis() -> None:
    fields = ["S", "1", "4242", "4242"] + ["0"] * 7 + ["150", "25"] + ["0"] * 30
    line = "4243 (nginx: worker) (x) " + " ".join(fields)
    assert parse_stat_line(line) == (4242, 150, 25)
    assert parse_vm_hwm("Name:\tnginx\nVmHWM:\t   6836 kB\nVmRSS:\t 6000 kB\n") == 6836
    assert parse_vm_hwm("Name:\tzombie\n") == 0


def _wrk(requests: int, p99_ms: float, errors: int = 0) -> WrkResult:
    return WrkResult(requests, 10.0, 0.1, 0.2, p99_ms, 2.0, 0.1, 3.0, {"status": errors})


def test_medians_ratios_and_goals() -> None:
    ref = TargetResult("nginx", "nginx-proxy", peak_rss_kib=7000)
    a = TargetResult("a", "bastion (a) jwt", peak_rss_kib=80 * 1024)
    for rps, cpu in ((40_000, 4.0), (60_000, 6.0), (50_000, 5.0)):
        ref.rounds.append(RoundSample(_wrk(rps * 10, 0.5), cpu, _wrk(20_000, 0.5)))
    for rps, cpu in ((15_000, 6.0), (16_000, 6.4), (20_000, 8.0)):
        a.rounds.append(RoundSample(_wrk(rps * 10, 1.2), cpu, _wrk(20_000, 1.2)))
    assert ref.median()["rps"] == 50_000
    assert ref.median()["cpu_us"] == pytest.approx(10.0)
    r = ratios(a, ref)
    assert r["rps_ratio"] == pytest.approx(0.32)
    assert r["added_p99_ms"] == pytest.approx(0.7)
    assert r["cpu_ratio"] == pytest.approx(4.0)
    lines = goal_lines([ref, a], workers=1)
    assert [line.split()[0] for line in lines] == ["met", "met", "met", "met"]
    assert goal_lines([ref, a], workers=2)[0].split()[0] == "MISS"  # 0.32 < 0.40
    a.rounds.append(RoundSample(_wrk(10, 9.0, errors=4), 1.0, None))
    assert a.median()["errors"] == 4


def test_openapi_config_adds_the_document_to_the_jwt_config(tmp_path: Path) -> None:
    cfg = parse_config(_config("d"), ENV)
    route = cfg.routes[0]
    assert route.openapi.spec == bt.SPEC_FILE
    assert route.authn.methods == ["jwt"]
    assert [lim.rate for lim in route.ratelimit.limits] == [bt.HIGH_RATE, bt.HIGH_RATE]
    assert route.response_filter.enabled is None  # on, because the route has a document
    a = _config("a")
    a["routes"][0]["openapi"] = {"spec": bt.SPEC_FILE}
    assert _config("d") == a  # (d) is (a) plus the document, nothing else


def test_bench_bodies_are_valid_and_clean_for_the_openapi_layers(tmp_path: Path) -> None:
    from bench.gateway import BIG_BODY, STATIC_BODY

    from bastion.gateway.layers.response_filter.config import ResponseFilterConfig
    from bastion.gateway.layers.response_filter.layer import ResponseFilterLayer
    from bastion.openapi.spec import load_spec

    spec = load_spec(str(bt.write_openapi_spec(tmp_path)))
    response_filter = ResponseFilterLayer(ResponseFilterConfig(), spec.operations)
    for size, answer in ((1, STATIC_BODY), (100, BIG_BODY)):
        op, _, _ = spec.match("POST", bt.SIZE_PATHS[size])
        assert op is not None
        assert op.security == ({"bearerAuth": ("bench",)},)
        request = op.request_body[0]
        assert request.validator is not None
        order = json.loads(bt.order_body(bt.SIZE_ITEMS[size]))
        assert request.validator.is_valid(order)
        size_bytes = len(bt.order_body(bt.SIZE_ITEMS[size]))
        assert 0.9 * size * 1024 <= size_bytes <= 1.1 * size * 1024, size_bytes
        media = op.response_schemas(200)
        assert media is not None
        compiled, problems = response_filter._prepare(media[0])
        assert problems == []
        assert compiled.fast is not None
        assert compiled.fast.is_valid(json.loads(answer))  # the fast path: nothing to change


def test_static_upstream_serves_big_bodies_from_a_public_directory(tmp_path: Path) -> None:
    from bench.nginx import write_static_files

    www = tmp_path / "www"
    www.mkdir(mode=0o700)
    write_static_files(www, {"/api/echo100": '{"a":1}'})
    assert (www / "api" / "echo100").read_text() == '{"a":1}'
    assert (www.stat().st_mode & 0o777, (www / "api").stat().st_mode & 0o777) == (0o755, 0o755)
    conf = static_upstream_conf(tmp_path, 18080, "{}", files={"/api/echo100": "x"}, files_root=www)
    assert f"location = /api/echo100 {{\n            root {www};" in conf
    assert "error_page 405 =200 $uri;" in conf
    with pytest.raises(ValueError, match="static file path"):
        static_upstream_conf(tmp_path, 18080, "{}", files={"/../etc": "x"})
    proxy = reverse_proxy_conf(tmp_path, 18081, 18080)
    assert "client_body_buffer_size 1m;" in proxy
    assert "proxy_max_temp_file_size 0;" in proxy


def test_openapi_ratio_lines() -> None:
    from bench.report import openapi_lines, reference_key, size_key

    assert size_key("a", 1) == "a"
    assert size_key("d", 100) == "d@100"
    assert reference_key("d@100") == "nginx@100"
    assert reference_key("a") == "nginx"
    results = []
    for key, rps in (("a", 10_000), ("d", 8_500), ("a@100", 2_000), ("d@100", 500)):
        r = TargetResult(key, key)
        r.rounds.append(RoundSample(_wrk(rps * 10, 1.0), rps * 10 * 50e-6, None))
        results.append(r)
    lines = openapi_lines(results)
    assert lines[0].split()[:3] == ["met", "1", "KB:"]
    assert "0.85" in lines[0]
    assert "100 KB: 0.25" in lines[1]
    assert "median of the rounds' ratios 0.85" in lines[0]
    results[1].rounds[0] = RoundSample(_wrk(70_000, 1.0), 1.0, None)
    assert openapi_lines(results)[0].split()[0] == "MISS"
    # The medians meet the goal, but the rounds' own ratios do not: not met.
    a, d = results[0], results[1]
    a_rps = (10_000, 10_000, 5_000, 5_000, 5_000)
    d_rps = (7_000, 7_000, 3_900, 3_900, 9_000)
    a.rounds[:] = [RoundSample(_wrk(rps * 10, 1.0), 1.0, None) for rps in a_rps]
    d.rounds[:] = [RoundSample(_wrk(rps * 10, 1.0), 1.0, None) for rps in d_rps]
    line = openapi_lines(results)[0]
    assert "1 KB: 1.40" in line
    assert "median of the rounds' ratios 0.78" in line
    assert line.split()[0] == "MISS"
