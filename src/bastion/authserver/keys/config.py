"""Config of the signing keys (``auth.keys`` in bastion.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from bastion.config.types import StrictModel


class KeysConfig(StrictModel):
    """Signing keys of the authorization server."""

    algorithm: Literal["ES256", "EdDSA", "PS256"] = Field(
        default="ES256", description="Algorithm of new signing keys."
    )
