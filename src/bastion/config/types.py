"""Small value types shared by config models: durations, rates, secrets, CIDRs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from ``30``, ``"30s"``, ``"500ms"``, ``"5m"``, ``"1h"`` or ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s', '5m', '1h'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(
                f"{value!r} is not a duration (use e.g. '500ms', '30s', '5m', '1h', '1d')"
            )
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError("a duration is a number of seconds or a string like '30s'")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A non-negative number of seconds; accepts ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h"``, ``"1d"``."""


def resolve_secret(value: Any) -> Any:
    """Read ``file:PATH`` references; ``${ENV}`` references were expanded by the loader."""
    if isinstance(value, SecretStr):
        return value
    if isinstance(value, str) and value.startswith("file:"):
        path = Path(value[5:]).expanduser()
        try:
            return SecretStr(path.read_text(encoding="utf-8").rstrip("\r\n"))
        except OSError as exc:
            raise ValueError(f"cannot read secret file {str(path)!r}: {exc.strerror}") from None
    return value


Secret = Annotated[SecretStr, BeforeValidator(resolve_secret)]
"""A secret value: literal, ``${ENV_VAR}`` or ``file:/path``. Never printed (``SecretStr``)."""


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RateSpec(StrictModel):
    """A rate: ``rate`` events per ``per`` seconds, with an optional ``burst`` (default: rate)."""

    rate: int = Field(gt=0, description="Events allowed per period.")
    per: Duration = Field(default=1.0, gt=0, description="The period, e.g. '1s', '1m', '1h'.")
    burst: int | None = Field(
        default=None, gt=0, description="Events allowed at once; defaults to `rate`."
    )

    @property
    def emission_interval(self) -> float:
        """Seconds between two events at the steady rate (GCRA's T)."""
        return self.per / self.rate

    @property
    def effective_burst(self) -> int:
        return self.burst if self.burst is not None else self.rate

    def describe(self) -> str:
        return f"{self.rate}/{_fmt_seconds(self.per)}"


def _fmt_seconds(s: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size and s % size == 0:
            n = int(s // size)
            return unit if n == 1 else f"{n}{unit}"
    return f"{s}s"
