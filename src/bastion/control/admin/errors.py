"""Errors of the admin API: :class:`~bastion.errors.BastionError` subclasses with stable codes.

Besides these, the admin API answers with the tree's own ``authn.failed`` (401, opaque: a
missing, forged, expired or foreign token), ``access.forbidden`` (403, the role may not do
this), ``openapi.invalid_request`` (400, the body or query breaks the operation's schema;
``detail`` names the JSON pointer and rule, never the value) and ``store.unavailable`` (503).

::

    AuthenticationFailed
    ├── MfaRequired        admin.mfa_required       401 (token issued without MFA)
    └── StepUpRequired     admin.step_up_required   401 (auth_time older than 10 min)
    AdminNotFound          admin.not_found          404
    AdminConflict          admin.conflict           409
"""

from __future__ import annotations

from typing import ClassVar

from bastion.errors import AuthenticationFailed, BastionError


class MfaRequired(AuthenticationFailed):
    """The token is valid but its ``amr`` names no second factor: sign in again with MFA.
    ``WWW-Authenticate`` carries RFC 9470's ``insufficient_user_authentication``."""

    code: ClassVar[str] = "admin.mfa_required"
    title: ClassVar[str] = "Multi-factor authentication required"


class StepUpRequired(AuthenticationFailed):
    """A destructive operation needs a login at most ``max_age`` seconds old (RFC 9470 step-up:
    ``WWW-Authenticate`` carries ``max_age``)."""

    code: ClassVar[str] = "admin.step_up_required"
    title: ClassVar[str] = "Recent authentication required"


class AdminNotFound(BastionError):
    """The application, key or user named in the path does not exist (or, for a developer,
    belongs to another team: the two are not told apart)."""

    code: ClassVar[str] = "admin.not_found"
    status: ClassVar[int] = 404
    title: ClassVar[str] = "Not found"


class AdminConflict(BastionError):
    """The change clashes with what exists (an application id or username already taken)."""

    code: ClassVar[str] = "admin.conflict"
    status: ClassVar[int] = 409
    title: ClassVar[str] = "Conflict"
