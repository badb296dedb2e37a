"""GCS-specific behaviour of GoogleStorageCache, against fake-gcs-server.

Faults (transient 5xx, rejected credentials, corrupted downloads, a chunk lost mid-upload) are
injected by :class:`FaultProxy`, a real HTTP proxy on a loopback port between the cache and the
emulator: requests and bytes still travel over HTTP to the real server.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import crc32c
import pytest
from aiohttp import web

from swath import ChecksumMismatchError, InvalidKeyError, KeyNotFoundError
from swath.cache import cache_from_url
from swath.cache.gcs import TMP_SEGMENT, GoogleStorageCache, crc_to_b64
from swath.errors import CacheError
from tests.services.gcs import GcsServer

ROOT = Path(__file__).resolve().parents[1]
KIB = 1 << 10
MIB = 1 << 20

Answer = web.StreamResponse | None
Rule = Callable[[web.Request, bytes], Answer | Awaitable[Answer]]


@dataclass
class FaultProxy:
    """An HTTP proxy in front of fake-gcs-server. ``rules`` may answer a request themselves;
    ``transforms`` may change an upstream answer; every request is logged."""

    upstream: str
    url: str = ""
    log: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    transforms: list[Callable[[web.Request, int, dict[str, str], bytes], bytes]] = field(
        default_factory=list
    )
    client: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.log.append((request.method, request.path_qs, dict(request.headers)))
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("host", "content-length", "transfer-encoding")
        }
        for rule in list(self.rules):
            answer = rule(request, body)
            if inspect.isawaitable(answer):
                answer = await answer
            if answer is not None:
                return answer
        assert self.client is not None
        async with self.client.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body
        ) as up:
            data = await up.read()
            out = {
                k: v.replace(self.upstream, self.url)
                for k, v in up.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")
            }
            for transform in self.transforms:
                data = transform(request, up.status, out, data)
            return web.Response(status=up.status, headers=out, body=data)


@pytest.fixture
async def proxy(
    gcs_server: GcsServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[FaultProxy]:
    """A FaultProxy in front of the emulator; STORAGE_EMULATOR_HOST points at it for the test."""
    fp = FaultProxy(gcs_server.endpoint)
    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", fp.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fp.url = f"http://127.0.0.1:{port}"
    fp.client = aiohttp.ClientSession(auto_decompress=False)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fp.url)
    try:
        yield fp
    finally:
        await fp.client.close()
        await runner.cleanup()


def fast_retries(cache: GoogleStorageCache) -> GoogleStorageCache:
    cache.attempts = 3
    cache.backoff = 0.01
    return cache


def tmp_objects(server: GcsServer, bucket: str) -> list[str]:
    return [n for n in server.object_names(bucket) if TMP_SEGMENT in n]


def data_of(size: int, seed: int = 0) -> bytes:
    block = os.urandom(64 * KIB) if seed == 0 else bytes([seed]) * (64 * KIB)
    return (block * (size // len(block) + 1))[:size]


# -- naming, listing, lifecycle -------------------------------------------------------------------
async def test_object_names_are_prefix_job_key(gcs_server: GcsServer, gcs_bucket: str) -> None:
    """A job cache (group named by the job id) stores key k as `<prefix>/<job id>/<k>`; prefix ''
    means no prefix; the URL form rebuilds the same backend."""
    async with GoogleStorageCache(gcs_bucket, prefix="jobs") as cache:
        await cache.group("job-1").put("tiles/0_0", b"tile")
        assert cache.url() == f"gs://{gcs_bucket}/jobs"
    async with GoogleStorageCache(gcs_bucket, prefix="") as bare:
        await bare.group("job-2").put("k", b"v")
        assert sorted([g async for g in bare.groups()]) == ["job-2", "jobs"]
    assert sorted(gcs_server.object_names(gcs_bucket)) == ["job-2/k", "jobs/job-1/tiles/0_0"]
    async with cache_from_url(f"gs://{gcs_bucket}/jobs") as again:
        assert await again.get("job-1/tiles/0_0") == b"tile"


async def test_missing_bucket_is_a_clear_error_on_enter(gcs_server: GcsServer) -> None:
    """Entering a cache on a bucket that does not exist fails at once, naming the bucket."""
    with pytest.raises(CacheError, match=r"no-such-bucket-xyz.*does not exist"):
        async with GoogleStorageCache("no-such-bucket-xyz"):
            pass


async def test_rejected_credentials_are_a_clear_error_on_enter(proxy: FaultProxy) -> None:
    """When GCS answers 401 (a token it does not accept), entering fails with an error naming
    the bucket and pointing at the credentials."""
    proxy.rules.append(lambda req, body: web.json_response({"error": "bad token"}, status=401))
    with pytest.raises(CacheError, match=r"bucket 'some-bucket'.*credentials"):
        async with GoogleStorageCache("some-bucket"):
            pass


# -- uploads -------------------------------------------------------------------------------------
@pytest.mark.parametrize("parts", [40, 70])
async def test_composite_upload_parts_are_hidden_then_deleted(
    gcs_server: GcsServer, gcs_bucket: str, parts: int
) -> None:
    """While a parallel composite upload is open its parts exist as hidden temporary objects that
    no listing shows; after commit the value is whole (composed in a tree: more than 32 parts,
    some merged into intermediates and the rest composed as they are, in order), its checksum is
    the CRC32C of the whole value and no part is left."""
    data = data_of(parts * 256 * KIB - 1000)
    async with GoogleStorageCache(gcs_bucket, prefix="", chunk_size=256 * KIB) as cache:
        async with cache.group("job").open_write("big") as w:
            for i in range(0, len(data), 100 * KIB):
                await w.write(data[i : i + 100 * KIB])
            await asyncio.sleep(0.2)
            assert tmp_objects(gcs_server, gcs_bucket), "parts should be uploaded already"
            assert [k async for k in cache] == []
            assert [g async for g in cache.groups()] == []
            assert [k async for k in cache.group("job")] == []
        assert tmp_objects(gcs_server, gcs_bucket) == []
        assert await cache.get("job/big") == data
        stat = await cache.stat("job/big")
        assert stat.checksum == f"crc32c:{crc32c.crc32c(data):08x}"
        assert stat.size == len(data)
        assert [g async for g in cache.groups()] == ["job"]


async def test_failed_upload_leaves_no_object_and_no_parts(
    gcs_server: GcsServer, gcs_bucket: str, proxy: FaultProxy
) -> None:
    """An upload that fails (the source raises after several parts; the server rejects the
    compose; the server rejects one part while others are in flight) leaves the previous value,
    and no temporary part behind."""
    data = data_of(3 * MIB)
    async with fast_retries(GoogleStorageCache(gcs_bucket, chunk_size=256 * KIB)) as cache:
        await cache.put("k", b"old")

        def failing() -> Iterator[bytes]:
            yield data[: 2 * MIB]
            raise OSError("source broke")

        with pytest.raises(OSError, match="source broke"):
            await cache.put_stream("k", failing())
        assert await cache.get("k") == b"old"
        assert tmp_objects(gcs_server, gcs_bucket) == []

        proxy.rules.append(
            lambda req, body: (
                web.Response(status=403, text="no compose for you")
                if req.path.endswith("/compose")
                else None
            )
        )
        with pytest.raises(CacheError, match=r"GCS put of gs://.*jobs/k failed: HTTP 403"):
            await cache.put("k", data)
        assert await cache.get("k") == b"old"
        assert [k async for k in cache] == ["k"]
        assert tmp_objects(gcs_server, gcs_bucket) == []

        uploads = {"n": 0}

        def reject_fifth_part(req: web.Request, body: bytes) -> web.StreamResponse | None:
            if req.query.get("uploadType") == "media":
                uploads["n"] += 1
                if uploads["n"] == 5:
                    return web.Response(status=403, text="quota")
            return None

        proxy.rules[:] = [reject_fifth_part]
        # parts go concurrently: the fifth request to arrive may be any part
        named = r"GCS put of gs://.*/jobs/k failed \(part \d{6}\).*HTTP 403"
        with pytest.raises(CacheError, match=named):
            await cache.put_stream(
                "k", [data[i : i + 100 * KIB] for i in range(0, len(data), 100 * KIB)]
            )
        assert await cache.get("k") == b"old"
        assert tmp_objects(gcs_server, gcs_bucket) == []


@pytest.mark.parametrize("rejected", ["intermediate", "final"])
async def test_failed_compose_tree_leaves_no_intermediates(
    gcs_server: GcsServer, gcs_bucket: str, proxy: FaultProxy, rejected: str
) -> None:
    """40 parts need a level of intermediate objects before the final compose. Whichever compose
    the server rejects (an intermediate one, or the final one after the intermediates were
    made), the put fails with the server's answer, the previous value stays, and neither parts
    nor intermediates are left."""
    data = data_of(40 * 256 * KIB)
    async with fast_retries(GoogleStorageCache(gcs_bucket, chunk_size=256 * KIB)) as cache:
        await cache.put("k", b"old")
        composes: list[str] = []

        def reject(req: web.Request, body: bytes) -> web.StreamResponse | None:
            if not req.path.endswith("/compose"):
                return None
            intermediate = "swath-tmp" in req.path
            composes.append("intermediate" if intermediate else "final")
            if intermediate == (rejected == "intermediate"):
                return web.Response(status=403, text="no compose for you")
            return None

        proxy.rules.append(reject)
        with pytest.raises(CacheError, match=r"HTTP 403"):
            await cache.put("k", data)
        assert "intermediate" in composes
        assert composes[-1] == rejected
        assert await cache.get("k") == b"old"
        assert tmp_objects(gcs_server, gcs_bucket) == []


async def test_cancelled_upload_leaves_no_object_and_no_parts(
    gcs_server: GcsServer, gcs_bucket: str, proxy: FaultProxy
) -> None:
    """A put_stream cancelled while parts are in flight leaves no object and, once the cleanup
    (shielded from the cancellation) has run, no temporary part."""
    gate = asyncio.Event()

    async def slow_source() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield data_of(256 * KIB, seed=7)
        gate.set()
        await asyncio.sleep(3600)
        yield b"never"

    async with GoogleStorageCache(gcs_bucket, chunk_size=256 * KIB) as cache:
        task = asyncio.create_task(cache.put_stream("big", slow_source()))
        await gate.wait()
        await asyncio.sleep(0.3)  # let the part uploads land
        assert tmp_objects(gcs_server, gcs_bucket)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not await cache.contains("big")
        assert gcs_server.object_names(gcs_bucket) == []


async def test_resumable_upload_in_chunks(gcs_bucket: str, proxy: FaultProxy) -> None:
    """With max_concurrency=1 a value is sent through one resumable session in chunk_size pieces
    (Content-Range 'a-b/*' until the last, which carries the total), never as one request."""
    data = data_of(2 * 512 * KIB + 100 * KIB)
    async with GoogleStorageCache(gcs_bucket, chunk_size=512 * KIB, max_concurrency=1) as cache:
        await cache.put_stream("k", [data[i : i + 70 * KIB] for i in range(0, len(data), 70 * KIB)])
        ranges = [h.get("Content-Range") for m, p, h in proxy.log if m == "PUT"]
        assert ranges == [
            f"bytes 0-{512 * KIB - 1}/*",
            f"bytes {512 * KIB}-{1024 * KIB - 1}/*",
            f"bytes {1024 * KIB}-{len(data) - 1}/{len(data)}",
        ]
        assert await cache.get("k") == data
        assert (await cache.stat("k")).checksum == f"crc32c:{crc32c.crc32c(data):08x}"


async def test_resumable_chunk_resumes_after_partial_failure(
    gcs_bucket: str, proxy: FaultProxy
) -> None:
    """Recorded exchange of a lost chunk: GCS persisted half of the second chunk, then the
    connection failed (503). The cache asks the session where it stands ('bytes */*', answered
    here as GCS answers it: 308 with Range; the emulator would finalize instead) and sends only
    the missing half; the stored value is exact."""
    chunk = 512 * KIB
    data = data_of(2 * chunk + 256 * KIB)
    state = {"persisted": 0, "failed": False}
    assert proxy.client is not None
    client = proxy.client

    async def lose_half(req: web.Request, body: bytes) -> web.StreamResponse | None:
        content_range = req.headers.get("Content-Range", "")
        if req.method != "PUT" or not content_range:
            return None
        if content_range == "bytes */*":
            return web.Response(status=308, headers={"Range": f"bytes=0-{state['persisted'] - 1}"})
        first = int(content_range.split()[1].split("-")[0])
        if first == chunk and not state["failed"]:
            state["failed"] = True
            half = body[: chunk // 2]
            headers = {"Content-Range": f"bytes {first}-{first + len(half) - 1}/*"}
            async with client.put(proxy.upstream + req.path_qs, data=half, headers=headers) as up:
                assert up.status == 308
            state["persisted"] = first + len(half)
            return web.Response(status=503, text="connection lost")
        state["persisted"] = first + len(body)
        return None

    proxy.rules.append(lose_half)
    cache = GoogleStorageCache(gcs_bucket, chunk_size=chunk, max_concurrency=1)
    async with fast_retries(cache):
        await cache.put("k", data)
        assert await cache.get("k") == data
    ranges = [h.get("Content-Range") for m, _, h in proxy.log if m == "PUT"]
    assert ranges == [
        f"bytes 0-{chunk - 1}/*",
        f"bytes {chunk}-{2 * chunk - 1}/*",  # half persisted, then 503
        "bytes */*",  # where do we stand?
        f"bytes {chunk + chunk // 2}-{2 * chunk - 1}/*",  # only the missing half
        f"bytes {2 * chunk}-{len(data) - 1}/{len(data)}",
    ]


# -- downloads and integrity ----------------------------------------------------------------------
async def test_downloads_are_concurrent_ranged_gets(gcs_bucket: str, proxy: FaultProxy) -> None:
    """stream of a multi-chunk value issues ranged GETs of chunk_size pinned to the object's
    generation (several in flight), yields exact chunks in order; get_range is one ranged GET."""
    data = data_of(10 * 256 * KIB + 5)
    async with GoogleStorageCache(gcs_bucket, chunk_size=256 * KIB, max_concurrency=4) as cache:
        await cache.put("k", data)
        proxy.log.clear()
        chunks = [c async for c in cache.stream("k", chunk_size=100_000)]
        assert b"".join(chunks) == data
        assert all(len(c) == 100_000 for c in chunks[:-1])
        gets = [(p, h.get("Range")) for m, p, h in proxy.log if m == "GET"]
        assert len(gets) == 11
        assert all("generation=" in p for p, _ in gets[1:])
        assert gets[1][1] == f"bytes={256 * KIB}-{512 * KIB - 1}"
        proxy.log.clear()
        assert await cache.get_range("k", 1000, 2000) == data[1000:2000]
        assert [(m, h.get("Range")) for m, _, h in proxy.log] == [("GET", "bytes=1000-1999")]


async def test_tampered_download_is_detected(
    gcs_bucket: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    """A download whose bytes were changed in transit fails with ChecksumMismatchError (get,
    stream, get_file; the destination file is left as it was); get_range cannot verify and
    returns the bytes."""
    data = data_of(600 * KIB)
    async with GoogleStorageCache(gcs_bucket, chunk_size=256 * KIB) as cache:
        await cache.put("small", data[:1000])
        await cache.put("big", data)

        def flip(req: web.Request, status: int, headers: dict[str, str], body: bytes) -> bytes:
            if "alt=media" in req.path_qs and body and "Range" in req.headers:
                return bytes([body[0] ^ 1]) + body[1:]
            return body

        proxy.transforms.append(flip)
        for key in ("small", "big"):
            with pytest.raises(ChecksumMismatchError):
                await cache.get(key)
            with pytest.raises(ChecksumMismatchError):
                [c async for c in cache.stream(key)]
        dst = tmp_path / "out"
        dst.write_bytes(b"keep")
        with pytest.raises(ChecksumMismatchError):
            await cache.get_file("big", dst)
        assert dst.read_bytes() == b"keep"
        assert sorted(os.listdir(tmp_path)) == ["out"]


async def test_object_rewritten_behind_the_cache_is_detected(
    gcs_server: GcsServer, gcs_bucket: str, proxy: FaultProxy
) -> None:
    """An object rewritten behind the cache's back with other bytes of the same size while its
    checksum metadata still says the old CRC32C (the emulator recomputes checksums, so the proxy
    serves the old ones) is refused on read."""
    old, new = data_of(300 * KIB, seed=1), data_of(300 * KIB, seed=2)
    async with GoogleStorageCache(gcs_bucket, prefix="p", chunk_size=256 * KIB) as cache:
        await cache.put("k", old)
        async with aiohttp.ClientSession() as s:
            url = f"{gcs_server.endpoint}/upload/storage/v1/b/{gcs_bucket}/o"
            async with s.post(url, params={"uploadType": "media", "name": "p/k"}, data=new) as r:
                assert r.status == 200
        old_b64, new_b64 = crc_to_b64(crc32c.crc32c(old)), crc_to_b64(crc32c.crc32c(new))

        def stale(req: web.Request, status: int, headers: dict[str, str], body: bytes) -> bytes:
            for name, value in list(headers.items()):
                headers[name] = value.replace(new_b64, old_b64)
            return body.replace(new_b64.encode(), old_b64.encode())

        proxy.transforms.append(stale)
        assert (await cache.stat("k")).checksum == f"crc32c:{crc32c.crc32c(old):08x}"
        with pytest.raises(ChecksumMismatchError, match="'k'"):
            await cache.get("k")
        with pytest.raises(ChecksumMismatchError):
            [c async for c in cache.stream("k", chunk_size=4096)]


async def test_upload_damaged_in_transit_is_refused_and_not_kept(
    gcs_server: GcsServer, gcs_bucket: str, proxy: FaultProxy
) -> None:
    """When the bytes GCS receives differ from those sent (a byte flipped on the way; the
    emulator, unlike GCS, does not check the CRC32C we send), the upload fails with
    ChecksumMismatchError and leaves no object behind: not the small single-request value, not
    a composite value, not its parts."""
    assert proxy.client is not None
    client = proxy.client
    small, big = data_of(100 * KIB, seed=3), data_of(1 * MIB, seed=4)

    async def damage(req: web.Request, body: bytes) -> web.StreamResponse | None:
        if req.method != "POST" or "/upload/" not in req.path:
            return None
        for original in (small, big[: 256 * KIB]):
            if original in body:
                body = body.replace(original, b"\xff" + original[1:])
        headers = {"Content-Type": req.headers["Content-Type"]}
        async with client.post(proxy.upstream + req.path_qs, data=body, headers=headers) as up:
            return web.Response(status=up.status, body=await up.read())

    async with GoogleStorageCache(gcs_bucket, chunk_size=256 * KIB) as cache:
        proxy.rules.append(damage)
        with pytest.raises(ChecksumMismatchError, match="jobs/small"):
            await cache.put("small", small)
        with pytest.raises(ChecksumMismatchError):
            await cache.put("big", big)
        proxy.rules.clear()
        assert not await cache.contains("small")
        assert not await cache.contains("big")
        assert gcs_server.object_names(gcs_bucket) == []


# -- errors and retries --------------------------------------------------------------------------
async def test_transient_errors_are_retried_then_named(gcs_bucket: str, proxy: FaultProxy) -> None:
    """Two 503s in a row are retried transparently; a server that keeps failing gives a
    CacheError naming the operation, the bucket and the object."""
    async with fast_retries(GoogleStorageCache(gcs_bucket)) as cache:
        await cache.put("k", b"value")
        budget = {"n": 2}

        def flaky(req: web.Request, body: bytes) -> web.StreamResponse | None:
            if req.method == "GET" and budget["n"] > 0:
                budget["n"] -= 1
                return web.Response(status=503, text="try later")
            return None

        proxy.rules.append(flaky)
        assert await cache.get("k") == b"value"
        assert budget["n"] == 0
        proxy.rules[:] = [lambda req, body: web.Response(status=503, text="down")]
        with pytest.raises(
            CacheError, match=rf"GCS read of gs://{gcs_bucket}/jobs/k failed after 3 attempts"
        ):
            await cache.get("k")
        with pytest.raises(CacheError, match=rf"GCS delete of gs://{gcs_bucket}/jobs/gone"):
            await cache.delete("gone")
    with pytest.raises(KeyNotFoundError):
        proxy.rules.clear()
        async with GoogleStorageCache(gcs_bucket) as cache:
            await cache.delete("gone")


def test_bad_arguments_are_clear_errors() -> None:
    """chunk_size must be a positive multiple of 256 KiB, max_concurrency >= 1, the bucket a
    name; a prefix follows the key rules."""
    with pytest.raises(ValueError, match="256 KiB"):
        GoogleStorageCache("b", chunk_size=1000)
    with pytest.raises(ValueError, match="max_concurrency"):
        GoogleStorageCache("b", max_concurrency=0)
    with pytest.raises(ValueError, match="bucket"):
        GoogleStorageCache("")
    with pytest.raises(ValueError, match="key"):
        GoogleStorageCache("b", prefix="a/../b")


def test_prefix_too_long_for_temporary_parts_is_refused() -> None:
    """A prefix so long that the hidden temporary parts of a composite upload below it would
    have object names over GCS's 1,024 bytes is refused when the cache is made (the emulator
    accepts such names, real GCS answers 400 in the middle of an upload); the longest prefix
    that leaves room for them is accepted."""
    longest = 1024 - len("/\\swath-tmp/") - len("0123456789abcdef/c1-000000")
    cache = GoogleStorageCache("b", prefix="p" * longest)
    assert len((cache._tmp_root + "0123456789abcdef/c1-000000").encode()) == 1024
    with pytest.raises(InvalidKeyError, match=f"may be {longest} UTF-8 bytes"):
        GoogleStorageCache("b", prefix="p" * (longest + 1))


# -- memory --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_256mib_streamed_in_and_out_keeps_rss_bounded(
    gcs_server: GcsServer, gcs_bucket: str
) -> None:
    """put_stream of 256 MiB and stream of it back (default chunk_size 8 MiB, max_concurrency 8)
    grow peak RSS by less than chunk_size x (max_concurrency + 2) + 32 MiB, in a fresh process."""
    size = 256 * MIB
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.conformance._worker",
            "rss",
            f"gs://{gcs_bucket}/j",
            str(size),
        ],
        cwd=ROOT,
        env={**os.environ, "STORAGE_EMULATOR_HOST": gcs_server.endpoint},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["written"] == report["read"] == size
    growth = max(report["after_write"], report["after_read"]) - report["base"]
    budget = 8 * MIB * (8 + 2) + 32 * MIB
    assert growth < budget, f"peak RSS grew by {growth / MIB:.1f} MiB (budget {budget / MIB} MiB)"


# -- listing (last: fake-gcs-server's per-request cost grows with the number of objects it holds)
async def test_pagination_across_2500_keys(gcs_bucket: str, proxy: FaultProxy) -> None:
    """Listing a group of 2,500 keys (and a few subgroups) walks three pages (pageToken) lazily:
    every key once, in order, subgroups apart; a consumer that stops after the first key has
    fetched one page only."""
    async with GoogleStorageCache(gcs_bucket, max_concurrency=2) as cache:
        job = cache.group("job")
        sem = asyncio.Semaphore(16)

        async def put(key: str) -> None:
            async with sem:
                await job.put(key, b"x")

        await asyncio.gather(*(put(f"k{i:05d}") for i in range(2500)))
        await asyncio.gather(*(put(f"g{i}/v") for i in range(3)))
        proxy.log.clear()
        keys = [k async for k in job]
        pages = [p for m, p, _ in proxy.log if m == "GET" and "/o?" in p]
        assert keys == [f"k{i:05d}" for i in range(2500)]
        assert len(pages) == 3
        assert sum("pageToken" in p for p in pages) == 2
        assert [g async for g in job.groups()] == ["g0", "g1", "g2"]
        proxy.log.clear()
        async for _first in job:
            break
        assert len([p for m, p, _ in proxy.log if m == "GET"]) == 1
