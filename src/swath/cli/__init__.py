"""The ``swath`` command: ``demo``, ``runner``, ``jobs ...``, ``cache ...``."""

from __future__ import annotations

import click

from swath.cli._common import DATABASE_HELP
from swath.cli.cache import cache
from swath.cli.demo import demo
from swath.cli.jobs import jobs
from swath.cli.runner import runner


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--database", envvar="SWATH_DATABASE_URL", default=None, help=DATABASE_HELP)
@click.version_option(package_name="swath")
@click.pass_context
def main(ctx: click.Context, database: str | None) -> None:
    """swath: async-first workflows with a streaming per-job cache."""
    ctx.obj = {"database": database}


main.add_command(demo)
main.add_command(runner)
main.add_command(jobs)
main.add_command(cache)

__all__ = ["main"]
