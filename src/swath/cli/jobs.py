"""``swath jobs ls|show|watch|logs|cancel|retry|diagram``."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence

import click
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
)
from rich.table import Column, Table
from rich.tree import Tree

from swath.cli._common import (
    COUNT,
    EXIT_ERROR,
    Seconds,
    client,
    console,
    duration,
    markup,
    require_store,
    run,
    when,
)
from swath.client import FINISHED_JOB_STATES, Job, JobClient
from swath.store.base import JobState, TaskInfo, TaskLogRecord, TaskState
from swath.tasktree import DEFAULT_FAN_OUT, TaskNode
from swath.tasktree import task_tree as aggregate

_COLORS = {
    "COMPLETED": "green",
    "FAILED": "red",
    "FAILED_OPTIONAL": "dark_orange",
    "RUNNING": "yellow",
    "COMPUTED": "yellow",
    "CANCELED": "grey50",
    "SKIPPED": "grey50",
    "QUEUED": "cyan",
}


def _state(state: str) -> str:
    return f"[{_COLORS.get(state, 'white')}]{state}[/]"


@click.group()
def jobs() -> None:
    """Inspect and control jobs."""


@jobs.command("ls")
@click.option("--state", "states", multiple=True, type=click.Choice([s.value for s in JobState]))
@click.option("--name", default=None, help="Only jobs with exactly this name.")
@click.option("--limit", default=20, show_default=True, type=COUNT)
@click.pass_context
def ls(ctx: click.Context, states: tuple[str, ...], name: str | None, limit: int) -> None:
    """List jobs, newest first."""

    async def go() -> list[Job]:
        async with client(ctx, read_only=True) as c:
            return await c.jobs().query(state=list(states) or None, name=name, limit=limit)

    found = run(go())
    table = Table("name", "cluster", "state", "created", "duration", "progress")
    table.columns.insert(0, Column("id", no_wrap=True, min_width=36))
    for job in found:
        progress = ", ".join(f"{p.label} {p.done}/{p.total}" for p in job.progress if p.total)
        table.add_row(
            job.id,
            markup(job.name),
            markup(job.cluster),
            _state(job.state),
            when(job.created_at),
            duration(job.started_at, job.finished_at),
            markup(progress),
        )
    console.print(table)


def task_tree(
    job: Job,
    tasks: list[TaskInfo],
    tracebacks: bool,
    logs: Mapping[str, Sequence[TaskLogRecord]] | None = None,
    *,
    fan_out: int | None = DEFAULT_FAN_OUT,
) -> Tree:
    """The job and its tasks as a tree; every piece of user text is escaped (:func:`markup`).
    ``fan_out`` or more sibling tasks of one class are one line, ``Name x N`` with counts by
    state, their subtasks aggregated below it (:mod:`swath.tasktree`); None shows every task.
    In a finished job, a task that never ended is not "running": a COMPUTED task (its own
    execute done) says that its subtasks did not complete, and shows no duration. ``logs``:
    the last log records of failed tasks, by task id, shown beside their errors."""
    job_over = job.state in FINISHED_JOB_STATES
    tree = Tree(f"[bold]{markup(job.name)}[/] {job.id} {_state(job.state)}")
    finished = {t.id for t in tasks if t.state in (TaskState.COMPLETED, TaskState.FAILED_OPTIONAL)}
    roots = aggregate(tasks, fan_out=max(2, len(tasks) + 1) if fan_out is None else fan_out)
    # (node, where its line goes): depth first, no recursion (a chain may be deep)
    todo: list[tuple[TaskNode, Tree]] = [(node, tree) for node in reversed(roots)]
    while todo:
        node, parent = todo.pop()
        line = _aggregate_line(node, job_over) if node.aggregated else _task_line(node, job_over)
        branch = parent.add(line)
        waiting = [
            t
            for t in node.members
            if t.state == TaskState.QUEUED and all(d in finished for d in t.depends_on)
        ]
        if waiting:
            # ready: runners claim only identifiers they registered, so this is what it needs
            t = waiting[0]
            who = "waits" if not node.aggregated else f"{len(waiting)} of them wait"
            branch.add(
                f"[yellow]{who} for a runner of cluster {markup(t.cluster)} that knows "
                f"{markup(t.name)} {markup(t.version)}[/]"
            )
        for t in node.failures:
            assert t.error is not None
            which = f" [dim]({markup(t.display or t.id)})[/]" if node.aggregated else ""
            branch.add(f"[red]{markup(t.error.type)}: {markup(t.error.message)}[/]{which}")
            if tracebacks:
                branch.add(markup(t.error.traceback.rstrip(), multiline=True))
            last = (logs or {}).get(t.id)
            if last:
                lines = branch.add(f"[dim]last {len(last)} log lines[/]")
                for record in last:
                    lines.add(log_line(record, task=False))
        failed = node.states.get(TaskState.FAILED, 0) + node.states.get(
            TaskState.FAILED_OPTIONAL, 0
        )
        if failed > len(node.failures):
            branch.add(f"[red]... and {failed - len(node.failures)} more failed[/]")
        todo.extend((child, branch) for child in reversed(node.children))
    return tree


def _task_line(node: TaskNode, job_over: bool) -> str:
    t = node.task
    if t.display:
        label = f"{markup(t.display)} [dim]{markup(t.name)} {markup(t.version)}[/]"
    else:
        label = f"{markup(t.name)} [dim]{markup(t.version)}[/]"
    extra = f" retries {t.retry_count}/{t.max_retries}" if t.retry_count else ""
    state = _state(t.state)
    if job_over and t.state == TaskState.COMPUTED:
        state += " [dim](its subtasks did not complete)[/]"
    took = duration(t.started_at, t.finished_at, finished=job_over)
    return f"{label} {state} [dim]{took}{extra}[/]"


def _aggregate_line(node: TaskNode, job_over: bool) -> str:
    label = f"[bold]{markup(node.name)} x {node.count}[/] [dim]{markup(node.version)}[/]"
    states = " ".join(f"{_state(s)} {n}" for s, n in sorted(node.states.items()))
    took = duration(node.started_at, node.ended_at, finished=job_over)
    extra = f" retries {node.retries}" if node.retries else ""
    return f"{label} {states} [dim]{took}{extra}[/]"


@jobs.command()
@click.argument("job_id")
@click.option("--tracebacks/--no-tracebacks", default=True, show_default=True)
@click.option(
    "--expand",
    is_flag=True,
    help=f"One line per task (default: {DEFAULT_FAN_OUT} or more "
    "sibling tasks of one class are one line, Name x N).",
)
@click.pass_context
def show(ctx: click.Context, job_id: str, tracebacks: bool, expand: bool) -> None:
    """Show a job: its state, progress and task tree with errors."""

    async def go() -> tuple[Job, list[TaskInfo], dict[str, list[TaskLogRecord]]]:
        async with client(ctx, read_only=True) as c:
            job, tasks = await c.jobs().find(job_id), await c.jobs().tasks(job_id)
            logs = {}
            for t in tasks:
                if t.error is not None and t.state in (TaskState.FAILED, TaskState.FAILED_OPTIONAL):
                    records = await c.jobs().logs(job_id, task=t.id)
                    logs[t.id] = records[-SHOW_LOG_LINES:]
            return job, tasks, logs

    job, tasks, logs = run(go())
    fan_out = None if expand else DEFAULT_FAN_OUT
    console.print(task_tree(job, tasks, tracebacks, logs, fan_out=fan_out))
    trigger = job.trigger
    if trigger is not None:
        what = trigger.time.isoformat() if trigger.time and trigger.kind == "cron" else ""
        if trigger.kind == "storage":
            what = f"{trigger.url or trigger.key} ({trigger.size} bytes, {trigger.checksum})"
        console.print(f"  fired by automation {markup(trigger.automation)}: {markup(what)}")
    for p in job.progress:
        console.print(f"  {markup(p.label)}: {p.done}/{p.total}")


#: how many of a failed task's last log records ``swath jobs show`` prints beside its error
SHOW_LOG_LINES = 10

_LEVEL_COLORS = {"DEBUG": "dim", "INFO": "cyan", "WARNING": "yellow", "ERROR": "red"}


def log_line(record: TaskLogRecord, *, task: bool = True) -> str:
    """One log record as a line of rich markup: time, level, task (name and short id),
    message and fields; every piece of user text escaped (:func:`markup`)."""
    stamp = dt.datetime.fromtimestamp(record.created_at).strftime("%H:%M:%S.%f")[:-3]
    name = record.levelname
    level = f"[{_LEVEL_COLORS.get(name, 'bold red')}]{markup(name):<8}[/]"
    who = f" [dim]{markup(record.task_name)} {markup(record.task_id[-12:])}[/]" if task else ""
    fields = " ".join(f"{markup(k)}={markup(repr(v))}" for k, v in record.fields.items())
    text = markup(record.message, multiline=True)
    return f"[dim]{stamp}[/] {level}{who} {text}" + (f" [dim]{fields}[/]" if fields else "")


@jobs.command()
@click.argument("job_id")
@click.option("--task", "task_id", default=None, help="Only the records of this task (its id).")
@click.option(
    "--level",
    default=None,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], case_sensitive=False),
    help="Only records at this level or above.",
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new records until the job ends.")
@click.option(
    "--interval",
    default=0.5,
    show_default=True,
    type=Seconds(0.0, inclusive=False),
    help="With --follow: how often to look for new records, seconds.",
)
@click.pass_context
def logs(
    ctx: click.Context,
    job_id: str,
    task_id: str | None,
    level: str | None,
    follow: bool,
    interval: float,
) -> None:
    """Print the log records a job's tasks wrote (context.logger), oldest first."""

    async def go() -> None:
        async with client(ctx, read_only=True) as c:
            job_client = c.jobs()
            after = 0
            while True:
                job = await job_client.find(job_id) if follow else None
                records = await job_client.logs(job_id, task=task_id, level=level, after=after)
                for record in records:
                    console.print(log_line(record, task=task_id is None))
                    after = max(after, record.id)
                if not follow or (job is not None and job.state in FINISHED_JOB_STATES):
                    return
                await asyncio.sleep(interval)

    run(go())


