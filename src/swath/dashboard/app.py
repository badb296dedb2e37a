"""The dashboard: a Starlette app over the public :class:`swath.Client` API and a cache.

HTML pages are rendered on the server by Jinja2 with autoescaping on (every user string, job
names, displays, errors and keys, is escaped by the template engine, never pasted into markup);
the small script in ``static/app.js`` only swaps in fragments the server rendered, asks for
confirmation before an action and follows a job by server-sent events. The JSON API under
``/api`` serves the same data to programs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import jinja2
import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from swath.cache import Backend
from swath.cache._base import CacheAPI
from swath.client import FINISHED_JOB_STATES, Client, Job, _log_level
from swath.dashboard.security import CSRF_COOKIE, Guard, cookie, csrf_ok, csrf_token
from swath.errors import InvalidKeyError, KeyNotFoundError
from swath.store.base import (
    CHANGED_SIGNAL,
    JobState,
    LeaseInfo,
    StoreError,
    TaskInfo,
    TaskState,
    UnknownJobError,
    WorkSignal,
    job_signal,
    report_interval,
)
from swath.tasktree import TaskNode, flatten, task_tree

HERE = Path(__file__).parent
#: jobs per page of the jobs list (``?limit=`` up to MAX_PAGE)
PAGE = 50
MAX_PAGE = 500
#: keys per page of the cache browser (each is stat-ed)
KEYS_PAGE = 200
#: values up to this size are previewed on their page
PREVIEW_BYTES = 64 * 1024
#: download chunk size: memory per download is about one chunk
DOWNLOAD_CHUNK = 1 << 20
#: leases shown on the clusters and runners page
MAX_LEASES = 1000
#: log records per page of a job's logs (the job page shows the first page)
LOGS_PAGE = 200
#: live updates: the store is polled every MIN s after a change, backing off to MAX s
POLL = (0.25, 5.0)
#: live updates: when the store announces changes (PostgreSQL), a job is read again at most
#: this often (a page of jobs, four times less often)
NOTIFIED_GAP = 0.25

LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

STATE_CLASS = {state.value: state.value.lower().replace("_", "-") for state in TaskState}


def _quote(value: object) -> str:
    """A path segment or query value (job ids and keys are user strings)."""
    return quote(str(value), safe="")


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _clock(seconds: float) -> str:
    """A log record's time: the date and the time to the millisecond."""
    millis = int(seconds * 1000) % 1000
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) + f".{millis:03d}"


