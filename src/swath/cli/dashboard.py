"""``swath dashboard``: serve the web dashboard (the extra ``swath[dashboard]``)."""

from __future__ import annotations

import os

import click

from swath.cli._common import EXIT_USAGE, CommandError, clean, database, open_cache, require_store
from swath.cli._common import run as run_coroutine
from swath.client import DEFAULT_CACHE_ROOT, Client
from swath.store.base import store_from_url


@click.command()
@click.option(
    "--database", "database_url", default=None, help="Job store URL (default: the main --database)."
)
@click.option(
    "--cache",
    "cache_url",
    default=None,
    envvar="SWATH_CACHE_URL",
    help="Cache URL to browse (default: $SWATH_CACHE_URL, else ./cache if there is one).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; any but loopback requires a token.",
)
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option("--read-only", is_flag=True, help="Hide and refuse the cancel and retry actions.")
@click.option(
    "--token",
    default=None,
    envvar="SWATH_DASHBOARD_TOKEN",
    help="Access token (default: none on loopback, else a new random one, printed).",
)
@click.pass_context
def dashboard(
    ctx: click.Context,
    database_url: str | None,
    cache_url: str | None,
    host: str,
    port: int,
    read_only: bool,
    token: str | None,
) -> None:
    """Serve the web dashboard: jobs, task trees with live progress, clusters, the cache."""
    try:
        import uvicorn

        from swath.dashboard import create_app
        from swath.dashboard.security import is_loopback, new_token
    except ImportError as exc:
        raise CommandError(
            f"the dashboard needs the extra swath[dashboard] ({exc}): "
            "pip install 'swath[dashboard]'",
            EXIT_USAGE,
        ) from None
    if token is not None and not token:
        raise CommandError("--token is empty", EXIT_USAGE)
    url = database_url if database_url is not None else database(ctx)
    if url is not None:
        ctx.find_root().obj["database"] = url
    run_coroutine(require_store(ctx))  # a typo names no new, empty database
    if token is None and not is_loopback(host):
        token = new_token()
    client = Client(store=store_from_url(url, read_only=read_only))
    if cache_url is None and os.path.isdir(DEFAULT_CACHE_ROOT):
        cache_url = DEFAULT_CACHE_ROOT  # where `swath demo` and runners made without one write
    cache = open_cache(cache_url, read_only=True) if cache_url else None
    app = create_app(client, cache, read_only=read_only, token=token)
    shown = f"[{host}]" if ":" in host else host
    address = f"http://{shown}:{port}/"
    if token is not None:
        address += f"?token={token}"
    click.echo(f"swath dashboard on {clean(address)}", err=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=3,
        proxy_headers=False,
    )
