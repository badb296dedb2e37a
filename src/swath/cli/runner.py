"""``swath runner``: run tasks from importable modules until SIGINT/SIGTERM."""

from __future__ import annotations

import importlib
import logging
from typing import Any

import click

from swath.cli._common import Seconds, clean, client, console, markup, open_cache, run
from swath.task import Task

CACHE_HELP = (
    "Runner cache: a path, file:///path, memory://, s3://bucket/prefix, gs://bucket/prefix."
)


def load_task(spec: str) -> list[type[Task]]:
    """``module:TaskClass`` -> that class; ``module`` -> every Task subclass defined in it."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raised while importing
        what = f"{type(exc).__name__}: {exc}" if not isinstance(exc, ImportError) else str(exc)
        hint = (
            " (the module must be importable by this Python: install its project into this "
            "environment, e.g. pip install -e ., or run from its directory with PYTHONPATH=.)"
            if isinstance(exc, ModuleNotFoundError)
            else ""
        )
        raise click.BadParameter(clean(f"cannot import {module_name!r}: {what}{hint}")) from None
    if attr:
        found = getattr(module, attr, None)
        if not (isinstance(found, type) and issubclass(found, Task)):
            raise click.BadParameter(f"{spec!r} is not a Task subclass")
        return [found]
    tasks = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, Task)
        and value is not Task
        and value.__module__ == module.__name__
    ]
    if not tasks:
        raise click.BadParameter(f"module {module_name!r} defines no Task subclasses")
    return tasks


def serve_metrics(port: int, host: str) -> None:
    """Start the Prometheus endpoint (``swath._otel.serve_metrics``), or a usage error."""
    try:
        from swath._otel import serve_metrics as serve
    except ImportError as exc:
        raise click.UsageError(
            f"--metrics-port needs the OpenTelemetry extra: pip install 'swath[otel]' ({exc})"
        ) from None
    try:
        serve(port, host)
    except ImportError as exc:
        raise click.UsageError(
            f"--metrics-port needs the OpenTelemetry extra: pip install 'swath[otel]' ({exc})"
        ) from None
    except OSError as exc:
        raise click.UsageError(f"--metrics-port: cannot listen on {host}:{port}: {exc}") from None
    console.print(f"metrics on http://{markup(host)}:{port}/metrics")


class _CleanFormatter(logging.Formatter):
    """Log lines with control characters escaped (task errors carry user text); tracebacks
    keep their newlines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return clean(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return clean(super().formatException(ei), multiline=True)


@click.command()
@click.argument("tasks", nargs=-1, required=True)
@click.option("--cache", "cache_url", default="cache", show_default=True, help=CACHE_HELP)
@click.option("--cluster", default="default", show_default=True)
@click.option("--concurrency", default=64, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--lease",
    default=30.0,
    show_default=True,
    type=Seconds(0.0, inclusive=False),
    help="Lease of claimed tasks, seconds.",
)
@click.option(
    "--grace",
    default=30.0,
    show_default=True,
    type=Seconds(0.0),
    help="Grace period on stop, seconds.",
)
@click.option("--until-idle", is_flag=True, help="Stop when no runnable work remains.")
@click.option(
    "--automations",
    is_flag=True,
    help="Also evaluate the automations of the cluster (cron ticks, new objects) while running.",
)
@click.option(
    "--metrics-port",
    default=None,
    type=click.IntRange(0, 65535),
    help="Serve OpenTelemetry metrics for Prometheus on this port (/metrics); needs swath[otel].",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="The address --metrics-port listens on.",
)
@click.pass_context
def runner(
    ctx: click.Context,
    tasks: tuple[str, ...],
    cache_url: str,
    cluster: str,
    concurrency: int,
    lease: float,
    grace: float,
    until_idle: bool,
    automations: bool,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run TASKS (``module:TaskClass`` or ``module`` for all its tasks) until SIGINT/SIGTERM."""
    classes = [cls for spec in tasks for cls in load_task(spec)]
    if metrics_port is not None:
        serve_metrics(metrics_port, metrics_host)
    handler = logging.StreamHandler()
    handler.setFormatter(_CleanFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])

    async def go() -> None:
        async with client(ctx) as c:
            r = c.runner(
                classes,
                open_cache(cache_url),
                cluster=cluster,
                max_concurrency=concurrency,
                lease=lease,
                grace=grace,
                handle_signals=True,
                automations=automations,
            )
            console.print(
                f"runner {r.id} on cluster [bold]{markup(cluster)}[/] ({markup(c.store.url)}): "
                f"{markup(', '.join(r.registry.identifiers()))}"
            )
            await (r.run_all() if until_idle else r.run_forever())
            s = r.stats
            console.print(
                f"stopped: {s.succeeded} succeeded, {s.failed} failed, {s.released} released"
            )

    run(go())
