"""Faults the transfer engine must survive, on S3 (moto, rclone) and GCS (fake-gcs-server).

Every fault is made by the shared :class:`~tests.services.faults.FaultProxy` on a loopback port:
a silent server, a plain web server, a frozen server (SIGSTOP-like), lost answers, connection
resets and a storm of 503s. Deadlines are small here (seconds) so that a hang shows as a failed
test, not as a stuck suite; the defaults are checked by arithmetic.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from swath.cache import cache_from_url
from swath.cache._retry import Deadlines
from swath.cache.gcs import GoogleStorageCache
from swath.cache.s3 import AmazonS3Cache
from swath.errors import CacheError
from tests.services.faults import FaultProxy, Request
from tests.services.gcs import GcsServer
from tests.services.s3 import S3Server

MiB = 1 << 20
KiB = 1 << 10
# small deadlines: a dead server must be reported within seconds, not minutes
QUICK: dict[str, Any] = {
    "connect_timeout": 2,
    "read_timeout": 2,
    "operation_timeout": 6,
    "abort_timeout": 2,
}
REPORTED_WITHIN = 30.0  # operation (6) + abort (2) budgets, with a wide margin for a busy machine


def host_port(url: str) -> str:
    return url.removeprefix("http://").rstrip("/")


def s3_cache(proxy: FaultProxy, bucket: str, **options: Any) -> AmazonS3Cache:
    settings: dict[str, Any] = {**QUICK, "part_size": 5 * MiB, "max_concurrency": 2, **options}
    return AmazonS3Cache(bucket, prefix="", endpoint_url=proxy.url, **settings)


def gcs_cache(bucket: str, **options: Any) -> GoogleStorageCache:
    settings: dict[str, Any] = {**QUICK, "chunk_size": 256 * KiB, "max_concurrency": 2, **options}
    return GoogleStorageCache(bucket, **settings)


def chunks(size: int, step: int = MiB) -> Iterator[bytes]:
    block = os.urandom(step)
    for start in range(0, size, step):
        yield block[: min(step, size - start)]


@pytest.fixture
async def moto_proxy(moto_s3: S3Server, aws_env: None) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(host_port(moto_s3.endpoint)) as proxy:
        yield proxy


@pytest.fixture
async def rclone_proxy(rclone_s3: S3Server, aws_env: None) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(host_port(rclone_s3.endpoint)) as proxy:
        yield proxy


@pytest.fixture
async def gcs_proxy(
    gcs_server: GcsServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[FaultProxy]:
    """A FaultProxy in front of fake-gcs-server; STORAGE_EMULATOR_HOST points at it."""
    async with FaultProxy(host_port(gcs_server.endpoint)) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        yield proxy


@pytest.fixture
async def lone_proxy(monkeypatch: pytest.MonkeyPatch, aws_env: None) -> AsyncIterator[FaultProxy]:
    """A FaultProxy with no server behind it (a silent server, or a plain web server)."""
    async with FaultProxy(None) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        yield proxy


@dataclass
class Target:
    """A store behind a FaultProxy: which one, the proxy, and a cache on it (small deadlines)."""

    kind: str  # "moto", "rclone" or "gcs"
    proxy: FaultProxy
    bucket: str
    step: int  # part (S3) or chunk (GCS) size of the caches made by ``cache``

    def cache(self, **options: Any) -> Any:
        if self.kind == "gcs":
            return gcs_cache(self.bucket, **options)
        return s3_cache(self.proxy, self.bucket, **options)


def _target(request: pytest.FixtureRequest, kind: str) -> Target:
    if kind == "gcs":
        proxy, bucket, step = "gcs_proxy", "gcs_bucket", 256 * KiB
    else:
        proxy, bucket, step = f"{kind}_proxy", f"s3_{kind}_bucket", 5 * MiB
    return Target(kind, request.getfixturevalue(proxy), request.getfixturevalue(bucket), step)


@pytest.fixture(params=["moto", "gcs"])
def target(request: pytest.FixtureRequest) -> Target:
    """S3 on moto, then GCS, each behind a FaultProxy."""
    return _target(request, request.param)


@pytest.fixture(params=["rclone", "gcs"])
def fast_target(request: pytest.FixtureRequest) -> Target:
    """S3 on rclone (fast ranged reads), then GCS, each behind a FaultProxy."""
    return _target(request, request.param)


@pytest.fixture(params=["moto", "rclone"])
def s3_target(request: pytest.FixtureRequest) -> Target:
    return _target(request, request.param)


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.monotonic() - self.start


# -- (a) deadlines: nothing hangs ------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["s3", "gcs"])
async def test_silent_server_is_reported_within_the_budget(
    lone_proxy: FaultProxy, kind: str
) -> None:
    """A server that takes every request and never answers (nor reads the body) makes entering
    the cache fail with a CacheError within the operation budget, not hang."""
    lone_proxy.rule = lambda request: "silent"
    cache = s3_cache(lone_proxy, "bucket") if kind == "s3" else gcs_cache("bucket")
    with Timer() as timer, pytest.raises(CacheError):
        async with cache:
            pass
    assert timer.elapsed < REPORTED_WITHIN
    assert lone_proxy.seen, "the cache never reached the server"


async def test_s3_frozen_server_fails_puts_within_the_budget(
    moto_proxy: FaultProxy, s3_moto_bucket: str
) -> None:
    """With the server frozen after the cache entered (the proxy stops reading and answering,
    as SIGSTOP would), put, put_stream (multipart, its abort included) and get each fail with a
    CacheError within the operation and abort budgets. (botocore's Expect: 100-continue and
    aiohttp's read timeout, which starts only once a body is sent, made these hang forever.)"""
    async with s3_cache(moto_proxy, s3_moto_bucket) as cache:
        await cache.put("k", b"before")
        moto_proxy.freeze()
        for attempt in (
            lambda: cache.put("small", os.urandom(MiB)),
            lambda: cache.put_stream("large", chunks(12 * MiB)),
            lambda: cache.get("k"),
        ):
            with Timer() as timer, pytest.raises(CacheError):
                await attempt()
            assert timer.elapsed < REPORTED_WITHIN
        moto_proxy.thaw()
        assert await cache.get("k") == b"before"


async def test_gcs_frozen_server_fails_puts_within_the_budget(
    gcs_proxy: FaultProxy, gcs_bucket: str
) -> None:
    """The same on GCS (a frozen transfer took about 90 minutes to fail): a one-request put, a
    composite put_stream and a resumable put_stream each fail within the budgets."""
    async with gcs_cache(gcs_bucket) as cache, gcs_cache(gcs_bucket, max_concurrency=1) as serial:
        await cache.put("k", b"before")
        gcs_proxy.freeze()
        for attempt in (
            lambda: cache.put("small", b"x" * 1000),
            lambda: cache.put_stream("large", chunks(2 * MiB, 100 * KiB)),
            lambda: serial.put_stream("serial", chunks(2 * MiB, 100 * KiB)),
            lambda: cache.get("k"),
        ):
            with Timer() as timer, pytest.raises(CacheError):
                await attempt()
            assert timer.elapsed < REPORTED_WITHIN
        gcs_proxy.thaw()
        assert await cache.get("k") == b"before"


async def test_cancelling_a_put_to_a_frozen_server_is_prompt(target: Target) -> None:
    """A put_stream in the middle of a multipart upload to a frozen server, cancelled, finishes
    within the abort budget (cancelling took 116 s on S3 and 373 s on GCS)."""
    proxy, cache = target.proxy, target.cache()
    async with cache:
        started = asyncio.Event()

        async def source() -> AsyncIterator[bytes]:
            started.set()
            for piece in chunks(16 * MiB):
                yield piece  # blocks once the parts in flight fill every slot
            await asyncio.sleep(3600)

        proxy.freeze()
        task = asyncio.create_task(cache.put_stream("big", source()))
        await asyncio.wait_for(started.wait(), 30)
        await asyncio.sleep(1)
        with Timer() as timer:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, REPORTED_WITHIN)
        assert timer.elapsed < 10  # the abort budget is 2 s
        proxy.thaw()


