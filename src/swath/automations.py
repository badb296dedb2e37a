"""Automations: cron schedules and storage-event triggers that submit jobs (docs/automations.md).

An automation is stored in the job store with its task serialized (as ``jobs().submit`` stores a
root task), so whoever evaluates it needs no task code. Evaluating is done by an
:class:`AutomationEvaluator`: inside a runner made with ``automations=True``, or on its own
(``swath automations run``). Any number of evaluators, in any number of processes, may evaluate
the same automations: each cron tick and each stored object submits exactly one job, because a
job is submitted only together with a firing row whose primary key is (automation, tick or
object), in one store transaction (:meth:`swath.store.base.JobStore.fire_automation`).

* **Cron** (``cron``): a 5-field expression, or 6 fields with seconds first, in a time zone
  (croniter computes the ticks). The automation's cursor is the last tick decided; a tick after
  it that is due fires, and ``catch_up`` says what happens to ticks missed while nothing
  evaluated: ``"latest"`` fires the most recent one only, ``"all"`` fires each, ``"none"`` fires
  none (a tick fires only while it is less than a minute late and its next tick is not due).
* **Storage events** (``storage_event``): a new object below a local folder, ``s3://bucket/prefix``
  or ``gs://bucket/prefix`` whose key matches ``glob``. S3 and GCS are listed page by page (one
  page in memory); the cursor is a high-water mark on the objects' modification times (by the
  storage's clock), so each listing checks only objects written since (less a lag for uploads in
  progress) against the firing rows. A local folder is watched with inotify (``swath[watch]``,
  watchfiles) and rescanned now and then, or polled; a file fires once it has not changed for
  ``settle`` seconds (writers outside swath write files in place), and hidden files (``.name``,
  where careful writers keep their temporaries) never fire. An object replaced by a new version
  fires again.

The job an automation submits is named after it (``every-2s``, ``landing: scene.tif``) and
records what fired it (``job.trigger``); its tasks read it as ``context.trigger``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import datetime as dt
import fnmatch
import itertools
import logging
import math
import os
import stat as stat_mod
import time
import zoneinfo
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

import anyio.to_thread
import msgspec

from swath._validate import check_text, storable_text, text_problem
from swath.client import needs_event_loop
from swath.context import check_max_retries, task_timeout
from swath.store.base import (
    DEFAULT_CLUSTER,
    AutomationInfo,
    Firing,
    JobStore,
    NewTask,
    Trigger,
    UnknownAutomationError,
    new_id,
)
from swath.task import Task, encode_input

if TYPE_CHECKING:
    from swath.cache._base import StoredObject
    from swath.client import Client, Cluster

log = logging.getLogger("swath.automations")

Automation = AutomationInfo
CatchUp = Literal["latest", "all", "none"]
CATCH_UP_POLICIES: tuple[str, ...] = get_args(CatchUp)

#: the longest automation name
MAX_NAME = 200
#: a tick that is later than this (or than its next tick) counts as missed (``catch_up``)
MISFIRE_GRACE = 60.0
#: the most ticks one firing transaction catches up (``catch_up="all"``); the rest follow at once
MAX_TICKS_PER_FIRING = 500
#: firings per transaction, for storage events
FIRE_BATCH = 100
#: objects per page of a listing (S3 and GCS: one request each)
PAGE_SIZE = 1000
#: how long an object may take to show up in a listing after its modification time: an S3
#: multipart upload carries the time it began; GCS and local files the time they were finished
#: (a local scan's own duration is added to every lag)
LAG = {"s3": 3600.0, "gs": 60.0, "file": 60.0}
#: a new storage trigger's cursor starts this much before its creation: the storages' clocks
#: and timestamps (S3's have whole seconds) must not hide an object written right after it
START_SLACK = 2.0
#: concurrent checksum reads of one storage trigger (an S3 HeadObject, or a local file)
CHECKSUM_CONCURRENCY = 8


# -- validation -----------------------------------------------------------------------------------
def check_name(name: object) -> str:
    """An automation name: 1-200 characters of storable text without line breaks or leading
    and trailing spaces."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise ValueError(f"an automation name is 1-{MAX_NAME} characters, not {name!r}")
    check_text(name, "an automation name")
    if name != name.strip() or any(c in name for c in "\r\n\t") or not name.isprintable():
        raise ValueError(
            f"invalid automation name {name!r}: no control characters, line breaks, or leading "
            "or trailing spaces"
        )
    return name


