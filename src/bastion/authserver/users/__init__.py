"""Users of the authorization server: accounts, login pages, TOTP MFA, lockout.

The OAuth endpoints use :func:`open_user_service` and the :class:`UserService` it returns: its
``routes`` are the login and MFA pages, :meth:`UserService.current` tells who is signed in, and
:class:`Authentication` carries the ``amr``/``acr`` the ID token reports.
"""

from __future__ import annotations

from bastion.authserver.users.config import UsersConfig
from bastion.authserver.users.model import ACR_MFA, ACR_PWD, Authentication, UserInfo
from bastion.authserver.users.service import UserService, open_user_service

__all__ = [
    "ACR_MFA",
    "ACR_PWD",
    "Authentication",
    "UserInfo",
    "UserService",
    "UsersConfig",
    "open_user_service",
]