def test_deadlines_are_options_of_the_constructors_and_urls() -> None:
    """The deadlines are constructor keywords and URL query options of both backends; the URL
    form keeps those that are not the defaults; bad names and values are clear errors; and the
    defaults report a dead or frozen server within 2 minutes (operation plus abort budget)."""
    s3 = cache_from_url("s3://b/p?read_timeout=5&operation_timeout=20")
    assert isinstance(s3, AmazonS3Cache)
    assert (s3.deadlines.read_timeout, s3.deadlines.operation_timeout) == (5, 20)
    assert s3.url() == "s3://b/p?read_timeout=5&operation_timeout=20"
    gs = cache_from_url("gs://b/p?connect_timeout=3&abort_timeout=4")
    assert isinstance(gs, GoogleStorageCache)
    assert (gs.deadlines.connect_timeout, gs.deadlines.abort_timeout) == (3, 4)
    assert cache_from_url(gs.url()).url() == gs.url()
    assert GoogleStorageCache("b", read_timeout=7.5).deadlines.read_timeout == 7.5
    assert AmazonS3Cache("b").url() == "s3://b/jobs"
    with pytest.raises(TypeError, match="read_timout"):
        AmazonS3Cache("b", read_timout=5)
    with pytest.raises(ValueError, match="read_timeout"):
        cache_from_url("gs://b/p?read_timeout=soon")
    with pytest.raises(ValueError, match="operation_timeout"):
        AmazonS3Cache("b", operation_timeout=0)
    default = Deadlines()
    assert default.operation_timeout + default.abort_timeout <= 120
    assert default.read_timeout < default.operation_timeout