class CronSchedule:
    """A cron expression in a time zone: ``CronSchedule("*/5 * * * *", "Europe/Berlin")``.

    Five fields (minute, hour, day of month, month, day of week), or six with a leading seconds
    field (``"*/2 * * * * *"``: every two seconds), or an alias such as ``@hourly``. Ticks are
    computed in the time zone (``"UTC"`` unless given; any IANA name), so ``0 9 * * 1-5`` is
    9:00 local time across daylight-saving changes. ``ValueError`` for anything else."""

    def __init__(self, expression: str, timezone: str = "UTC") -> None:
        from croniter import croniter

        if not isinstance(expression, str) or not expression.strip():
            raise ValueError(f"a cron schedule is a non-empty str, not {expression!r}")
        fields = expression.split()
        alias = len(fields) == 1 and fields[0].startswith("@")
        if not alias and len(fields) not in (5, 6):
            raise ValueError(
                f"invalid cron schedule {expression!r}: 5 fields (minute hour day month weekday) "
                "or 6 with seconds first"
            )
        self.expression = " ".join(fields)
        self.seconds = len(fields) == 6
        if not croniter.is_valid(self.expression, second_at_beginning=self.seconds):
            raise ValueError(f"invalid cron schedule {expression!r}")
        try:
            self.zone = zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValueError(f"unknown time zone {timezone!r} (an IANA name: 'UTC')") from None
        self.timezone = timezone
        self._croniter = croniter

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, {self.timezone!r})"

    def _iter(self, start: float) -> Any:
        return self._croniter(self.expression, self.when(start), second_at_beginning=self.seconds)

    def when(self, tick: float) -> dt.datetime:
        """A tick (Unix seconds) as a time-zone aware datetime in the schedule's zone."""
        return dt.datetime.fromtimestamp(tick, self.zone)

    def next_after(self, t: float) -> float:
        """The first tick strictly after ``t`` (Unix seconds)."""
        return float(self._iter(t).get_next(dt.datetime).timestamp())

    def ticks(self, after: float, until: float, limit: int) -> list[float]:
        """The ticks in ``(after, until]``, oldest first, at most ``limit``."""
        found: list[float] = []
        it = self._iter(after)
        while len(found) < limit:
            tick = float(it.get_next(dt.datetime).timestamp())
            if tick > until:
                break
            found.append(tick)
        return found

    def latest(self, after: float, until: float) -> float | None:
        """The last tick in ``(after, until]``, if any."""
        tick = float(self._iter(math.floor(until) + 1).get_prev(dt.datetime).timestamp())
        if tick > until:  # a schedule finer than a second cannot be, but be exact
            tick = float(self._iter(tick).get_prev(dt.datetime).timestamp())
        return tick if after < tick <= until else None


def _parse_location(url: str) -> tuple[str, str, str]:
    """``(scheme, bucket, prefix)`` of a storage trigger's URL: ``("file", "", "/abs/path")``,
    ``("s3", bucket, prefix)`` or ``("gs", bucket, prefix)``; ``ValueError`` otherwise."""
    from swath._urls import parse_url, redact

    if not isinstance(url, str) or not url:
        raise ValueError(f"a storage trigger's url is a folder, s3:// or gs:// URL, not {url!r}")
    check_text(url, "a storage trigger's url")
    if "://" not in url:
        return "file", "", os.path.abspath(url)
    parts = parse_url(url)
    if parts.user is not None or parts.query:
        raise ValueError(
            f"a storage trigger's url carries no credentials or options: {redact(url)!r}"
        )
    if parts.scheme == "file":
        if parts.hostspec not in ("", "localhost"):
            raise ValueError(f"file URLs name a local path, not a host: {url!r}")
        return "file", "", os.path.abspath("/" + parts.path)
    if parts.scheme in ("s3", "gs", "gcs"):
        if not parts.hostspec:
            raise ValueError(f"a {parts.scheme} URL names a bucket: {parts.scheme}://bucket/prefix")
        scheme = "s3" if parts.scheme == "s3" else "gs"
        return scheme, parts.hostspec, parts.path.strip("/")
    raise ValueError(
        f"unknown storage URL scheme {parts.scheme!r}: a folder, s3://bucket/prefix or "
        "gs://bucket/prefix"
    )


def canonical_url(url: str) -> str:
    """How a storage trigger's URL is stored: an absolute path for a folder, else
    ``s3://bucket/prefix`` or ``gs://bucket/prefix``."""
    scheme, bucket, prefix = _parse_location(url)
    if scheme == "file":
        return prefix
    return f"{scheme}://{bucket}/{prefix}"


