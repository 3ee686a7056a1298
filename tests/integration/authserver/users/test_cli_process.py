"""``bastion auth users`` as a user runs it: the real executable, a real config and SQLite file;
exit codes, one line per error, no traceback, no secret on the screen."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.support.cluster import BASTION

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple"
PEPPER = "users-cli-pepper-" + "q" * 32
ENV = {
    **{k: v for k, v in os.environ.items() if k != "BASTION_DEBUG"},
    "USERS_TEST_PEPPER": PEPPER,
    "COLUMNS": "200",
    "NO_COLOR": "1",
}
CONFIG = """\
store: sqlite:///state.db
listeners:
  - bind: 127.0.0.1:0
api_keys:
  pepper: ${USERS_TEST_PEPPER}
routes:
  - name: api
    path_prefix: /api
    upstream: http://127.0.0.1:9
    authn: {methods: [api_key]}
auth:
  issuer: http://127.0.0.1:9000
  client_secret_pepper: ${USERS_TEST_PEPPER}
  users:
    password_hash: {time_cost: 2, memory_cost: 19456, parallelism: 1}
    totp_encryption_key: ${USERS_TEST_PEPPER}
"""


def bastion(cwd: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BASTION, "auth", "users", *args, "-c", "bastion.yaml"],
        cwd=cwd,
        env=ENV,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def clean(result: subprocess.CompletedProcess[str]) -> None:
    text = result.stdout + result.stderr
    assert "Traceback" not in text
    assert PASSWORD not in text


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "bastion.yaml").write_text(CONFIG)
    return tmp_path


def test_users_commands_end_to_end(workdir: Path) -> None:
    created = bastion(
        workdir, "create", "root", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n"
    )
    clean(created)
    assert created.returncode == 0, created.stderr
    assert "created user root" in created.stdout

    listed = bastion(workdir, "list", "--json")
    clean(listed)
    [user] = orjson.loads(listed.stdout)
    assert user["username"] == "root"
    assert user["roles"] == ["admin"]
    assert "password_hash" not in listed.stdout
    assert "$argon2id$" not in listed.stdout

    for command in ("lock", "unlock", "reset-mfa"):
        result = bastion(workdir, command, "root")
        clean(result)
        assert result.returncode == 0, result.stderr

    missing = bastion(workdir, "lock", "nobody")
    clean(missing)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: no user 'nobody'"

    duplicate = bastion(workdir, "create", "ROOT", "--password-stdin", stdin=PASSWORD + "\n")
    clean(duplicate)
    assert duplicate.returncode == 1
    assert len(duplicate.stderr.strip().splitlines()) == 1


def test_password_never_from_argv(workdir: Path) -> None:
    result = bastion(workdir, "create", "alice", "--password", PASSWORD)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    short = bastion(workdir, "create", "alice", "--password-stdin", stdin="short\n")
    clean(short)
    assert short.returncode == 2
    assert "at least 12 characters" in short.stderr


def test_config_without_auth(tmp_path: Path) -> None:
    (tmp_path / "bastion.yaml").write_text(CONFIG.split("auth:")[0])
    result = bastion(tmp_path, "list")
    clean(result)
    assert result.returncode == 2
    assert "no 'auth' section" in result.stderr
