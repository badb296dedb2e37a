"""Serving the dashboard in tests: in process through httpx's ASGI transport (the peer address
chosen per test), or on a real socket with uvicorn (for the browser)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette

from swath import Client, LocalFileSystemCache
from swath.cache import Backend
from swath.dashboard import create_app
from tests.dashboard.tasks import Broken, FanOut, Hello, Leaf

TASKS = [FanOut, Leaf, Broken, Hello]
XSS_NAME = '<script>alert("name")</script>'
XSS_DISPLAY = "<img src=x onerror=alert('display')>"
XSS_KEY = "<svg onload=alert('key')>.txt"


@contextlib.asynccontextmanager
async def http(
    app: Starlette, *, peer: str = "127.0.0.1", base: str = "http://127.0.0.1:8765"
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of ``app`` (its lifespan entered) that connects from ``peer``."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(peer, 50123))
        async with httpx.AsyncClient(transport=transport, base_url=base) as client:
            yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def served(app: Starlette) -> AsyncIterator[str]:
    """``app`` served by uvicorn on a free loopback port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    server.config.timeout_graceful_shutdown = 2
    task = asyncio.create_task(server.serve())
    for _ in range(400):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    else:
        raise TimeoutError("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def populate(db: str, cache_root: Path | Backend) -> dict[str, str]:
    """A store with a finished fan-out job (12 leaves, an optional failure, a display and a
    name that are XSS payloads), a finished Hello job, and a queued job; a cache with the
    Hello job's value, a 3 MiB value, a key that is an XSS payload. Returns the job ids."""
    cache = cache_root if isinstance(cache_root, Backend) else LocalFileSystemCache(cache_root)
    async with cache, Client(db) as client:
        fan = await client.jobs().submit(XSS_NAME, FanOut(12, display=XSS_DISPLAY))
        hello = await client.jobs().submit("hello", Hello())
        await client.runner(TASKS, cache=cache, max_concurrency=4).run_all()
        queued = await client.jobs().submit("waiting", FanOut(3), cluster="default")
        await cache.put("big/blob.bin", bytes(range(256)) * (3 * 4096))  # 3 MiB
        await cache.put(f"misc/{XSS_KEY}", b"<script>alert('value')</script>")
        await cache.put("misc/binary.bin", bytes(range(256)))
    return {"fan": fan.id, "hello": hello.id, "queued": queued.id}


def app_for(db: str, cache_root: Path | Backend | None, **options: object) -> Starlette:
    if cache_root is None or isinstance(cache_root, Backend):
        cache = cache_root
    else:
        cache = LocalFileSystemCache(cache_root, read_only=True)
    return create_app(Client(db), cache, **options)  # type: ignore[arg-type]
