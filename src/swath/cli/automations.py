"""``swath automations ls|create-cron|create-storage|pause|resume|rm|run``."""

from __future__ import annotations

import asyncio
import logging
import signal

import click
import msgspec
from rich.table import Table

from swath.automations import CATCH_UP_POLICIES, Automation
from swath.cli._common import Seconds, client, console, markup, require_store, run, when
from swath.cli.runner import _CleanFormatter, load_task
from swath.task import Task, decode_input

TASK_HELP = "module:TaskClass, the task each job runs (its module must be importable)."
INPUT_HELP = 'The task\'s input as a JSON object of its fields, e.g. \'{"scene": "S2A"}\'.'


@click.group()
def automations() -> None:
    """Cron schedules and storage-event triggers that submit jobs."""


def _task(spec: str, input_json: str) -> Task:
    """The task ``spec`` names (``module:TaskClass``) with the fields of ``input_json``."""
    if ":" not in spec:
        raise click.BadParameter(f"{spec!r}: name one task class, module:TaskClass")
    [cls] = load_task(spec)
    try:
        return decode_input(cls, input_json.encode())
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise click.BadParameter(f"the input does not fit {cls.__qualname__}: {exc}") from None


def _describe(a: Automation) -> str:
    if a.kind == "cron":
        return f"{a.schedule} ({a.timezone}, catch-up {a.catch_up})"
    return f"{a.url} {a.glob}"


@automations.command("ls")
@click.pass_context
def ls(ctx: click.Context) -> None:
    """List automations: what fires them, the task and cluster, state, and the last tick
    decided (cron) or the high-water mark of the objects seen (storage)."""

    async def go() -> list[Automation]:
        async with client(ctx, read_only=True) as c:
            return await c.automations().all()

    table = Table("name", "kind", "fires on", "task", "cluster", "state", "cursor")
    for a in run(go()):
        table.add_row(
            markup(a.name),
            a.kind,
            markup(_describe(a)),
            markup(f"{a.task_name} {a.task_version}"),
            markup(a.cluster),
            "[yellow]paused[/]" if a.paused else "[green]active[/]",
            when(a.cursor),
        )
    console.print(table)


def _created(a: Automation) -> None:
    console.print(f"created automation [bold]{markup(a.name)}[/] {a.id}: {markup(_describe(a))}")


@automations.command("create-cron")
@click.argument("name")
@click.argument("schedule")
@click.argument("task")
@click.option("--input", "input_json", default="{}", show_default=True, help=INPUT_HELP)
@click.option("--cluster", default="default", show_default=True)
@click.option("--max-retries", default=0, show_default=True, type=click.IntRange(0, 2**31 - 1))
@click.option("--timezone", default="UTC", show_default=True, help="An IANA time zone name.")
@click.option(
    "--catch-up",
    default="latest",
    show_default=True,
    type=click.Choice(CATCH_UP_POLICIES),
    help="Ticks missed while nothing evaluated: fire the latest, all, or none.",
)
@click.pass_context
def create_cron(
    ctx: click.Context,
    name: str,
    schedule: str,
    task: str,
    input_json: str,
    cluster: str,
    max_retries: int,
    timezone: str,
    catch_up: str,
) -> None:
    """Submit TASK as a job named NAME at each tick of SCHEDULE (5 cron fields, or 6 with
    seconds first: "*/2 * * * * *")."""
    prototype = _task(task, input_json)

    async def go() -> Automation:
        async with client(ctx) as c:  # like a runner, creates the store if there is none
            return await c.automations().cron(
                name,
                schedule,
                prototype,
                cluster,
                max_retries,
                timezone=timezone,
                catch_up=catch_up,  # type: ignore[arg-type]  # a click.Choice of the policies
            )

    _created(run(go()))


