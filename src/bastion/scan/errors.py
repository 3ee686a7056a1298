"""The scanner's errors, in the :class:`~bastion.errors.BastionError` tree.

::

    BastionError
    └── ScanError                    scan.error
        ├── ScanUsageError           scan.usage            (CLI exit 2: bad options, files)
        ├── TargetError              scan.target           (CLI exit 2: target unusable)
        │   └── LoginFailed          scan.login_failed     (an identity could not log in)
        ├── RequestFailed            scan.request_failed   (no answer: timeout, refused)
        ├── BudgetExhausted          scan.budget_exhausted (the global request budget is spent)
        ├── OffOrigin                scan.off_origin       (a URL outside the target origin)
        └── SafetyRefused            scan.safety_refused   (the safety policy forbids it)

A check catches :class:`RequestFailed` when no answer is a signal (a time-based probe), and
:class:`SafetyRefused` when it can do without the request; the runner handles the rest.
"""

from __future__ import annotations

from bastion.errors import BastionError


class ScanError(BastionError):
    """Root of the scanner's errors."""

    code = "scan.error"
    title = "Scan error"


class ScanUsageError(ScanError):
    """A bad option or input file; the CLI exits 2."""

    code = "scan.usage"
    title = "Invalid scan options"


class TargetError(ScanError):
    """The target cannot be scanned (unreachable, spec unusable); the CLI exits 2."""

    code = "scan.target"
    title = "Target error"


class LoginFailed(TargetError):
    """An identity of scan-auth.yaml could not obtain its credentials."""

    code = "scan.login_failed"
    title = "Login failed"


class RequestFailed(ScanError):
    """A request got no answer (timeout, connection refused or reset); ``elapsed`` in seconds."""

    code = "scan.request_failed"
    title = "Request failed"

    def __init__(self, detail: str, *, elapsed: float = 0.0, timed_out: bool = False) -> None:
        super().__init__(detail)
        self.elapsed = elapsed
        self.timed_out = timed_out


class BudgetExhausted(ScanError):
    """The global request budget is spent: no more requests in this scan."""

    code = "scan.budget_exhausted"
    title = "Request budget exhausted"


class OffOrigin(ScanError):
    """A request to somewhere other than the target origin was refused (never sent)."""

    code = "scan.off_origin"
    title = "Off-origin request refused"


class SafetyRefused(ScanError):
    """The safety policy refused a request (never sent, not counted in the budget)."""

    code = "scan.safety_refused"
    title = "Refused by the safety policy"
