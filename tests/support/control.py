"""The admin API's test config: SQLite store, the authorization server with a local key store,
cheap argon2 parameters, MFA for every admin role, and ``control`` on a port of its own.

Secrets (peppers, KEK) are made at test time as files beside the config.
"""

from __future__ import annotations

import secrets
import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_control_config(directory: Path, admin_port: int, extra: str = "") -> Path:
    """Write ``directory/bastion.yaml`` serving the admin API on ``admin_port``; ``extra`` is
    YAML appended at the top level (listeners, routes, …). Returns its path."""
    for name in ("pepper", "keypepper"):
        (directory / name).write_text(secrets.token_urlsafe(48))
    (directory / "kek").write_text(secrets.token_bytes(32).hex())
    path = directory / "bastion.yaml"
    path.write_text(
        f"""
store: sqlite:///{directory}/bastion.db
api_keys:
  pepper: file:{directory}/keypepper
auth:
  issuer: http://127.0.0.1:{free_port()}
  client_secret_pepper: file:{directory}/pepper
  keys:
    local:
      kek: file:{directory}/kek
  users:
    mfa_required_roles: [owner, admin, security, auditor, developer]
    password_hash: {{time_cost: 2, memory_cost: 19456, parallelism: 1}}
control:
  bind: 127.0.0.1:{admin_port}
  audience: urn:bastion:admin
"""
        + extra
    )
    return path