@jobs.command()
@click.argument("job_id")
@click.option(
    "--interval",
    default=0.25,
    show_default=True,
    type=Seconds(0.0, inclusive=False),
    help="Refresh interval, seconds.",
)
@click.pass_context
def watch(ctx: click.Context, job_id: str, interval: float) -> None:
    """Follow a job's progress bars until it finishes."""

    async def go() -> Job:
        async with client(ctx, read_only=True) as c:
            return await follow(c.jobs(), job_id, interval)

    job = run(go())
    console.print(f"job {job.id}: {_state(job.state)}")
    if job.state != JobState.COMPLETED:
        raise SystemExit(EXIT_ERROR)


def progress_bars() -> Progress:
    return Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        console=console,
    )


async def follow(
    job_client: JobClient,
    job_id: str,
    interval: float,
    *,
    hide: tuple[str, ...] = (),
    order: tuple[str, ...] = (),
) -> Job:
    """Show a live progress bar per indicator of the job until it is finished (indicators named
    in ``order`` first, in that order; then by label)."""
    bars = progress_bars()
    ids: dict[str, TaskID] = {}
    with Live(bars, console=console, refresh_per_second=8, transient=False):
        while True:
            job = await job_client.find(job_id, execution_stats=False)
            rank = {label: i for i, label in enumerate(order)}
            for p in sorted(job.progress, key=lambda p: (rank.get(p.label, len(rank)), p.label)):
                if p.label in hide:
                    continue
                if p.label not in ids:
                    ids[p.label] = bars.add_task(markup(p.label), total=max(p.total, 1))
                bars.update(ids[p.label], total=max(p.total, 1), completed=p.done)
            if job.state in FINISHED_JOB_STATES:
                break
            await asyncio.sleep(interval)
    console.print()
    return job


@jobs.command()
@click.argument("job_id")
@click.pass_context
def cancel(ctx: click.Context, job_id: str) -> None:
    """Cancel a job: queued tasks are canceled, running ones finish."""

    async def go() -> int:
        await require_store(ctx)
        async with client(ctx) as c:
            return await c.jobs().cancel(job_id)

    console.print(f"canceled {run(go())} queued tasks of job {markup(job_id)}")


@jobs.command()
@click.argument("job_id")
@click.pass_context
def retry(ctx: click.Context, job_id: str) -> None:
    """Re-queue a job's failed tasks."""

    async def go() -> int:
        await require_store(ctx)
        async with client(ctx) as c:
            return await c.jobs().retry(job_id)

    console.print(f"re-queued {run(go())} failed tasks of job {markup(job_id)}")


@jobs.command()
@click.argument("job_id")
@click.pass_context
def diagram(ctx: click.Context, job_id: str) -> None:
    """Print the job's task graph as Mermaid text."""

    async def go() -> str:
        async with client(ctx, read_only=True) as c:
            return await c.jobs().diagram(job_id)

    click.echo(run(go()), nl=False)
