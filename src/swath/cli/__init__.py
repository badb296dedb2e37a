"""The ``swath`` command: ``demo``, ``runner``, ``jobs ...``, ``clusters ...``, ``cache ...``,
``automations ...``."""

from __future__ import annotations

import logging

import click

from swath.cli._common import DATABASE_HELP, SwathGroup
from swath.cli.automations import automations
from swath.cli.cache import cache
from swath.cli.clusters import clusters
from swath.cli.dashboard import dashboard
from swath.cli.demo import demo
from swath.cli.jobs import jobs
from swath.cli.runner import runner


@click.group(cls=SwathGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--database", envvar="SWATH_DATABASE_URL", default=None, help=DATABASE_HELP)
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@click.version_option(package_name="swath")
@click.pass_context
def main(ctx: click.Context, database: str | None, debug: bool) -> None:
    """swath: async-first workflows with a streaming per-job cache.

    Errors are one line on stderr; exit codes: 1 the command failed (the message says why),
    2 usage, 3 the job store or cache cannot be used (missing, unreadable, corrupt,
    unreachable), 70 internal error, 130 interrupted, 141 output pipe closed."""
    ctx.obj = {"database": database, "debug": debug}
    # swath's warnings (a store retrying) are not printed by Python's last-resort handler: an
    # error is the one line the command prints; `swath runner` configures logging itself
    swath_log = logging.getLogger("swath")
    if not any(isinstance(h, logging.NullHandler) for h in swath_log.handlers):
        swath_log.addHandler(logging.NullHandler())


main.add_command(demo)
main.add_command(runner)
main.add_command(jobs)
main.add_command(clusters)
main.add_command(cache)
main.add_command(dashboard)
main.add_command(automations)

__all__ = ["main"]
