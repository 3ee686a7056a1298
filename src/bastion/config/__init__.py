"""The ``bastion.yaml`` schema, its loading and its checks."""

from bastion.config.load import load_config, parse_config
from bastion.config.model import BastionConfig, RouteConfig

__all__ = ["BastionConfig", "RouteConfig", "load_config", "parse_config"]
