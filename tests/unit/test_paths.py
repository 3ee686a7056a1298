"""Request-target hygiene: paths an upstream could read differently are refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.core.paths import path_problem, route_matches


@pytest.mark.parametrize(
    "path", ["/", "/api", "/api/users/42", "/a/.well-known/x", "/a/..b", "/a%20b", "/a:b@c"]
)
def test_clean_paths_pass(path: str) -> None:
    assert path_problem(path) is None


@pytest.mark.parametrize(
    "path",
    [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2e/admin",
        "/public/.%2e/admin",
        "/public/./admin",
        "/..",
        "/a//b",
        "/a%2fb",
        "/a%2Fb",
        "/a%5cb",
        "/a\\b",
        "/a%00b",
        "api",
        "/a b",
        "/a\tb",
        "/ä",
    ],
)
def test_bypass_attempts_refused(path: str) -> None:
    assert path_problem(path) is not None


def test_prefix_matching_is_segment_aware() -> None:
    assert route_matches("/api", "/api")
    assert route_matches("/api", "/api/x")
    assert not route_matches("/api", "/apix")
    assert route_matches("/api/", "/api/x")
    assert route_matches("/", "/anything")


@given(st.text(max_size=64))
def test_path_problem_never_raises(path: str) -> None:
    result = path_problem(path)
    assert result is None or isinstance(result, str)
