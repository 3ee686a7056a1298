"""Config of users, login and MFA (``auth.users`` in bastion.yaml)."""

from __future__ import annotations

from pydantic import Field

from bastion.config.types import StrictModel


class UsersConfig(StrictModel):
    """Users, login and MFA of the authorization server."""

    lockout_threshold: int = Field(
        default=10, ge=1, le=10, description="Failed logins before the account is locked."
    )