# -- (b) clean-up after a failure ------------------------------------------------------------------
async def test_abort_of_an_upload_already_gone_is_quiet(
    moto_s3: S3Server, s3_moto_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    """When the multipart upload is already gone when swath aborts it (S3 answers
    NoSuchUpload), the abort is done at once: one request, no retries, no "left behind"
    warning, and the source's own error reaches the caller."""
    bucket = s3_moto_bucket
    async with moto_s3.make_cache(bucket, part_size=5 * MiB, max_concurrency=2) as cache:
        wire: list[str] = []
        cache._client.meta.events.register(
            "before-send.s3", lambda event_name, **_: wire.append(event_name.rsplit(".", 1)[-1])
        )
        with Timer() as timer, pytest.raises(RuntimeError, match="source broke"):
            async with cache.open_write("k") as writer:
                for piece in chunks(11 * MiB):
                    await writer.write(piece)
                for upload in moto_s3.client.list_multipart_uploads(Bucket=bucket)["Uploads"]:
                    moto_s3.client.abort_multipart_upload(
                        Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                raise RuntimeError("source broke")
    assert wire.count("AbortMultipartUpload") == 1
    assert timer.elapsed < 10
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- (c) a plain web server is not a store ---------------------------------------------------------
@pytest.mark.parametrize("kind", ["s3", "gcs"])
async def test_plain_web_server_is_refused_on_entry(lone_proxy: FaultProxy, kind: str) -> None:
    """A web server that answers every request with 200 and an HTML page is refused when the
    cache is entered, with a CacheError that says the endpoint is no store (S3 took it for a
    store and returned the page as a value; GCS raised a raw JSONDecodeError)."""
    lone_proxy.rule = lambda request: "html"
    cache = s3_cache(lone_proxy, "bucket") if kind == "s3" else gcs_cache("bucket")
    server = "an S3 server" if kind == "s3" else "a GCS server"
    with pytest.raises(CacheError, match=f"is it {server}"):
        async with cache:
            pass


async def test_web_server_in_place_of_an_open_s3_store(
    moto_proxy: FaultProxy, s3_moto_bucket: str
) -> None:
    """When a plain web server takes the store's place after the cache entered, put, get and
    contains fail with a CacheError saying the endpoint does not answer like S3."""
    async with s3_cache(moto_proxy, s3_moto_bucket) as cache:
        await cache.put("k", b"value")
        moto_proxy.rule = lambda request: "html"
        for attempt in (
            lambda: cache.put("k2", b"value"),
            lambda: cache.get("k"),
            lambda: cache.contains("k"),
        ):
            with Timer() as timer, pytest.raises(CacheError, match="is it an S3 server"):
                await attempt()
            assert timer.elapsed < REPORTED_WITHIN


async def test_web_server_in_place_of_an_open_gcs_store(
    gcs_proxy: FaultProxy, gcs_bucket: str
) -> None:
    """The same on GCS: every answer must be JSON (or a media answer with its checksum)."""
    async with gcs_cache(gcs_bucket) as cache:
        await cache.put("k", b"value")
        gcs_proxy.rule = lambda request: "html"
        with pytest.raises(CacheError, match="JSON"):
            await cache.put("k2", b"value")
        with pytest.raises(CacheError, match="JSON"):
            await cache.get("k")
        with pytest.raises(CacheError, match="JSON"):
            await cache.stat("k")


# -- (d) a lost completion -------------------------------------------------------------------------
async def test_s3_lost_completion_answer_is_a_success(
    s3_target: Target, request: pytest.FixtureRequest
) -> None:
    """CompleteMultipartUpload reaches the server but its answer is lost: the retried
    completion answers NoSuchUpload, and since the object is there with the expected checksum
    (moto) or multipart ETag (rclone), the put succeeds."""
    proxy, bucket = s3_target.proxy, s3_target.bucket
    server: S3Server = request.getfixturevalue(f"{s3_target.kind}_s3")
    lost = {"n": 0}

    def lose_first_completion(req: Request) -> str:
        if req.method == "POST" and "uploadId=" in req.target and lost["n"] == 0:
            lost["n"] += 1
            return "drop"
        return "pass"

    data = b"".join(chunks(12 * MiB))
    async with s3_target.cache() as cache:
        proxy.rule = lose_first_completion
        await cache.put("k", data)
        proxy.rule = lambda req: "pass"
        assert await cache.get("k") == data
    completions = [r for r, _ in proxy.seen if r.method == "POST" and "uploadId=" in r.target]
    assert len(completions) == 2
    assert server.pending_uploads(bucket) == []


async def test_gcs_lost_final_answers_are_a_success(gcs_proxy: FaultProxy, gcs_bucket: str) -> None:
    """The last chunk of a resumable upload, or a compose, reaches the server but its answer is
    lost: the resumable upload asks the session, finds it complete and takes the object; the
    compose is repeated. Both puts succeed with the right value."""
    data = b"".join(chunks(MiB + 1000, 100 * KiB))
    lost: set[str] = set()

    def lose_first_final(req: Request) -> str:
        last_chunk = req.method == "PUT" and req.headers.get("content-range", "").endswith(
            f"/{len(data)}"
        )
        kind = "final" if last_chunk else "compose" if req.target.find("/compose") > 0 else ""
        if kind and kind not in lost:
            lost.add(kind)
            return "drop"
        return "pass"

    async with gcs_cache(gcs_bucket, max_concurrency=1) as serial, gcs_cache(gcs_bucket) as cache:
        gcs_proxy.rule = lose_first_final
        await serial.put("resumable", data)
        await cache.put("composite", data)
        gcs_proxy.rule = lambda req: "pass"
        assert await cache.get("resumable") == data
        assert await cache.get("composite") == data
    assert lost == {"final", "compose"}


# -- (e) retries under load ------------------------------------------------------------------------
def storm(seed: int) -> Any:
    rng = random.Random(seed)
    return lambda request: "503" if rng.random() < 0.5 else "pass"


async def _thousand_puts(cache: Any) -> list[BaseException]:
    async def put(i: int) -> None:
        await cache.put(f"g/k{i:04d}", f"value {i}".encode())

    results = await asyncio.gather(*(put(i) for i in range(1000)), return_exceptions=True)
    return [r for r in results if isinstance(r, BaseException)]


@pytest.mark.slow
async def test_storm_of_503s_under_1000_concurrent_puts(target: Target) -> None:
    """1,000 concurrent puts while half of all answers are 503: each put gets its own
    ``attempts`` (6), nothing is shared between requests, so at most the few that drew six 503s
    in a row fail (1,000 / 64 expected), each saying it made 6 attempts. (botocore's standard
    mode shares a retry quota across the client: 279-285 of 1,000 failed after one attempt.)"""
    proxy, cache = target.proxy, target.cache()
    # deadlines for a loaded machine; short back-off so that the test is quick
    cache.deadlines = Deadlines(operation_timeout=300)
    cache.backoff, cache.max_backoff = 0.05, 0.5
    async with cache:
        proxy.rule = storm(seed=12)
        failures = await _thousand_puts(cache)
        proxy.rule = lambda request: "pass"
        stored = [k async for k in cache.group("g")]
    answers = [action for _, action in proxy.seen[1:]]
    assert 0.4 < answers.count("503") / len(answers) < 0.6
    assert len(failures) <= 40, f"{len(failures)} failed, e.g. {failures[:1]}"
    for failure in failures:
        assert isinstance(failure, CacheError)
        assert "after 6 attempts" in str(failure)
    assert len(stored) == 1000 - len(failures)


# -- (f) name collisions on stores built on a file system ----------------------------------------
async def test_rclone_key_and_group_collisions_fail_fast_and_lose_nothing(
    rclone_s3: S3Server, s3_rclone_bucket: str
) -> None:
    """On rclone (objects are files: a name cannot be a key and a group at once), a write that
    would make one fails at once with an error naming the collision, and the value already
    there is kept: put("g/x") then put_stream("g", 24 MiB) (rclone dropped g/x), and put("a")
    then put("a/b") (which hung, or failed after minutes saying nothing of the collision)."""
    async with rclone_s3.make_cache(s3_rclone_bucket, **QUICK) as cache:
        await cache.put("g/x", b"inner")
        with Timer() as timer, pytest.raises(CacheError, match=r"'g'.*key and a group"):
            await cache.put_stream("g", chunks(24 * MiB))
        assert timer.elapsed < 10
        assert await cache.get("g/x") == b"inner"
        await cache.put("a", b"outer")
        with Timer() as timer, pytest.raises(CacheError, match=r"'a'.*key and a group"):
            await cache.put("a/b", b"x")
        assert timer.elapsed < 10
        assert await cache.get("a") == b"outer"
        assert not await cache.contains("g")


# -- (g) connection resets -------------------------------------------------------------------------
async def test_connection_resets_are_retried_and_nothing_is_left_unretrieved(
    fast_target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    """Connections reset in the middle of answers (of reads and of writes) and in the middle of
    request bodies are retried like any transient error: values come back whole; a stream left
    early cancels its ranges in flight; and no "Task exception was never retrieved" is ever
    logged."""
    proxy, cache, step = fast_target.proxy, fast_target.cache(max_concurrency=3), fast_target.step
    proxy.cut_after = 1000
    data = b"".join(chunks(4 * step + 123, 64 * KiB))
    resets = {"n": 0}

    def reset_every_third(req: Request) -> str:
        resets["n"] += 1
        if resets["n"] % 3:
            return "pass"
        return "reset" if resets["n"] % 2 else "cut_request"  # in an answer, or in a request

    caplog.set_level(logging.DEBUG)
    async with cache:
        proxy.rule = reset_every_third
        await cache.put("k", data)
        assert await cache.get("k") == data
        got = b"".join([c async for c in cache.stream("k", chunk_size=100 * KiB)])
        assert got == data
        stream = cache.stream("k", chunk_size=100 * KiB)
        async for _ in stream:
            break
        await stream.aclose()
        proxy.rule = lambda req: "pass"
    del stream
    gc.collect()
    await asyncio.sleep(0.1)
    gc.collect()
    assert proxy.actions("reset")
    assert proxy.actions("cut_request")
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


# -- (h) one GET broken in the middle --------------------------------------------------------------
async def test_s3_one_get_read_broken_midway_resumes_where_it_stopped(s3_target: Target) -> None:
    """A value that fits in one part is read by one GET whose body is passed on as it arrives.
    When that connection is reset in the middle of the body, the read resumes with a GET of the
    rest only (a Range from the byte it reached, If-Match the ETag, so a replaced object cannot
    be spliced in): the value comes back whole, in exact chunks. A resume that finds the object
    replaced fails with an error that says so."""
    proxy = s3_target.proxy
    cache = s3_target.cache(part_size=16 * MiB)
    data = os.urandom(6 * MiB + 5)
    proxy.cut_after = 2 * MiB
    first_get = {"armed": True}

    def cut_the_first_get(req: Request) -> str:
        if req.method == "GET" and first_get["armed"] and "range" in req.headers:
            first_get["armed"] = False
            return "reset_later"
        return "pass"

    async with cache:
        await cache.put("k", data)
        proxy.rule = cut_the_first_get
        got = [c async for c in cache.stream("k", chunk_size=MiB)]
        assert b"".join(got) == data
        assert [len(c) for c in got] == [MiB] * 6 + [5]
        gets = [r for r in proxy.seen if r[0].method == "GET" and "range" in r[0].headers]
        seen = [(r.headers.get("range"), action) for r, action in gets]
        assert [action for _, action in gets] == ["reset_later", "pass"], seen
        resumed = gets[1][0]
        begin, end = resumed.headers["range"].removeprefix("bytes=").split("-")
        assert 0 < int(begin) < 2 * MiB, "the resume asks only for what was not received"
        assert int(end) == len(data) - 1
        assert resumed.headers.get("if-match")

        # the object is replaced between the broken GET and its resume
        first_get["armed"] = True
        proxy.seen.clear()
        stream = cache.stream("k", chunk_size=256 * KiB)  # the first chunk long before the cut
        assert len(await anext(stream)) == 256 * KiB
        await cache.put("k", os.urandom(6 * MiB))
        with pytest.raises(CacheError, match="replaced or deleted while being read"):
            async for _ in stream:
                pass
