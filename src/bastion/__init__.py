"""Bastion: a layered security foundation in front of SaaS APIs.

The public API is small and listed in ``__all__`` (pinned by ``tests/unit/test_public_api.py``):
load a config, wrap an ASGI app, and the error tree. Everything else is internal.
``protect`` is imported on first use, so ``import bastion`` stays cheap.
"""

from typing import TYPE_CHECKING, Any

from bastion.config.load import load_config
from bastion.config.model import BastionConfig
from bastion.errors import BastionError, ConfigError

if TYPE_CHECKING:
    from bastion.gateway.asgi import protect

__version__ = "0.1.0"

__all__ = ["BastionConfig", "BastionError", "ConfigError", "__version__", "load_config", "protect"]


def __getattr__(name: str) -> Any:
    if name == "protect":
        from bastion.gateway.asgi import protect

        return protect
    raise AttributeError(f"module 'bastion' has no attribute {name!r}")
