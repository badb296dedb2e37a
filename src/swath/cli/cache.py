"""``swath cache ls|du|cat|rm|gc|import-tilebox``: look into a cache by its URL."""

from __future__ import annotations

import sys

import click
from rich.table import Table

from swath.cache import Backend
from swath.cache._base import CacheAPI
from swath.cache.tilebox import ImportReport, import_tilebox_cache
from swath.cli._common import EXIT_ERROR, clean, client, console, markup, open_cache, run, size
from swath.client import FINISHED_JOB_STATES, Client
from swath.store.base import JobState

URL_HELP = "Cache URL: a path, file:///path, memory://, s3://bucket/prefix, gs://bucket/prefix."


def _open(url: str, *, read_only: bool) -> Backend:
    """The cache of ``url``; reading commands open it ``read_only`` (they create nothing and
    say "no cache at ..." when there is none)."""
    return open_cache(url, read_only=read_only)


def _at(backend: Backend, group: str) -> CacheAPI:
    return backend.group(group) if group else backend


@click.group()
def cache() -> None:
    """Look into a cache (job caches are the groups named by job ids)."""


@cache.command("ls")
@click.argument("url")
@click.argument("group", default="")
def ls(url: str, group: str) -> None:
    """List the subgroups (ending in /) and keys of GROUP (default: the top)."""

    async def go() -> list[str]:
        async with _open(url, read_only=True) as backend:
            where = _at(backend, group)
            names = [f"{name}/" async for name in where.groups()]
            return names + [key async for key in where]

    for name in run(go()):
        click.echo(clean(name))


@cache.command()
@click.argument("url")
@click.argument("group", default="")
def du(url: str, group: str) -> None:
    """Bytes and values per subgroup of GROUP (and its own direct keys), recursively summed."""

    async def total(where: CacheAPI) -> tuple[int, int]:
        count = nbytes = 0
        async for key in where:
            count += 1
            nbytes += (await where.stat(key)).size
        async for name in where.groups():
            c, n = await total(where.group(name))
            count, nbytes = count + c, nbytes + n
        return count, nbytes

    async def go() -> list[tuple[str, int, int]]:
        async with _open(url, read_only=True) as backend:
            where = _at(backend, group)
            rows = []
            async for name in where.groups():
                rows.append((f"{name}/", *await total(where.group(name))))
            own = own_bytes = 0
            async for key in where:
                own += 1
                own_bytes += (await where.stat(key)).size
            if own:
                rows.append((".", own, own_bytes))
            return rows

    rows = run(go())
    table = Table("group", "values", "size")
    for name, count, nbytes in rows:
        table.add_row(markup(name), str(count), size(nbytes))
    table.add_row("[bold]total[/]", str(sum(r[1] for r in rows)), size(sum(r[2] for r in rows)))
    console.print(table)


@cache.command("cat")
@click.argument("url")
@click.argument("key")
def cat(url: str, key: str) -> None:
    """Write the value of KEY to stdout, streamed in chunks (a reader that stops early, such as
    ``head``, ends it quietly with exit code 141)."""

    async def go() -> None:
        out = sys.stdout.buffer
        async with _open(url, read_only=True) as backend:
            async for chunk in backend.stream(key, chunk_size=1 << 20):
                out.write(chunk)
        out.flush()

    run(go())


@cache.command()
@click.argument("url")
@click.argument("key")
@click.option("-r", "--recursive", is_flag=True, help="KEY is a group: remove it and all below.")
def rm(url: str, key: str, recursive: bool) -> None:
    """Remove KEY (or, with -r, the group KEY and everything below it)."""

    async def go() -> None:
        async with _open(url, read_only=True):  # a cache that is not there is not created
            pass
        async with _open(url, read_only=False) as backend:
            if recursive:
                await backend.group(key).clear()
            else:
                await backend.delete(key)

    run(go())


@cache.command()
@click.argument("url")
@click.option("--failed", is_flag=True, help="Also remove the caches of FAILED jobs.")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.pass_context
def gc(ctx: click.Context, url: str, failed: bool, dry_run: bool) -> None:
    """Remove the job caches of finished jobs (COMPLETED, CANCELED; FAILED with --failed).

    Groups that are not jobs of the job store, and caches of jobs still active, are kept."""
    finished = set(FINISHED_JOB_STATES) if failed else set(FINISHED_JOB_STATES) - {JobState.FAILED}

    async def collect(c: Client, backend: Backend) -> tuple[list[str], int]:
        removed: list[str] = []
        kept = 0
        for name in [name async for name in backend.groups()]:
            job = await c.store.get_job(name)
            if job is None or job.state not in finished:
                kept += 1
                continue
            removed.append(f"{clean(name)} ({clean(job.name)}, {job.state})")
            if not dry_run:
                await backend.group(name).clear()
        return removed, kept

    async def go() -> tuple[list[str], int]:
        # the job store is only read; the cache too with --dry-run; a cache that is not there
        # is "no cache at ...", never created
        async with client(ctx, read_only=True) as c, _open(url, read_only=True) as backend:
            if dry_run:
                return await collect(c, backend)
        async with client(ctx, read_only=True) as c, _open(url, read_only=False) as backend:
            return await collect(c, backend)

    removed, kept = run(go())
    verb = "would remove" if dry_run else "removed"
    for line in removed:
        click.echo(f"{verb} {line}")
    click.echo(f"{verb} {len(removed)} job caches; kept {kept} groups")


@cache.command("import-tilebox")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.argument("url")
@click.option("--overwrite", is_flag=True, help="Replace keys that hold other bytes.")
@click.option(
    "--delete-source", is_flag=True, help="Remove each file once its copy is verified (a move)."
)
def import_tilebox(directory: str, url: str, overwrite: bool, delete_source: bool) -> None:
    """Copy a Tilebox Workflows local cache DIRECTORY into the swath cache at URL.

    Each file becomes the key of the same path (DIRECTORY/<job id>/<key> -> <job id>/<key>),
    streamed and verified by size and CRC32C. Keys already holding the same bytes are left
    alone, so an interrupted import can be run again. Exits 1 if a file was skipped (symbolic
    links, paths that are not valid keys) or conflicts with a different value."""

    async def go() -> ImportReport:
        async with _open(url, read_only=False) as backend:  # an import creates its cache
            return await import_tilebox_cache(
                directory, backend, overwrite=overwrite, delete_source=delete_source
            )

    report = run(go())
    click.echo(
        f"copied {len(report.copied)} values ({size(report.copied_bytes)}); "
        f"{len(report.unchanged)} already there"
    )
    for rel, reason in report.skipped:
        click.echo(clean(f"skipped {rel!r}: {reason}"), err=True)
    for rel in report.conflicts:
        click.echo(
            clean(f"conflict {rel!r}: the cache holds other bytes (use --overwrite)"), err=True
        )
    if not report.ok:
        sys.exit(EXIT_ERROR)
