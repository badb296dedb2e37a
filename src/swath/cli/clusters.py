"""``swath clusters ls|create|rm``: the named queues runners claim from (``client.clusters()``)."""

from __future__ import annotations

import click
from rich.table import Table

from swath.cli._common import (
    EXIT_ERROR,
    CommandError,
    client,
    console,
    markup,
    require_store,
    run,
    when,
)
from swath.client import Cluster


@click.group()
def clusters() -> None:
    """List, create and remove clusters (the cluster 'default' always exists)."""


@clusters.command("ls")
@click.pass_context
def ls(ctx: click.Context) -> None:
    """List the clusters."""

    async def go() -> list[Cluster]:
        async with client(ctx, read_only=True) as c:
            return await c.clusters().all()

    table = Table("cluster", "name", "created")
    for cluster in run(go()):
        table.add_row(markup(cluster.slug), markup(cluster.name), when(cluster.created_at))
    console.print(table)


@clusters.command()
@click.argument("slug")
@click.option("--name", default="", help="A display name (default: the cluster's slug).")
@click.option("--exist-ok", is_flag=True, help="Succeed if the cluster exists already.")
@click.pass_context
def create(ctx: click.Context, slug: str, name: str, exist_ok: bool) -> None:
    """Create the cluster SLUG (1-63 characters of a-z, 0-9, '-', '_'). Creates the job store
    if there is none, as `swath runner` does."""

    async def go() -> bool:
        async with client(ctx) as c:
            if exist_ok and slug in {found.slug for found in await c.clusters().all()}:
                return False
            await c.clusters().create(slug, name)
            return True

    created = run(go())
    console.print(f"{'created' if created else 'exists:'} cluster {markup(slug)}")


@clusters.command()
@click.argument("slug")
@click.pass_context
def rm(ctx: click.Context, slug: str) -> None:
    """Remove the cluster SLUG (not 'default'). Its jobs and tasks stay in the store; a runner
    of a removed cluster refuses to start until it is created again."""

    async def go() -> bool:
        await require_store(ctx)
        async with client(ctx) as c:
            return await c.clusters().delete(slug)

    if not run(go()):
        raise CommandError(f"no cluster {slug!r}", EXIT_ERROR)
    console.print(f"removed cluster {markup(slug)}")