@automations.command("create-storage")
@click.argument("name")
@click.argument("url")
@click.argument("task")
@click.option(
    "--glob", default="*", show_default=True, help="Keys that fire (fnmatch: * matches /)."
)
@click.option("--input", "input_json", default="{}", show_default=True, help=INPUT_HELP)
@click.option("--cluster", default="default", show_default=True)
@click.option("--max-retries", default=0, show_default=True, type=click.IntRange(0, 2**31 - 1))
@click.pass_context
def create_storage(
    ctx: click.Context,
    name: str,
    url: str,
    task: str,
    glob: str,
    input_json: str,
    cluster: str,
    max_retries: int,
) -> None:
    """Submit TASK as a job "NAME: KEY" for each new object below URL (a folder,
    s3://bucket/prefix or gs://bucket/prefix) whose key matches --glob."""
    prototype = _task(task, input_json)

    async def go() -> Automation:
        async with client(ctx) as c:  # like a runner, creates the store if there is none
            return await c.automations().storage_event(
                name, url, prototype, glob, cluster, max_retries
            )

    _created(run(go()))


def _switch(ctx: click.Context, name: str, paused: bool) -> Automation:
    async def go() -> Automation:
        await require_store(ctx)
        async with client(ctx) as c:
            api = c.automations()
            return await (api.pause(name) if paused else api.resume(name))

    return run(go())


@automations.command()
@click.argument("name")
@click.pass_context
def pause(ctx: click.Context, name: str) -> None:
    """Stop the automation NAME (or id) from firing until it is resumed."""
    a = _switch(ctx, name, True)
    console.print(f"paused automation {markup(a.name)}")


@automations.command()
@click.argument("name")
@click.pass_context
def resume(ctx: click.Context, name: str) -> None:
    """Let the automation NAME (or id) fire again (a cron schedule skips the ticks it missed;
    a storage trigger fires for the objects written meanwhile)."""
    a = _switch(ctx, name, False)
    console.print(f"resumed automation {markup(a.name)}")


@automations.command("rm")
@click.argument("name")
@click.pass_context
def rm(ctx: click.Context, name: str) -> None:
    """Delete the automation NAME (or id); the jobs it submitted stay."""

    async def go() -> bool:
        await require_store(ctx)
        async with client(ctx) as c:
            return await c.automations().delete(name)

    if not run(go()):
        raise click.ClickException(f"no automation {markup(name)}")
    console.print(f"deleted automation {markup(name)}")


@automations.command("run")
@click.option(
    "--for",
    "for_seconds",
    default=None,
    type=Seconds(0.0),
    help="Evaluate for this many seconds, then exit (default: until SIGINT/SIGTERM).",
)
@click.option("--cluster", default=None, help="Only the automations of this cluster.")
@click.option(
    "--poll-interval",
    default=10.0,
    show_default=True,
    type=Seconds(0.0, inclusive=False),
    help="Seconds between listings of a bucket (or of a folder without inotify).",
)
@click.option(
    "--settle",
    default=2.0,
    show_default=True,
    type=Seconds(0.0),
    help="Seconds a local file must be unchanged before it fires.",
)
@click.option("--no-watch", is_flag=True, help="Poll local folders rather than use inotify.")
@click.pass_context
def run_(
    ctx: click.Context,
    for_seconds: float | None,
    cluster: str | None,
    poll_interval: float,
    settle: float,
    no_watch: bool,
) -> None:
    """Evaluate automations: submit a job for each cron tick and each new object, exactly once
    however many evaluators (runners with automations, other `run` processes) there are."""
    handler = logging.StreamHandler()
    handler.setFormatter(_CleanFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])

    async def go() -> int:
        async with client(ctx) as c:
            evaluator = c.automations().evaluator(
                cluster=cluster, poll_interval=poll_interval, settle=settle, watch=not no_watch
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, evaluator.stop)
            console.print(f"evaluating automations of {markup(c.store.url)}")
            await evaluator.run(for_seconds)
            return evaluator.fired

    console.print(f"stopped: submitted {run(go())} jobs")
