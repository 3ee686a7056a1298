"""Reading ``bastion.yaml``: ``${ENV}`` expansion, route defaults, validation, clear errors.

Every problem is reported as ``location: message`` (``routes[2].ratelimit.limits[0].rate: …``)
and nothing starts half-configured: :func:`load_config` either returns a complete, validated
config or raises :class:`~bastion.errors.ConfigError` with all problems found.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bastion.config.model import BastionConfig, LayerSettings, cross_check
from bastion.errors import ConfigError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LAYER_KEYS = tuple(LayerSettings.model_fields)


def _loc(parts: tuple[int | str, ...]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out or "(top level)"


def _expand_env(
    node: Any, env: Mapping[str, str], path: tuple[int | str, ...], problems: list[str]
) -> Any:
    if isinstance(node, str):

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in env:
                problems.append(f"{_loc(path)}: environment variable {name} is not set")
                return ""
            return env[name]

        return _ENV_REF.sub(sub, node)
    if isinstance(node, dict):
        return {k: _expand_env(v, env, (*path, str(k)), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v, env, (*path, i), problems) for i, v in enumerate(node)]
    return node


def _deep_merge(base: Any, override: Any) -> Any:
    """Route settings override defaults key by key; lists and scalars replace whole."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for k, v in override.items():
            merged[k] = _deep_merge(base[k], v) if k in base else v
        return merged
    return override


def _apply_defaults(doc: dict[str, Any]) -> dict[str, Any]:
    defaults = doc.get("defaults")
    routes = doc.get("routes")
    if not isinstance(defaults, dict) or not isinstance(routes, list):
        return doc
    merged_routes = []
    for r in routes:
        if isinstance(r, dict):
            r = dict(r)
            for key in _LAYER_KEYS:
                if key in defaults:
                    r[key] = _deep_merge(defaults[key], r.get(key, {}))
        merged_routes.append(r)
    return {**doc, "routes": merged_routes}


def _format_validation(err: ValidationError, prefix: tuple[str, ...] = ()) -> list[str]:
    problems = []
    for e in err.errors(include_url=False):
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (not part of the configuration schema)"
        # Drop pydantic's union-branch labels (e.g. 'FileSink') from the location.
        loc = prefix + tuple(p for p in e["loc"] if not (isinstance(p, str) and p[:1].isupper()))
        problems.append(f"{_loc(loc)}: {msg}")
    return problems


def parse_config(doc: Any, env: Mapping[str, str] | None = None) -> BastionConfig:
    """Validate an already-parsed YAML document. Raises ConfigError with every problem."""
    if not isinstance(doc, dict):
        raise ConfigError(["(top level): the file must be a mapping of keys to values"])
    problems: list[str] = []
    doc = _expand_env(doc, os.environ if env is None else env, (), problems)
    if problems:
        raise ConfigError(problems)
    doc = _apply_defaults(doc)
    defaults = doc.pop("defaults", None)
    if defaults is not None:
        try:
            LayerSettings.model_validate(defaults)
        except ValidationError as exc:
            problems.extend(_format_validation(exc, ("defaults",)))
    try:
        cfg = BastionConfig.model_validate(doc)
    except ValidationError as exc:
        problems.extend(_format_validation(exc))
    if problems:
        raise ConfigError(problems)
    problems = cross_check(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> BastionConfig:
    """Read and validate ``path``. Relative file paths in the config stay relative to the CWD."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read: {exc.strerror}"]) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError([f"{p} {where}: {problem}"]) from None
    return parse_config(doc, env)
