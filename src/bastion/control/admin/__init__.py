"""The admin API (``/admin/v1``): see :mod:`bastion.control.admin.app` for the request path,
:mod:`~bastion.control.admin.roles` for who may do what, :mod:`~bastion.control.admin.spec`
for the operations and their OpenAPI 3.1 document, and ``docs/control.md`` for operators.

:func:`build_admin_api` assembles the app from every operation's handler.
"""

from __future__ import annotations

from collections.abc import Mapping

from bastion.control.admin import incidents, keys_api, service, users
from bastion.control.admin.app import AdminApi, Handler
from bastion.control.admin.auth import AdminPrincipal, AdminTokenVerifier
from bastion.control.admin.service import AdminContext

__all__ = [
    "HANDLERS",
    "AdminApi",
    "AdminContext",
    "AdminPrincipal",
    "AdminTokenVerifier",
    "build_admin_api",
]

#: Operation id -> handler, for every operation the admin API serves.
HANDLERS: Mapping[str, Handler] = {
    "me.get": service.me_get,
    "apps.list": service.apps_list,
    "apps.get": service.apps_get,
    "apps.create": service.apps_create,
    "apps.update": service.apps_update,
    "audit.list": service.audit_list,
    "keys.list": keys_api.keys_list,
    "keys.create": keys_api.keys_create,
    "keys.rotate": keys_api.keys_rotate,
    "keys.revoke": keys_api.keys_revoke,
    "incident.revoke_app": incidents.revoke_application,
    "users.list": users.users_list,
    "users.get": users.users_get,
    "users.invite": users.users_invite,
    "users.set_roles": users.users_set_roles,
    "users.disable": users.users_disable,
    "users.enable": users.users_enable,
    "users.reset_mfa": users.users_reset_mfa,
    "incident.block_ip": incidents.block_ip,
}


def build_admin_api(ctx: AdminContext, verifier: AdminTokenVerifier) -> AdminApi:
    """The admin API over ``ctx``; ``api.app`` is the ASGI app to serve or mount."""
    return AdminApi(ctx, verifier, HANDLERS)
