"""Embedding swath in a web service: a Starlette (ASGI) app whose lifespan runs a runner in its
own task group, an endpoint that submits a job, and a download endpoint that streams a job's
result from the cache to the client chunk by chunk (memory stays flat for a value of any size).

- ``POST /reports`` with ``{"parts": 4, "part_mib": 1, "delay": 0}`` submits a job: ``Report``
  fans out one ``WritePart`` per part (each streams ``part_mib`` MiB into the job cache), then
  ``Join`` (depending on every part) streams the parts, one chunk at a time, into ``report.bin``.
  Answers ``202 {"job": ID}``.
- ``GET /reports/ID``: the job's state and progress.
- ``GET /reports/ID/download``: ``report.bin`` streamed in 1 MiB chunks (404 until it exists).

Stopping the service (Ctrl-C, SIGTERM) stops the runner gracefully: no new claims, in-flight
tasks get the grace period to finish; the job's queued tasks wait in the store for the next
start, which goes on with them.

Run it: ``SWATH_DATABASE_URL=sqlite:///service.db SWATH_CACHE_URL=cache \\
uvicorn --app-dir examples service:app`` (or ``python examples/service.py``), then
``curl -X POST localhost:8000/reports -d '{"parts": 8}'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from swath import Client, ExecutionContext, Task
from swath.cache import Backend, cache_from_url
from swath.errors import KeyNotFoundError
from swath.store.base import UnknownJobError

CHUNK = 1 << 20
MAX_PARTS = 1000
MAX_PART_MIB = 1024


def part_chunk(index: int) -> bytes:
    """The 1 MiB that part ``index`` repeats (so a client can check what it downloaded)."""
    return hashlib.sha256(str(index).encode()).digest() * (CHUNK // 32)


class WritePart(Task):
    index: int
    mib: int
    delay: float = 0.0

    async def execute(self, context: ExecutionContext) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)  # stands for real work
        chunk = part_chunk(self.index)
        async with context.job_cache.open_write(f"parts/{self.index:05d}") as out:
            for _ in range(self.mib):
                await out.write(chunk)
        context.progress("parts").done(1)


class Join(Task):
    parts: int

    async def execute(self, context: ExecutionContext) -> None:
        cache = context.job_cache
        async with cache.open_write("report.bin") as out:
            for index in range(self.parts):
                async for chunk in cache.stream(f"parts/{index:05d}", chunk_size=CHUNK):
                    await out.write(chunk)
        context.progress("join").done(1)


class Report(Task):
    parts: int
    mib: int
    delay: float = 0.0

    async def execute(self, context: ExecutionContext) -> None:
        context.current_task.display = f"report of {self.parts} x {self.mib} MiB"
        context.progress("parts").add(self.parts)
        context.progress("join").add(1)
        written = context.submit_subtasks(
            [WritePart(i, self.mib, self.delay) for i in range(self.parts)]
        )
        context.submit_subtask(Join(self.parts), depends_on=written)


TASKS = [Report, WritePart, Join]


def create_service(
    database: str | None = None,
    cache: str | None = None,
    *,
    concurrency: int = 4,
    grace: float = 60.0,
) -> Starlette:
    """The service over the job store ``database`` (default: ``$SWATH_DATABASE_URL`` or
    ``./swath.db``) and the runner cache ``cache`` (default: ``$SWATH_CACHE_URL`` or
    ``./cache``)."""
    client = Client(database)
    backend: Backend = cache_from_url(cache or os.environ.get("SWATH_CACHE_URL") or "cache")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with client, backend, anyio.create_task_group() as tasks:
            runner = client.runner(TASKS, backend, max_concurrency=concurrency, grace=grace)
            tasks.start_soon(runner.run_forever)
            try:
                yield  # the service serves requests here
            finally:
                # graceful: no new claims; running tasks get `grace` seconds to finish
                runner.stop()

    async def submit(request: Request) -> Response:
        try:
            body = await request.json()
            parts = int(body.get("parts", 4))
            mib = int(body.get("part_mib", 1))
            delay = float(body.get("delay", 0.0))
        except (ValueError, TypeError, AttributeError):
            return JSONResponse({"error": "expected JSON {parts, part_mib, delay}"}, 400)
        if not (1 <= parts <= MAX_PARTS and 0 <= mib <= MAX_PART_MIB and 0 <= delay <= 3600):
            return JSONResponse({"error": "parts, part_mib or delay out of range"}, 400)
        job = await client.jobs().submit("report", Report(parts, mib, delay))
        return JSONResponse({"job": job.id}, status_code=202)

    async def status(request: Request) -> Response:
        try:
            job = await client.jobs().find(request.path_params["job_id"])
        except UnknownJobError:
            return JSONResponse({"error": "no such job"}, 404)
        progress = {p.label: [p.done, p.total] for p in job.progress}
        return JSONResponse({"job": job.id, "state": job.state.value, "progress": progress})

    async def download(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        try:
            job_cache = backend.group(job_id)  # the cache's key rules: no way out of it
            stat = await job_cache.stat("report.bin")
        except (KeyNotFoundError, ValueError):
            return JSONResponse({"error": "no report (yet) for this job"}, 404)
        return StreamingResponse(
            job_cache.stream("report.bin", chunk_size=CHUNK),  # one chunk in memory at a time
            media_type="application/octet-stream",
            headers={"content-length": str(stat.size), "x-checksum": stat.checksum},
        )

    return Starlette(
        routes=[
            Route("/reports", submit, methods=["POST"]),
            Route("/reports/{job_id}", status),
            Route("/reports/{job_id}/download", download),
        ],
        lifespan=lifespan,
    )


app = create_service()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
