"""``bastion control serve``: run the admin API (``/admin/v1``) on the ``control`` listener."""

from __future__ import annotations

import typer

from bastion.cli.common import ConfigOpt, load, run

control_app = typer.Typer(
    help="The control plane: the admin API for applications, keys, users and roles.",
    no_args_is_help=True,
)


@control_app.command("serve")
def control_serve(config: ConfigOpt) -> None:
    """Serve the admin API until Ctrl-C (tokens: the authorization server's, after MFA)."""
    cfg = load(config)
    from bastion.control.serve import control_settings, serve_control

    control_settings(cfg)  # a config problem fails here, before anything is opened
    run(serve_control(cfg))
