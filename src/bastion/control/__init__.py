"""The control plane (issue 7): the admin API over applications, API keys, users and roles.

:mod:`bastion.control.admin` is the HTTP admin API (``/admin/v1``); :mod:`bastion.control.keys`
holds the framework-free API-key lifecycle operations that the admin API and the CLI share.
Every change made here is written to the admin audit trail and pushed to every node.
"""
