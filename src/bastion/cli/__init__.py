"""The ``bastion`` command line (typer + rich)."""