def _ago(seconds: float) -> str:
    """A duration, roughly: ``3.2 s``, ``4 min``, ``2 h``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _local_time(value: str | None) -> float | None:
    """Unix seconds of an ISO date or time (``2026-05-01``, ``2026-05-01T12:30``; without a
    zone, this machine's local time, as a browser's datetime-local input gives it)."""
    if not value:
        return None
    when = dt.datetime.fromisoformat(value)
    return (when if when.tzinfo else when.astimezone()).timestamp()


def _took(start: float | None, end: float | None) -> str:
    if start is None:
        return "-"
    if end is None:
        return "running"
    seconds = max(0.0, end - start)
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h {m:02d}m {s:02d}s" if hours else f"{m}m {s:02d}s"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _percent(done: int, total: int) -> int:
    return 100 if total <= 0 else max(0, min(100, math.floor(100 * done / total)))


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every {{ value }} is HTML-escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(q=_quote, when=_when, size=_size, clock=_clock, ago=_ago)
    env.globals.update(took=_took, percent=_percent, state_class=STATE_CLASS, name_level=_log_level)
    return env


def _jsonable(value: Any) -> Any:
    return msgspec.to_builtins(value)


def node_json(depth: int, node: TaskNode) -> dict[str, Any]:
    return {
        "depth": depth,
        "id": node.task.id,
        "name": node.name,
        "version": node.version,
        "label": node.label,
        "count": node.count,
        "state": node.state.value,
        "states": {s.value: n for s, n in node.states.items()},
        "started_at": node.started_at,
        "finished_at": node.ended_at,
        "retries": node.retries,
        "errors": [_jsonable(t.error) | {"task_id": t.id} for t in node.failures],
    }


class Dashboard:
    """The app's state: the client, the cache, the options; one per app."""

    def __init__(
        self,
        client: Client,
        cache: Backend | None,
        *,
        read_only: bool,
        poll: tuple[float, float],
    ) -> None:
        self.client = client
        self.cache = cache
        self.read_only = read_only
        self.poll = poll
        self.env = templates()

    # -- rendering -------------------------------------------------------------------------------
    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> Response:
        token, new = csrf_token(request)
        html = self.env.get_template(template).render(
            csrf=token,
            read_only=self.read_only,
            has_cache=self.cache is not None,
            path=request.url.path,
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        if new:
            response.headers.append("set-cookie", cookie(CSRF_COOKIE, token))
        return response

    def fragment(self, name: str, **context: Any) -> str:
        return self.env.get_template(name).render(read_only=self.read_only, **context)

    def error(self, request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=status)
        return self.page(request, "error.html", status=status, message=message)

    # -- jobs ------------------------------------------------------------------------------------
    async def _jobs(self, request: Request) -> tuple[list[Job], dict[str, Any]]:
        q = request.query_params
        states = [s for s in q.getlist("state") if s]
        for s in states:
            if s not in JobState.__members__:
                raise ValueError(f"unknown job state {s!r}")
        name = q.get("name") or None
        try:
            limit = max(1, min(MAX_PAGE, int(q.get("limit", PAGE))))
            before = float(q["before"]) if q.get("before") else None
            since = _local_time(q.get("since"))
            until = _local_time(q.get("until"))
        except ValueError as exc:
            raise ValueError(f"bad paging or time parameter: {exc}") from None
        before_id = q.get("before_id") or None
        keyset: tuple[float, str] | None = None
        if before is not None and before_id is not None:
            keyset = (before, before_id)
        elif before is not None:  # a time only: the jobs created before it
            until = before if until is None else min(until, before)
        # keyset paging: the next page is the jobs after the last one shown, by (created_at,
        # id), so a page costs one indexed query however many jobs there are, and jobs created
        # at the same instant are neither skipped nor shown twice
        jobs = await self.client.jobs().query(
            state=states or None,
            name=name,
            since=since,
            until=until,
            limit=limit + 1,
            before=keyset,
        )
        more = len(jobs) > limit
        jobs = jobs[:limit]
        filters: dict[str, Any] = {
            "state": states,
            "name": name or "",
            "limit": limit,
            "since": q.get("since") or "",
            "until": q.get("until") or "",
        }
        filters["next"] = (jobs[-1].created_at, jobs[-1].id) if more and jobs else None
        return jobs, filters

    async def jobs_page(self, request: Request) -> Response:
        try:
            jobs, filters = await self._jobs(request)
        except ValueError as exc:
            return self.error(request, 400, str(exc))
        params = [("state", s) for s in filters["state"]]
        params += [(k, filters[k]) for k in ("name", "since", "until") if filters[k]]
        params.append(("limit", str(filters["limit"])))
        for key in ("before", "before_id"):
            if request.query_params.get(key):
                params.append((key, request.query_params[key]))
        this_query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in params)
        next_query = None
        if filters["next"] is not None:
            at, last_id = filters["next"]
            params = [p for p in params if p[0] not in ("before", "before_id")]
            params += [("before", repr(at)), ("before_id", last_id)]
            next_query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in params)
        return self.page(
            request,
            "jobs.html",
            jobs=jobs,
            filters=filters,
            this_query=this_query,
            states=[s.value for s in JobState],
            next_query=next_query,
            finished=FINISHED_JOB_STATES,
        )

    async def jobs_events(self, request: Request) -> Response:
        """Server-sent events: ``rows`` (the jobs table's rows, rendered) whenever the jobs of
        this page (same filters) change: new jobs, states, task counts, progress."""
        try:
            await self._jobs(request)
        except ValueError as exc:
            return self.error(request, 400, str(exc))
        return StreamingResponse(
            self._follow_jobs(request),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def _wait(self, changes: WorkSignal, delay: float, not_before: float) -> None:
        """Wait for the next look at the store: a change the store announces (PostgreSQL's
        NOTIFY, :data:`CHANGED_SIGNAL`) or ``delay`` seconds (polling, all a SQLite store
        has), and in any case until ``not_before`` (monotonic), so that a busy store is not
        read more often than that however many changes it announces."""
        await changes.wait(delay)
        if (now := time.monotonic()) < not_before:
            await asyncio.sleep(not_before - now)

    async def _follow_jobs(self, request: Request) -> AsyncIterator[str]:
        low, high = self.poll[0] * 4, self.poll[1]
        delay = low
        seen: Any = None
        changes = self.client.store.work_signal(CHANGED_SIGNAL)
        while True:
            changes.clear()  # before the read: a change announced during it is not lost
            read_at = time.monotonic()
            jobs, _ = await self._jobs(request)
            mark = [(j.id, j.state, j.progress, j.execution_stats) for j in jobs]
            if mark != seen:
                if seen is not None:
                    rows = self.fragment("_job_rows.html", jobs=jobs)
                    yield f"event: rows\ndata: {json.dumps({'rows': rows})}\n\n"
                seen = mark
                delay = low
            else:
                delay = min(high, delay * 1.5)
            # a page of jobs costs a query per job: at most one read a second when told
            await self._wait(changes, delay, read_at + min(low, 4 * NOTIFIED_GAP))

    async def jobs_api(self, request: Request) -> Response:
        try:
            jobs, filters = await self._jobs(request)
        except ValueError as exc:
            return self.error(request, 400, str(exc))
        after = filters["next"]
        return JSONResponse(
            {
                "jobs": _jsonable(jobs),
                "next_before": None if after is None else after[0],
                "next_before_id": None if after is None else after[1],
            }
        )

    async def _job(self, job_id: str) -> tuple[Job, list[TaskInfo]]:
        jobs = self.client.jobs()
        job = await jobs.find(job_id)
        return job, await jobs.tasks(job)

    def _job_context(self, job: Job, tasks: list[TaskInfo]) -> dict[str, Any]:
        rows = flatten(task_tree(tasks))
        counts = {s.value: n for s, n in job.execution_stats.tasks_by_state.items()}
        return {
            "job": job,
            "rows": rows,
            "counts": counts,
            "total": job.execution_stats.total_tasks or len(tasks),
            "finished": job.state in FINISHED_JOB_STATES,
        }

    async def job_page(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        try:
            job, tasks = await self._job(job_id)
        except UnknownJobError:
            return self.error(request, 404, f"no job with id {job_id!r}")
        logs = await self._logs(job.id, None, 0, 0)
        return self.page(request, "job.html", **self._job_context(job, tasks), **logs)

    async def _logs(self, job_id: str, task: str | None, level: int, after: int) -> dict[str, Any]:
        """A page of the job's log records (of one task, from a level, after a record id)."""
        records = await self.client.jobs().logs(
            job_id, task, level, after=after, limit=LOGS_PAGE + 1
        )
        # a page is LOGS_PAGE records; the markers of dropped records come on top
        kept, real = [], 0
        for record in records:
            if not record.dropped:
                if real == LOGS_PAGE:
                    break
                real += 1
            kept.append(record)
        more = len(kept) < len(records)
        records = kept
        last = max((r.id for r in records), default=after)
        return {
            "logs": records,
            "logs_filter": {"task": task or "", "level": level, "after": after},
            "logs_next": last if more else None,
        }

    def _logs_query(self, request: Request) -> tuple[str | None, int, int]:
        q = request.query_params
        task = q.get("task") or None
        try:
            raw = (q.get("level") or "").strip()
            level = int(raw) if raw.isdigit() else _log_level(raw or None)
            after = max(0, int(q.get("after") or 0))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad log filter: {exc}") from None
        return task, level, after

    async def _job_logs(self, request: Request) -> tuple[Job, dict[str, Any]] | Response:
        """The job of ``/jobs/ID/logs`` and a page of its records, or the error page (400 for a
        bad query, 404 for an unknown job)."""
        job_id = request.path_params["job_id"]
        try:
            task, level, after = self._logs_query(request)
            job = await self.client.jobs().find(job_id, execution_stats=False)
        except ValueError as exc:
            return self.error(request, 400, str(exc))
        except UnknownJobError:
            return self.error(request, 404, f"no job with id {job_id!r}")
        return job, await self._logs(job.id, task, level, after)

    async def logs_page(self, request: Request) -> Response:
        """``/jobs/ID/logs?task=&level=&after=``: the job's log records, a page at a time."""
        found = await self._job_logs(request)
        if isinstance(found, Response):
            return found
        job, logs = found
        return self.page(request, "logs.html", job=job, levels=LEVELS, **logs)

    async def logs_api(self, request: Request) -> Response:
        found = await self._job_logs(request)
        if isinstance(found, Response):
            return found
        _, logs = found
        return JSONResponse(
            {
                "logs": [_jsonable(r) | {"levelname": r.levelname} for r in logs["logs"]],
                "next_after": logs["logs_next"],
            }
        )

    async def job_api(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        try:
            job, tasks = await self._job(job_id)
        except UnknownJobError:
            return self.error(request, 404, f"no job with id {job_id!r}")
        rows = flatten(task_tree(tasks))
        return JSONResponse(
            {"job": _jsonable(job), "tasks": [node_json(d, n) for d, n in rows]},
        )

    async def job_events(self, request: Request) -> Response:
        """Server-sent events: ``update`` (the job's summary and task tree as HTML the server
        rendered) whenever the job changes, then ``end`` once it is finished."""
        job_id = request.path_params["job_id"]
        try:
            await self.client.jobs().find(job_id)
        except UnknownJobError:
            return self.error(request, 404, f"no job with id {job_id!r}")
        return StreamingResponse(
            self._follow(job_id),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def _follow(self, job_id: str) -> AsyncIterator[str]:
        low, high = self.poll
        delay = low
        seen: Any = None
        sent = time.monotonic()
        changes = self.client.store.work_signal(job_signal(job_id))
        while True:
            changes.clear()  # before the read: a change announced during it is not lost
            read_at = time.monotonic()
            job = await self.client.jobs().find(job_id)
            mark = (job.state, job.progress, job.execution_stats, job.finished_at)
            gap = min(low, NOTIFIED_GAP)
            if mark != seen:
                seen = mark
                tasks = await self.client.jobs().tasks(job)
                context = self._job_context(job, tasks)
                logs = await self._logs(job.id, None, 0, 0)
                data = {
                    "state": job.state.value,
                    "summary": self.fragment("_summary.html", **context),
                    "tree": self.fragment("_tree.html", **context),
                    "logs": self.fragment("_logs.html", job=job, **logs),
                }
                yield f"event: update\ndata: {json.dumps(data)}\n\n"
                # a large job costs a while to read: read it no more than a third of the time
                gap = max(gap, 2 * (time.monotonic() - read_at))
                delay = low
                sent = time.monotonic()
            else:
                delay = min(high, delay * 1.5)
                if time.monotonic() - sent >= 15:  # a comment keeps proxies from closing it
                    sent = time.monotonic()
                    yield ": idle\n\n"
            if job.state in FINISHED_JOB_STATES:
                yield "event: end\ndata: {}\n\n"
                return
            await self._wait(changes, delay, read_at + gap)

    async def job_action(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        action = request.path_params["action"]
        if action not in ("cancel", "retry"):
            return self.error(request, 404, "not found")
        if self.read_only:
            return self.error(request, 403, "this dashboard is read-only")
        body = await request.body()
        if len(body) > 4096:
            return self.error(request, 413, "request too large")
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        if not csrf_ok(request, form):
            return self.error(
                request, 403, "CSRF check failed: reload the page and confirm the action again"
            )
        jobs = self.client.jobs()
        try:
            n = await (jobs.cancel(job_id) if action == "cancel" else jobs.retry(job_id))
        except (UnknownJobError, StoreError) as exc:
            return self.error(request, 404 if isinstance(exc, LookupError) else 409, str(exc))
        if request.headers.get("accept", "").startswith("application/json"):
            return JSONResponse({"action": action, "tasks": n})
        return RedirectResponse(f"/jobs/{_quote(job_id)}?done={action}&n={n}", status_code=303)

    # -- clusters --------------------------------------------------------------------------------
    async def _runners(self) -> dict[str, Any]:
        """The runners (as they reported themselves) and the tasks they hold (from the tasks'
        leases), each runner with its leases; leases of runners that do not report themselves
        (an older swath, or a row expired) are grouped under their runner id all the same."""
        now = time.time()
        runners = await self.client.clusters().runners()
        leases = await self.client.clusters().leases(MAX_LEASES + 1)
        more = len(leases) > MAX_LEASES
        leases = leases[:MAX_LEASES]
        held: dict[str, list[LeaseInfo]] = {}
        for lease in leases:
            held.setdefault(lease.runner_id, []).append(lease)
        rows = []
        for r in runners:
            silent = max(0.0, now - r.last_heartbeat)
            rows.append(
                {
                    "runner": r,
                    "silent": silent,
                    # a report comes every lease / 3: three missed (a lease) mean gone
                    "alive": silent <= 3 * report_interval(r.lease),
                    "leases": held.pop(r.id, []),
                }
            )
        unreported = sorted(held.items())
        return {"runners": rows, "unreported": unreported, "more_leases": more, "now": now}

    async def clusters_page(self, request: Request) -> Response:
        clusters = await self.client.clusters().all()
        running = await self.client.jobs().query(state=[JobState.RUNNING], limit=MAX_PAGE)
        per_cluster: dict[str, int] = {}
        for job in running:
            per_cluster[job.cluster] = per_cluster.get(job.cluster, 0) + 1
        runners = await self._runners()
        alive: dict[str, int] = {}
        for row in runners["runners"]:
            if row["alive"]:
                alive[row["runner"].cluster] = alive.get(row["runner"].cluster, 0) + 1
        return self.page(
            request,
            "clusters.html",
            clusters=clusters,
            running=per_cluster,
            alive=alive,
            max_leases=MAX_LEASES,
            **runners,
        )

    async def clusters_api(self, request: Request) -> Response:
        return JSONResponse({"clusters": _jsonable(await self.client.clusters().all())})

    async def runners_api(self, request: Request) -> Response:
        found = await self._runners()
        runners = [
            _jsonable(row["runner"]) | {"alive": row["alive"], "leases": _jsonable(row["leases"])}
            for row in found["runners"]
        ]
        unreported = [_jsonable(lease) for _, leases in found["unreported"] for lease in leases]
        return JSONResponse(
            {"runners": runners, "unreported_leases": unreported, "more": found["more_leases"]}
        )

    # -- cache -----------------------------------------------------------------------------------
    def _group(self, name: str) -> CacheAPI:
        assert self.cache is not None
        return self.cache.group(name) if name else self.cache  # InvalidKeyError: a bad name

    async def _listing(self, request: Request) -> dict[str, Any]:
        group = request.query_params.get("group", "")
        try:
            offset = max(0, int(request.query_params.get("offset", 0)))
        except ValueError:
            raise InvalidKeyError("offset is a number") from None
        where = self._group(group)
        groups = sorted([name async for name in where.groups()])
        keys: list[dict[str, Any]] = []
        more = False
        i = 0
        async for key in where:
            if i >= offset + KEYS_PAGE:
                more = True
                break
            if i >= offset:
                try:
                    st = await where.stat(key)
                except KeyNotFoundError:  # deleted while listed
                    continue
                full = f"{group}/{key}" if group else key
                keys.append({"key": key, "path": full, "size": st.size, "checksum": st.checksum})
            i += 1
        parents = []
        if group:
            parts = group.split("/")
            parents = [("/".join(parts[: i + 1]), part) for i, part in enumerate(parts)]
        return {
            "group": group,
            "groups": groups,
            "keys": keys,
            "offset": offset,
            "next_offset": offset + KEYS_PAGE if more else None,
            "parents": parents,
        }

    async def cache_page(self, request: Request) -> Response:
        if self.cache is None:
            return self.error(request, 404, "no cache: start the dashboard with --cache URL")
        try:
            listing = await self._listing(request)
        except InvalidKeyError as exc:
            return self.error(request, 400, str(exc))
        return self.page(request, "cache.html", url=self.cache.url(), **listing)

    async def cache_api(self, request: Request) -> Response:
        if self.cache is None:
            return self.error(request, 404, "no cache: start the dashboard with --cache URL")
        try:
            return JSONResponse(await self._listing(request))
        except InvalidKeyError as exc:
            return self.error(request, 400, str(exc))

    async def value_page(self, request: Request) -> Response:
        if self.cache is None:
            return self.error(request, 404, "no cache: start the dashboard with --cache URL")
        key = request.query_params.get("key", "")
        try:
            st = await self.cache.stat(key)  # the cache's own key validation: never outside
        except InvalidKeyError as exc:
            return self.error(request, 400, str(exc))
        except KeyNotFoundError:
            return self.error(request, 404, f"no value under {key!r}")
        preview: str | None = None
        binary = False
        if st.size <= PREVIEW_BYTES:
            data = await self.cache.get_range(key, 0, PREVIEW_BYTES)
            try:
                preview = data.decode("utf-8")
            except UnicodeDecodeError:
                binary = True
                preview = _hexdump(data[:4096])
        group = key.rpartition("/")[0]
        return self.page(
            request,
            "value.html",
            key=key,
            group=group,
            stat=st,
            preview=preview,
            binary=binary,
            limit=PREVIEW_BYTES,
        )

    async def download(self, request: Request) -> Response:
        if self.cache is None:
            return self.error(request, 404, "no cache: start the dashboard with --cache URL")
        key = request.query_params.get("key", "")
        try:
            st = await self.cache.stat(key)
        except InvalidKeyError as exc:
            return self.error(request, 400, str(exc))
        except KeyNotFoundError:
            return self.error(request, 404, f"no value under {key!r}")
        name = key.rsplit("/", 1)[-1]
        ascii_name = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:100]
        return StreamingResponse(
            self.cache.stream(key, chunk_size=DOWNLOAD_CHUNK),  # one chunk in memory at a time
            media_type="application/octet-stream",
            headers={
                "content-length": str(st.size),
                "content-disposition": (
                    f'attachment; filename="{ascii_name or "value"}"; '
                    f"filename*=UTF-8''{_quote(name)}"
                ),
                "x-checksum": st.checksum,
            },
        )


def _hexdump(data: bytes) -> str:
    lines = []
    for offset in range(0, len(data), 16):
        row = data[offset : offset + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        lines.append(f"{offset:08x}  {row.hex(' '):<47}  {text}")
    return "\n".join(lines)


def create_app(
    client: Client,
    cache: Backend | None = None,
    *,
    read_only: bool = False,
    token: str | None = None,
    poll: tuple[float, float] = POLL,
) -> Starlette:
    """The dashboard over ``client`` (its store is opened and closed with the app) and, when
    given, ``cache`` (opened and closed with the app; pass one opened ``read_only``).

    ``token``: None serves loopback peers only (with a loopback ``Host`` header); a string
    serves anyone who presents it (see :mod:`swath.dashboard.security`). ``read_only`` hides
    and refuses the cancel and retry actions."""
    dash = Dashboard(client, cache, read_only=read_only, poll=poll)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[Mapping[str, Any]]:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(client)
            if cache is not None and not cache.is_open:
                await stack.enter_async_context(cache)
            yield {}

    async def home(request: Request) -> Response:
        return RedirectResponse("/jobs", status_code=303)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [
        Route("/", home),
        Route("/healthz", health),
        Route("/jobs", dash.jobs_page),
        Route("/events/jobs", dash.jobs_events),
        Route("/jobs/{job_id}", dash.job_page),
        Route("/jobs/{job_id}/events", dash.job_events),
        Route("/jobs/{job_id}/logs", dash.logs_page),
        Route("/jobs/{job_id}/{action:str}", dash.job_action, methods=["POST"]),
        Route("/clusters", dash.clusters_page),
        Route("/cache", dash.cache_page),
        Route("/cache/value", dash.value_page),
        Route("/cache/download", dash.download),
        Route("/api/jobs", dash.jobs_api),
        Route("/api/jobs/{job_id}", dash.job_api),
        Route("/api/jobs/{job_id}/logs", dash.logs_api),
        Route("/api/clusters", dash.clusters_api),
        Route("/api/runners", dash.runners_api),
        Route("/api/cache", dash.cache_api),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return dash.error(request, 404, "not found")

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(Guard, token=token)],
        exception_handlers={404: not_found},
    )
    app.state.dashboard = dash
    return app