# -- the client -----------------------------------------------------------------------------------
def _automation_key(automation: Automation | str) -> str:
    return automation.id if isinstance(automation, AutomationInfo) else str(automation)


def _slug(cluster: Cluster | str | None) -> str:
    if cluster is None:
        return DEFAULT_CLUSTER
    return cluster if isinstance(cluster, str) else cluster.slug


def _prototype(task: Task, timeout: float | None) -> tuple[str, str, bytes, float | None]:
    data = encode_input(task)  # TypeError for non-tasks and unserializable inputs
    name, version = type(task).identifier()
    return name, version, data, task_timeout(task, timeout)


class AutomationClient:
    """``client.automations()``: create, list, pause, resume and delete automations, and
    evaluate them (:meth:`evaluator`)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @needs_event_loop
    async def cron(
        self,
        name: str,
        schedule: str,
        task: Task,
        cluster: Cluster | str | None = DEFAULT_CLUSTER,
        max_retries: int = 0,
        *,
        timezone: str = "UTC",
        catch_up: CatchUp = "latest",
        timeout: float | None = None,  # noqa: ASYNC109 (a time limit for the task, not this call)
    ) -> Automation:
        """A cron schedule that submits ``task`` as a job named ``name`` at each tick.

        ``schedule``: 5 fields, or 6 with a leading seconds field (``"*/2 * * * * *"``), in
        ``timezone`` (an IANA name). ``catch_up`` is what happens to ticks missed while no
        evaluator ran: ``"latest"`` (fire the most recent one), ``"all"`` (fire each) or
        ``"none"``. The first tick is the first after now. ``ValueError`` for a bad schedule,
        time zone, policy or name (or one taken), ``UnknownClusterError``, ``TypeError`` for a
        task that cannot be serialized."""
        check_name(name)
        parsed = CronSchedule(schedule, timezone)
        if catch_up not in CATCH_UP_POLICIES:
            raise ValueError(f"catch_up must be one of {CATCH_UP_POLICIES}, not {catch_up!r}")
        check_max_retries(max_retries)
        task_name, version, data, limit = _prototype(task, timeout)
        now = time.time()
        automation = AutomationInfo(
            id=new_id(), name=name, kind="cron", cluster=_slug(cluster), task_name=task_name,
            task_version=version, input=data, max_retries=max_retries, timeout=limit,
            schedule=parsed.expression, timezone=timezone, catch_up=catch_up, cursor=now,
            created_at=now,
        )  # fmt: skip
        store = await self._client._ensure_open()
        return await store.create_automation(automation)

    @needs_event_loop
    async def storage_event(
        self,
        name: str,
        url: str,
        task: Task,
        glob: str = "*",
        cluster: Cluster | str | None = DEFAULT_CLUSTER,
        max_retries: int = 0,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> Automation:
        """A storage trigger that submits ``task`` as a job named ``"<name>: <key>"`` for each
        new object below ``url`` whose key (its name below ``url``, ``/``-separated) matches
        ``glob`` (``fnmatch`` rules: ``*`` matches any characters, ``/`` included).

        ``url``: a local folder (a path or ``file:///path``), ``s3://bucket/prefix`` or
        ``gs://bucket/prefix``. Objects written after the automation was created fire; one
        replaced by a new version fires again. ``ValueError`` for a bad URL or name (or one
        taken), ``UnknownClusterError``, ``TypeError`` for a task that cannot be serialized."""
        check_name(name)
        location = canonical_url(url)
        if not isinstance(glob, str) or not glob:
            raise ValueError(f"glob is a non-empty pattern, not {glob!r}")
        check_text(glob, "a glob pattern")
        check_max_retries(max_retries)
        task_name, version, data, limit = _prototype(task, timeout)
        now = time.time()
        automation = AutomationInfo(
            id=new_id(), name=name, kind="storage", cluster=_slug(cluster), task_name=task_name,
            task_version=version, input=data, max_retries=max_retries, timeout=limit,
            url=location, glob=glob, cursor=now - START_SLACK, created_at=now,
        )  # fmt: skip
        store = await self._client._ensure_open()
        return await store.create_automation(automation)

    @needs_event_loop
    async def all(self) -> list[Automation]:
        """Every automation, by name."""
        store = await self._client._ensure_open()
        return await store.list_automations()

    @needs_event_loop
    async def find(self, automation: Automation | str) -> Automation:
        """The automation with this id or name, as stored now; ``UnknownAutomationError`` if
        there is none."""
        store = await self._client._ensure_open()
        key = _automation_key(automation)
        found = await store.get_automation(key)
        if found is None:
            raise UnknownAutomationError(f"no automation with id or name {key!r}")
        return found

    @needs_event_loop
    async def pause(self, automation: Automation | str) -> Automation:
        """Stop an automation from firing until :meth:`resume`."""
        return await self._pause(automation, True)

    @needs_event_loop
    async def resume(self, automation: Automation | str) -> Automation:
        """Let a paused automation fire again. A cron schedule skips the ticks of the pause; a
        storage trigger fires for the objects written during it."""
        return await self._pause(automation, False)

    async def _pause(self, automation: Automation | str, paused: bool) -> Automation:
        found = await self.find(automation)
        store = await self._client._ensure_open()
        changed = await store.pause_automation(found.id, paused)
        if changed is None:
            raise UnknownAutomationError(f"no automation with id or name {found.name!r}")
        return changed

    @needs_event_loop
    async def delete(self, automation: Automation | str) -> bool:
        """Delete an automation (the jobs it submitted stay); False if there was none."""
        store = await self._client._ensure_open()
        found = await store.get_automation(_automation_key(automation))
        return found is not None and await store.delete_automation(found.id)

    def evaluator(
        self,
        *,
        cluster: Cluster | str | None = None,
        poll_interval: float = 10.0,
        settle: float = 2.0,
        refresh: float = 5.0,
        watch: bool = True,
    ) -> AutomationEvaluator:
        """An evaluator of this client's automations (of ``cluster`` only, when given); see
        :class:`AutomationEvaluator` for the options. ``await evaluator.run(for_seconds)``."""
        return AutomationEvaluator(
            self._client.store,
            cluster=None if cluster is None else _slug(cluster),
            poll_interval=poll_interval,
            settle=settle,
            refresh=refresh,
            watch=watch,
            opener=self._client._ensure_open,
        )


# -- storage --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class _Object:
    """An object a storage trigger considers: ``settles_at`` is when a local file counts as
    written (its last change plus ``settle``); cloud objects are whole when listed (0)."""

    name: str
    size: int
    modified: float
    version: str
    checksum: str | None = None
    settles_at: float = 0.0

    @property
    def firing_key(self) -> str:
        return f"{self.version} {self.name}"


class _Source(abc.ABC):
    """Where a storage trigger looks: a listing page by page, checksums, and (local folders)
    changes as they happen."""

    lag: float

    async def __aenter__(self) -> _Source:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    @abc.abstractmethod
    def objects(self) -> AsyncIterator[list[_Object]]:
        """Every object, one page at a time."""

    @abc.abstractmethod
    def url_of(self, name: str) -> str:
        """Where a task reads the object ``name``."""

    async def checksum(self, obj: _Object) -> _Object | None:
        """``obj`` with its checksum, if the storage has one; None if it changed or vanished
        meanwhile (it is looked at again later)."""
        return obj


class _CloudPrefix(_Source):
    """A prefix of an S3 or GCS bucket, listed through the cache backend of that storage (its
    client, credentials, retries and deadlines)."""

    def __init__(self, scheme: str, bucket: str, prefix: str) -> None:
        self.scheme = scheme
        self.lag = LAG[scheme]
        self._stack = contextlib.AsyncExitStack()
        if scheme == "s3":
            from swath.cache.s3 import AmazonS3Cache

            self.backend: Any = AmazonS3Cache(bucket, prefix=prefix, read_only=True)
        else:
            from swath.cache.gcs import GoogleStorageCache

            self.backend = GoogleStorageCache(bucket, prefix=prefix, read_only=True)

    async def __aenter__(self) -> _CloudPrefix:
        await self._stack.enter_async_context(self.backend)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    async def objects(self) -> AsyncIterator[list[_Object]]:
        page: list[StoredObject]
        async for page in self.backend._objects(PAGE_SIZE):
            yield [
                _Object(o.name, o.size, o.modified, o.version, o.checksum)
                for o in page
                if _storable(o.name)
            ]

    def url_of(self, name: str) -> str:
        return f"{self.scheme}://{self.backend.bucket}/{self.backend._root}{name}"

    async def checksum(self, obj: _Object) -> _Object | None:
        if obj.checksum is not None or self.scheme != "s3":
            return obj
        checksum = await self.backend._recorded_checksum(obj.name)
        return obj if checksum is None else dataclasses.replace(obj, checksum=checksum)


class _LocalFolder(_Source):
    """A local folder, files only (symbolic links and hidden names are never followed or
    fired). A file's time is its ``ctime`` (a rename or a write sets it; nothing sets it
    back), its version its inode, size and modification time."""

    def __init__(self, root: str, settle: float) -> None:
        self.root = root
        self.settle = settle
        self.lag = LAG["file"]

    def url_of(self, name: str) -> str:
        return os.path.join(self.root, *name.split("/"))

    def _object(self, name: str, st: os.stat_result) -> _Object:
        version = f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}"
        settles = st.st_mtime + self.settle
        return _Object(name, st.st_size, st.st_ctime, version, None, settles)

    def _walk(self, below: str = "") -> Iterator[_Object]:
        os.stat(self.root)  # FileNotFoundError for a missing folder: the watcher retries
        stack = [below]
        while stack:
            folder = stack.pop()
            try:
                entries = os.scandir(os.path.join(self.root, folder) if folder else self.root)
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                continue
            with entries:
                for entry in entries:
                    if entry.name.startswith(".") or not _storable(entry.name):
                        continue
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(f"{folder}{entry.name}/")
                        elif entry.is_file(follow_symlinks=False):
                            yield self._object(
                                folder + entry.name, entry.stat(follow_symlinks=False)
                            )
                    except OSError:
                        continue

    async def objects(self, below: str = "") -> AsyncIterator[list[_Object]]:
        """Every file (below the subfolder ``below``, ``/``-terminated, when given)."""
        walk = self._walk(below)
        while True:
            page = await anyio.to_thread.run_sync(lambda: list(itertools.islice(walk, PAGE_SIZE)))
            if not page:
                return
            yield page

    def stat(self, path: str) -> _Object | str | None:
        """The file at ``path`` (absolute, below the root); for a folder its key prefix
        (``"sub/"``); None if gone, hidden, neither, or outside the root."""
        rel = os.path.relpath(path, self.root)
        parts = rel.split(os.sep)
        if rel.startswith("..") or any(p.startswith(".") or not _storable(p) for p in parts):
            return None
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if stat_mod.S_ISDIR(st.st_mode):
            return "" if rel == "." else "/".join(parts) + "/"
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        return self._object("/".join(parts), st)

    async def checksum(self, obj: _Object) -> _Object | None:
        return await anyio.to_thread.run_sync(self._checksum, obj)

    def _checksum(self, obj: _Object) -> _Object | None:
        from swath.cache import _checksum

        path = self.url_of(obj.name)
        crc = 0
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                while chunk := f.read(1 << 20):
                    crc = _checksum.update(crc, chunk)
            after = self.stat(path)
        except OSError:
            return None
        if not isinstance(after, _Object) or after.version != obj.version:
            return None  # written to meanwhile: looked at again once settled
        return dataclasses.replace(obj, checksum=_checksum.render(crc))


def _stat_all(source: _LocalFolder, paths: set[str]) -> list[_Object | str | None]:
    return [source.stat(path) for path in paths]


def _storable(name: str) -> bool:
    """Whether every store can hold ``name`` as text (no NUL, no lone surrogate: a file name
    that is not UTF-8 decodes to those)."""
    return text_problem(name) is None


def open_source(url: str, settle: float = 2.0) -> _Source:
    """The source a storage trigger on ``url`` (as stored) lists."""
    scheme, bucket, prefix = _parse_location(url)
    if scheme == "file":
        return _LocalFolder(prefix, settle)
    return _CloudPrefix(scheme, bucket, prefix)


# -- the evaluator --------------------------------------------------------------------------------
class AutomationEvaluator:
    """Fires the automations of a store (those of ``cluster`` only, when given) until stopped.

    ``poll_interval``: seconds between listings of an S3 or GCS prefix, or of a local folder
    without inotify; ``settle``: seconds a local file must be unchanged before it fires;
    ``refresh``: seconds between looks at which automations exist (new, paused, deleted);
    ``watch``: watch local folders with inotify (``swath[watch]``) and rescan them every
    ``max(60, poll_interval)`` seconds only, rather than polling them.

    ``await run(for_seconds=None)`` runs until :meth:`stop`, cancellation, or for that long.
    Many evaluators may run at once, in one process or many: each tick or object still fires
    once. ``fired`` counts the jobs this evaluator submitted."""

    def __init__(
        self,
        store: JobStore,
        *,
        cluster: str | None = None,
        poll_interval: float = 10.0,
        settle: float = 2.0,
        refresh: float = 5.0,
        watch: bool = True,
        opener: Callable[[], Any] | None = None,
    ) -> None:
        for what, value in (("poll_interval", poll_interval), ("refresh", refresh)):
            if not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ValueError(f"{what} must be a positive number of seconds, not {value!r}")
        if not (isinstance(settle, int | float) and 0 <= settle < math.inf):
            raise ValueError(f"settle must be a number of seconds >= 0, not {settle!r}")
        self.store = store
        self.cluster = cluster
        self.poll_interval = float(poll_interval)
        self.settle = float(settle)
        self.refresh = float(refresh)
        self.watch = watch
        self.fired = 0
        self._opener = opener
        self._stop: asyncio.Event | None = None
        self._stop_requested = False
        self._cron: dict[str, Automation] = {}
        self._cron_changed: asyncio.Event | None = None
        self._schedules: dict[tuple[str, str], CronSchedule] = {}

    def stop(self) -> None:
        """Stop evaluating. A firing in progress is committed whole or not at all (its ticks or
        objects then fire at the next evaluation, here or elsewhere)."""
        self._stop_requested = True
        if self._stop is not None:
            self._stop.set()

    async def run(self, for_seconds: float | None = None) -> None:
        """Evaluate until :meth:`stop`, cancellation, or ``for_seconds`` have passed."""
        if self._opener is not None:
            await self._opener()
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        self._cron_changed = asyncio.Event()
        watchers: dict[str, tuple[Automation, asyncio.Task[None]]] = {}
        cron = asyncio.create_task(self._cron_loop(), name="swath-automations-cron")
        loop = asyncio.get_running_loop()
        deadline = None if for_seconds is None else loop.time() + for_seconds
        try:
            while not self._stop.is_set():
                await self._sync(watchers)
                wait = self.refresh
                if deadline is not None:
                    wait = min(wait, deadline - loop.time())
                    if wait <= 0:
                        break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._stop.wait()
        finally:
            tasks = [cron, *(task for _, task in watchers.values())]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._stop = None
            self._stop_requested = False

    async def _sync(self, watchers: dict[str, tuple[Automation, asyncio.Task[None]]]) -> None:
        """Match what runs to the automations stored: cron ones to the cron loop, a watcher per
        active storage trigger."""
        try:
            automations = await self.store.list_automations()
        except Exception:
            log.exception("automations: cannot list the automations; trying again")
            return
        active = [
            a
            for a in automations
            if not a.paused and (self.cluster is None or a.cluster == self.cluster)
        ]
        cron = {a.id: a for a in active if a.kind == "cron"}
        if cron.keys() != self._cron.keys() or any(
            self._cron[i].schedule != a.schedule or self._cron[i].timezone != a.timezone
            for i, a in cron.items()
            if i in self._cron
        ):
            assert self._cron_changed is not None
            self._cron_changed.set()
        self._cron = cron
        storage = {a.id: a for a in active if a.kind == "storage"}
        for automation_id in list(watchers):
            _, task = watchers[automation_id]
            if automation_id not in storage or task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                del watchers[automation_id]
        for automation_id, automation in storage.items():
            if automation_id not in watchers:
                task = asyncio.create_task(
                    self._watch_storage(automation), name=f"swath-automation-{automation.name}"
                )
                watchers[automation_id] = (automation, task)

    # -- cron ---------------------------------------------------------------------------------
    def _schedule(self, automation: Automation) -> CronSchedule:
        key = (automation.schedule or "", automation.timezone or "UTC")
        found = self._schedules.get(key)
        if found is None:
            found = self._schedules[key] = CronSchedule(*key)
        return found

    async def _cron_loop(self) -> None:
        assert self._cron_changed is not None
        changed = self._cron_changed
        cursors: dict[str, float] = {}
        failures: dict[str, int] = {}
        while True:
            changed.clear()
            now = time.time()
            next_due = now + self.refresh
            for automation in list(self._cron.values()):
                try:
                    cursor = max(automation.cursor, cursors.get(automation.id, 0.0))
                    cursors[automation.id], due = await self._cron_step(automation, cursor)
                    failures.pop(automation.id, None)
                except UnknownAutomationError:
                    self._cron.pop(automation.id, None)
                    continue
                except Exception:
                    n = failures[automation.id] = failures.get(automation.id, 0) + 1
                    log.exception("automation %s: firing failed (%d in a row)", automation.name, n)
                    due = time.time() + min(30.0, 0.5 * 2**n)
                next_due = min(next_due, due)
            delay = max(0.0, next_due - time.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await changed.wait()

    async def _cron_step(self, automation: Automation, cursor: float) -> tuple[float, float]:
        """Fire what is due of one schedule; returns its cursor and when to look again."""
        schedule = self._schedule(automation)
        now = time.time()
        if automation.catch_up == "all":
            ticks = schedule.ticks(cursor, now, MAX_TICKS_PER_FIRING)
            decided = ticks[-1] if ticks else None
        else:
            latest = schedule.latest(cursor, now)
            decided = latest
            ticks = [] if latest is None else [latest]
            if latest is not None and automation.catch_up == "none":
                grace = min(MISFIRE_GRACE, schedule.next_after(latest) - latest)
                if now - latest > grace:
                    ticks = []  # missed: skipped
        if decided is not None:
            firings = [self._cron_firing(automation, schedule, tick) for tick in ticks]
            submitted = await self.store.fire_automation(automation.id, firings, cursor=decided)
            self._count(automation, submitted)
            cursor = max(cursor, decided)
            if len(ticks) == MAX_TICKS_PER_FIRING:
                return cursor, now  # more to catch up: at once
        return cursor, schedule.next_after(max(cursor, now))

    def _cron_firing(self, automation: Automation, schedule: CronSchedule, tick: float) -> Firing:
        trigger = Trigger(automation.name, automation.id, "cron", time=schedule.when(tick))
        return self._firing(automation, f"{tick:.0f}", automation.name, trigger, at=tick)

    def _firing(
        self,
        automation: Automation,
        key: str,
        name: str,
        trigger: Trigger,
        at: float | None = None,
    ) -> Firing:
        root = NewTask(
            new_id(),
            automation.task_name,
            automation.task_version,
            automation.input,
            automation.cluster,
            max_retries=automation.max_retries,
            timeout=automation.timeout,
        )
        return Firing(
            key=key,
            job_id=new_id(),
            name=storable_text(name),
            root=root,
            trigger=_TRIGGER_ENCODER.encode(trigger).decode(),
            at=at,
        )

    def _count(self, automation: Automation, submitted: Sequence[str]) -> None:
        if submitted:
            self.fired += len(submitted)
            n = len(submitted)
            log.info("automation %s submitted %d job%s", automation.name, n, "s"[: n != 1])

    # -- storage --------------------------------------------------------------------------------
    async def _watch_storage(self, automation: Automation) -> None:
        """Watch one storage trigger until cancelled; errors (a storage or store that cannot be
        reached, a folder that does not exist yet) are logged and retried with back-off."""
        failures = 0
        while True:
            try:
                source = open_source(automation.url or "", self.settle)
                async with source:
                    if isinstance(source, _LocalFolder) and self.watch:
                        await self._watch_folder(automation, source)
                    else:
                        while True:
                            await self._scan(automation, source)
                            failures = 0
                            await asyncio.sleep(self.poll_interval)
            except asyncio.CancelledError:
                raise
            except UnknownAutomationError:
                return  # deleted: the next _sync forgets it
            except Exception as exc:
                failures += 1
                log.warning(
                    "automation %s on %s: %s: %s (looking again in a moment)",
                    automation.name,
                    automation.url,
                    type(exc).__name__,
                    exc,
                    exc_info=failures == 1,
                )
                await asyncio.sleep(min(60.0, self.poll_interval * 2 ** min(failures, 6)))

    async def _scan(self, automation: Automation, source: _Source) -> list[_Object]:
        """List the whole source once: fire what is new, then move the high-water mark to what
        this listing proved seen. Returns the files still being written (local folders)."""
        found = await self.store.get_automation(automation.id)
        if found is None:
            raise UnknownAutomationError(automation.id)
        if found.paused:
            return []
        mark = found.cursor
        began = time.monotonic()
        newest: float | None = None
        unsettled: list[_Object] = []
        async for page in source.objects():
            if page:
                top = max(o.modified for o in page)
                newest = top if newest is None else max(newest, top)
            candidates = [o for o in page if o.modified >= mark]
            unsettled += await self._consider(automation, source, candidates)
        if newest is None:
            return unsettled
        cursor = newest - source.lag - (time.monotonic() - began)
        if unsettled:
            cursor = min(cursor, *(o.modified for o in unsettled))
        if cursor > mark:
            await self.store.fire_automation(automation.id, [], cursor=cursor)
        return unsettled

    async def _consider(
        self, automation: Automation, source: _Source, objects: Sequence[_Object]
    ) -> list[_Object]:
        """Fire the objects that match the glob and have not fired yet; returns those that are
        still being written (local files), to be looked at again."""
        glob = automation.glob or "*"
        matching = [o for o in objects if fnmatch.fnmatchcase(o.name, glob)]
        unsettled: list[_Object] = []
        limit = asyncio.Semaphore(CHECKSUM_CONCURRENCY)

        async def with_checksum(obj: _Object) -> _Object | None:
            async with limit:
                return await source.checksum(obj)

        for i in range(0, len(matching), FIRE_BATCH):
            # batch by batch: another evaluator that is ahead has fired some meanwhile, and
            # their checksums need not be read again
            batch = matching[i : i + FIRE_BATCH]
            fired = await self.store.fired_keys(automation.id, [o.firing_key for o in batch])
            now = time.time()
            new = [o for o in batch if o.firing_key not in fired]
            unsettled += [o for o in new if o.settles_at > now]
            ready = [o for o in new if o.settles_at <= now]
            checked = await asyncio.gather(*(with_checksum(o) for o in ready))
            firings = []
            for original, obj in zip(ready, checked, strict=True):
                if obj is None:
                    unsettled.append(original)  # changed while it was read
                    continue
                firings.append(self._storage_firing(automation, source, obj))
            if firings:
                submitted = await self.store.fire_automation(automation.id, firings)
                self._count(automation, submitted)
        return unsettled

    def _storage_firing(self, automation: Automation, source: _Source, obj: _Object) -> Firing:
        trigger = Trigger(
            automation.name,
            automation.id,
            "storage",
            time=dt.datetime.fromtimestamp(obj.modified, dt.UTC),
            key=obj.name,
            url=source.url_of(obj.name),
            size=obj.size,
            checksum=obj.checksum,
            version=obj.version,
        )
        return self._firing(automation, obj.firing_key, f"{automation.name}: {obj.name}", trigger)

    async def _watch_folder(self, automation: Automation, source: _LocalFolder) -> None:
        """A local folder through inotify (watchfiles): changed files are looked at as they
        change, files still being written again once they may have settled, and the whole
        folder every ``max(60, poll_interval)`` seconds (and whenever a folder appears in it).
        Without watchfiles, or if it cannot watch, the folder is polled."""
        try:
            import watchfiles
        except ImportError:
            log.info("automations: without watchfiles (swath[watch]), %s is polled", source.root)
            watchfiles = None  # type: ignore[assignment]
        changes: asyncio.Queue[set[str] | BaseException] = asyncio.Queue()
        stop = asyncio.Event()

        async def feed() -> None:
            assert watchfiles is not None
            try:
                async for batch in watchfiles.awatch(
                    source.root, stop_event=stop, debounce=100, step=20, recursive=True
                ):
                    await changes.put({path for _, path in batch})
            except Exception as exc:
                await changes.put(exc)

        watcher: asyncio.Task[None] | None = None
        if watchfiles is not None:
            watcher = asyncio.create_task(feed())
        rescan = max(60.0, self.poll_interval) if watcher is not None else self.poll_interval
        pending: dict[str, _Object] = {}
        try:
            next_scan = 0.0
            while True:
                if time.monotonic() >= next_scan:
                    # the scan looked at every file: what it found unsettled is looked at again
                    unsettled = await self._scan(automation, source)
                    pending = {o.name: o for o in unsettled}
                    next_scan = time.monotonic() + rescan
                wake = next_scan
                if pending:
                    soonest = min(o.settles_at for o in pending.values())
                    wake = min(wake, time.monotonic() + max(0.0, soonest - time.time()) + 0.01)
                try:
                    async with asyncio.timeout(max(0.0, wake - time.monotonic())):
                        batch = await changes.get()
                except TimeoutError:
                    batch = set()
                if isinstance(batch, BaseException):
                    log.warning("automations: cannot watch %s (%s): polling it", source.root, batch)
                    watcher = None
                    rescan = self.poll_interval
                    next_scan = 0.0
                    continue
                paths = batch | {source.url_of(o.name) for o in pending.values()}
                pending.clear()
                looked = await anyio.to_thread.run_sync(_stat_all, source, paths)
                objects = [o for o in looked if isinstance(o, _Object)]
                for obj in await self._consider(automation, source, objects):
                    pending[obj.name] = obj
                for below in {f for f in looked if isinstance(f, str) and f}:
                    # a folder moved in: its files came without events (and with their own,
                    # maybe older, times): each is looked at, whatever its time
                    async for page in source.objects(below):
                        for obj in await self._consider(automation, source, page):
                            pending[obj.name] = obj
        finally:
            stop.set()
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher


_TRIGGER_ENCODER = msgspec.json.Encoder()


__all__ = [
    "CATCH_UP_POLICIES",
    "Automation",
    "AutomationClient",
    "AutomationEvaluator",
    "CatchUp",
    "CronSchedule",
    "Trigger",
    "open_source",
]
