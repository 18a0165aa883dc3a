"""The `headwater` command line (typer + rich): thin, it parses arguments and calls the public API."""

from headwater.cli.app import app, main
from headwater.cli.output import ExitCode

__all__ = ["ExitCode", "app", "main"]
