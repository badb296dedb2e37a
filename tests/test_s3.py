"""AmazonS3Cache against two real S3 servers: ``moto_server`` and ``rclone serve s3``.

The conformance suite runs on moto through ``BACKENDS``. rclone serves S3 from a file-system
model (its VFS) in which a name cannot be a file and a directory at once, so it cannot hold a key
that is also a group; the rest of the conformance suite runs on it from this module (the
``cache_factory`` fixture below is rclone's), with the two rules it cannot hold left out. The
large-object tests (SIGKILL mid-upload, 1 GiB streamed with flat RSS) run on rclone only: moto
keeps objects in memory and a ranged GET there costs time in proportion to the whole object.

Every test gets a fresh bucket (``tests/services/s3.py``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3.s3.transfer  # type: ignore[import-untyped]
import crc32c
import pytest

from swath.cache import cache_from_url
from swath.cache.s3 import AmazonS3Cache, crc32c_combine
from swath.errors import CacheError, ChecksumMismatchError, InvalidKeyError, KeyNotFoundError
from tests.conformance import test_cache_contract as contract
from tests.conformance import test_durability as durability
from tests.conformance.backends import BackendFactory
from tests.services.s3 import S3Server

MiB = 1 << 20
SMALL_PART = 5 * MiB  # S3's minimum part size: multipart tests stay small

# -- the conformance suite on rclone ---------------------------------------------------------------
RCLONE_CANNOT_HOLD = {
    # a key that is also a group: rclone's VFS has no file and directory of the same name
    "test_name_can_be_key_and_group",
    "test_clear_removes_group_and_below_only",
}
for _name in dir(contract):
    if _name.startswith("test_") and _name not in RCLONE_CANNOT_HOLD:
        globals()[f"{_name}_on_rclone"] = getattr(contract, _name)


@pytest.fixture
def cache_factory(factory_s3_rclone: BackendFactory) -> BackendFactory:
    """In this module, the conformance tests above run on rclone serve s3."""
    return factory_s3_rclone


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(params=["moto", "rclone"])
def server(request: pytest.FixtureRequest, aws_env: None) -> S3Server:
    found = request.getfixturevalue(f"{request.param}_s3")
    assert isinstance(found, S3Server)
    return found


@pytest.fixture
def bucket(server: S3Server) -> Iterator[str]:
    name = server.create_bucket()
    yield name
    server.drop_bucket(name)


class Wire:
    """Records the requests a cache's own client puts on the wire (headers and body CRC)."""

    def __init__(self, cache: AmazonS3Cache) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        cache._client.meta.events.register("before-send.s3", self._record)

    def _record(self, request: Any, event_name: str, **_: Any) -> None:
        headers = {
            k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()
        }
        self.requests.append((event_name.rsplit(".", 1)[-1], headers, request.body))

    def of(self, operation: str) -> list[tuple[dict[str, str], Any]]:
        return [(h, b) for op, h, b in self.requests if op == operation]


def b64crc(data: bytes) -> str:
    return base64.b64encode(crc32c.crc32c(data).to_bytes(4, "big")).decode()


def body_bytes(body: Any) -> bytes:
    if hasattr(body, "view"):
        return bytes(body.view)
    return bytes(body or b"")


# -- pure ------------------------------------------------------------------------------------------
def test_crc32c_combine_matches_direct_computation() -> None:
    """crc32c_combine(crc(a), crc(b), len(b)) is crc(a + b) for empty, odd and part-sized b,
    so the whole-object checksum of a multipart upload is right without hashing twice."""
    a = os.urandom(1000)
    for size in (0, 1, 7, 4096, 65_537, SMALL_PART):
        b = os.urandom(size)
        assert crc32c_combine(crc32c.crc32c(a), crc32c.crc32c(b), size) == crc32c.crc32c(a + b)
    parts = [os.urandom(SMALL_PART) for _ in range(3)] + [os.urandom(12345)]
    whole = 0
    for part in parts:
        whole = crc32c_combine(whole, crc32c.crc32c(part), len(part))
    assert whole == crc32c.crc32c(b"".join(parts))


def test_constructor_refuses_bad_options() -> None:
    """Bad bucket, part size (S3 needs at least 5 MiB parts), concurrency or prefix are clear
    ValueErrors at construction, before any I/O."""
    with pytest.raises(ValueError, match="bucket"):
        AmazonS3Cache("")
    with pytest.raises(ValueError, match="part_size"):
        AmazonS3Cache("b", part_size=1 << 20)
    with pytest.raises(ValueError, match="max_concurrency"):
        AmazonS3Cache("b", max_concurrency=0)
    with pytest.raises(ValueError, match="key"):
        AmazonS3Cache("b", prefix="a//b")
    cache = cache_from_url("s3://my-bucket/some/prefix")
    assert isinstance(cache, AmazonS3Cache)
    assert (cache.bucket, cache.prefix, cache.url()) == (
        "my-bucket",
        "some/prefix",
        "s3://my-bucket/some/prefix",
    )


# -- layout ----------------------------------------------------------------------------------------
async def test_object_names_are_prefix_job_key(
    moto_s3: S3Server, s3_moto_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's key a/b is the object <prefix>/<job>/a/b (no prefix with prefix=""); caches with
    other prefixes in the same bucket do not see it; the URL form reaches the same objects."""
    bucket = s3_moto_bucket
    async with moto_s3.make_cache(bucket, prefix="jobs") as cache:
        await cache.group("job-1").put("a/b", b"x")
    async with moto_s3.make_cache(bucket, prefix="") as bare:
        await bare.group("job-2").put("k", b"y")
        assert [g async for g in bare.groups()] == ["job-2", "jobs"]
    assert sorted(moto_s3.object_keys(bucket)) == ["job-2/k", "jobs/job-1/a/b"]
    async with moto_s3.make_cache(bucket, prefix="other") as other:
        assert [g async for g in other.groups()] == []
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_s3.endpoint)
    async with cache_from_url(f"s3://{bucket}/jobs") as via_url:
        assert await via_url.get("job-1/a/b") == b"x"


async def test_prefix_and_key_beyond_1024_bytes_is_invalid_before_io(
    moto_s3: S3Server, s3_moto_bucket: str
) -> None:
    """With prefix "jobs" (5 bytes with its '/'), a 1019-byte key fits S3's 1024-byte object key
    and a 1020-byte key is InvalidKeyError naming the limit, with nothing sent."""
    bucket = s3_moto_bucket
    async with moto_s3.make_cache(bucket, prefix="jobs") as cache:
        await cache.put("k" * 1019, b"fits")
        assert await cache.get("k" * 1019) == b"fits"
        with pytest.raises(InvalidKeyError, match="1024"):
            await cache.put("k" * 1020, b"too long")
        with pytest.raises(InvalidKeyError, match="1024"):
            await cache.get("k" * 1020)
    assert moto_s3.object_keys(bucket) == ["jobs/" + "k" * 1019]


# -- integrity -------------------------------------------------------------------------------------
async def test_contains_of_a_foreign_object_reads_no_data(server: S3Server, bucket: str) -> None:
    """contains() of an object swath did not write (no recorded CRC32C) is one HEAD request:
    it does not download the object to compute a checksum, as stat must."""
    server.client.put_object(Bucket=bucket, Key="foreign", Body=b"z" * (3 * MiB))
    async with server.make_cache(bucket) as cache:
        wire = Wire(cache)
        assert await cache.contains("foreign") is True
        assert [op for op, _, _ in wire.requests] == ["HeadObject"]


async def test_crc32c_sent_with_every_upload(server: S3Server, bucket: str) -> None:
    """PutObject carries the value's CRC32C (header and swath metadata); each UploadPart carries
    its part's CRC32C; CompleteMultipartUpload carries every part's and the whole object's as a
    FULL_OBJECT checksum. stat then reports the whole CRC on both servers."""
    small = os.urandom(1000)
    large = os.urandom(2 * SMALL_PART + 12345)
    async with server.make_cache(bucket, part_size=SMALL_PART, max_concurrency=2) as cache:
        wire = Wire(cache)
        await cache.put("small", small)
        await cache.put_stream("large", (large[i : i + MiB] for i in range(0, len(large), MiB)))
        (put_headers, put_body), *_ = wire.of("PutObject")
        assert put_headers["x-amz-checksum-crc32c"] == b64crc(small)
        assert put_headers["x-amz-meta-swath-crc32c"] == f"{crc32c.crc32c(small):08x}"
        assert body_bytes(put_body) == small
        parts = wire.of("UploadPart")
        assert len(parts) == 3
        bodies = sorted((body_bytes(b) for _, b in parts), key=large.index)
        assert b"".join(bodies) == large
        for headers, body in parts:
            assert headers["x-amz-checksum-crc32c"] == b64crc(body_bytes(body))
        ((complete_headers, complete_body),) = wire.of("CompleteMultipartUpload")
        assert complete_headers["x-amz-checksum-crc32c"] == b64crc(large)
        assert complete_headers["x-amz-checksum-type"] == "FULL_OBJECT"
        xml = body_bytes(complete_body).decode()
        assert re.findall(r"<ChecksumCRC32C>([^<]+)</ChecksumCRC32C>", xml) == [
            b64crc(part) for part in bodies
        ]
        # moto keeps the FULL_OBJECT checksum; rclone drops it and gets swath's metadata instead
        assert len(wire.of("CopyObject")) == (1 if server.kind == "rclone" else 0)
        assert (await cache.stat("small")).checksum == f"crc32c:{crc32c.crc32c(small):08x}"
        assert (await cache.stat("large")).checksum == f"crc32c:{crc32c.crc32c(large):08x}"
        assert await cache.get("large") == large


async def _tamper(server: S3Server, bucket: str, key: str) -> None:
    """Replace an object's bytes behind the cache's back (same size, one byte flipped), keeping
    its recorded checksum, as a bit flip at rest would."""
    head = server.client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    data = bytearray(server.client.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0x01
    metadata = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
    if "swath-crc32c" not in metadata:  # the checksum lived as S3's FULL_OBJECT CRC32C
        metadata["swath-crc32c"] = base64.b64decode(head["ChecksumCRC32C"]).hex()
    # boto3 signs the payload, which rclone rejects for bodies of several MiB: upload unsigned
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.seek(0)
        server.client.upload_fileobj(
            f, bucket, key, ExtraArgs={"Metadata": metadata},
            Config=boto3.s3.transfer.TransferConfig(multipart_threshold=1 << 30),
        )  # fmt: skip


async def test_tampered_object_is_detected_on_read(
    server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """An object changed behind the cache's back fails get, stream (after its data) and get_file
    (leaving the destination untouched) with ChecksumMismatchError, small or multipart."""
    small = os.urandom(4096)
    large = os.urandom(2 * SMALL_PART + 999)
    async with server.make_cache(bucket, part_size=SMALL_PART, max_concurrency=2) as cache:
        await cache.put("small", small)
        await cache.put("large", large)
        for key in ("small", "large"):
            await _tamper(server, bucket, key)
            with pytest.raises(ChecksumMismatchError, match=key):
                await cache.get(key)
            with pytest.raises(ChecksumMismatchError):
                [chunk async for chunk in cache.stream(key, chunk_size=MiB)]
            dst = tmp_path / "dst"
            dst.write_bytes(b"keep")
            with pytest.raises(ChecksumMismatchError):
                await cache.get_file(key, dst)
            assert dst.read_bytes() == b"keep"
            assert sorted(os.listdir(tmp_path)) == ["dst"]


# -- multipart failure and cancellation ------------------------------------------------------------
async def test_multipart_aborted_when_the_source_fails(server: S3Server, bucket: str) -> None:
    """A put_stream whose source raises after three parts' worth leaves the old value, no new
    object and no multipart upload on the server (ListMultipartUploads is empty)."""
    async with server.make_cache(bucket, part_size=SMALL_PART, max_concurrency=2) as cache:
        await cache.put("k", b"old")

        def source() -> Iterator[bytes]:
            for _ in range(16):
                yield os.urandom(MiB)
            raise RuntimeError("source broke")

        with pytest.raises(RuntimeError, match="source broke"):
            await cache.put_stream("k", source())
        with pytest.raises(RuntimeError, match="source broke"):
            await cache.put_stream("new", source())
        assert await cache.get("k") == b"old"
        assert not await cache.contains("new")
    assert server.pending_uploads(bucket) == []
    assert server.object_keys(bucket) == ["k"]


async def test_multipart_aborted_on_cancellation(server: S3Server, bucket: str) -> None:
    """A task cancelled while its multipart upload is in progress (the upload is seen on the
    server first) leaves no upload behind, no object and no group."""
    started = asyncio.Event()
    async with server.make_cache(bucket, part_size=SMALL_PART, max_concurrency=2) as cache:

        async def writer() -> None:
            async with cache.open_write("grp/big") as w:
                for _ in range(3 * SMALL_PART // MiB):
                    await w.write(os.urandom(MiB))
                await w.write(b"x")
                started.set()
                await asyncio.sleep(3600)

        task = asyncio.create_task(writer())
        await asyncio.wait_for(started.wait(), 60)
        assert server.pending_uploads(bucket) == ["grp/big"]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not await cache.contains("grp/big")
        # rclone keeps the directory the upload made: it must not show as a group
        assert [g async for g in cache.groups()] == []
    assert server.pending_uploads(bucket) == []
    assert server.object_keys(bucket) == []


# -- errors ----------------------------------------------------------------------------------------
async def test_missing_bucket_is_a_clear_error_on_enter(server: S3Server) -> None:
    """Entering a cache on a bucket that does not exist fails at once, naming the bucket."""
    cache = server.make_cache("swath-no-such-bucket")
    with pytest.raises(CacheError, match=r"'swath-no-such-bucket'.*does not exist"):
        async with cache:
            pass
    assert not cache.is_open


async def test_bad_credentials_are_a_clear_error_on_enter(
    rclone_s3: S3Server, s3_rclone_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a wrong secret key (rclone checks signatures) entering fails at once, naming the
    bucket and pointing at the credentials."""
    bucket = s3_rclone_bucket
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(CacheError, match=rf"'{bucket}'.*denied.*credentials"):
        async with rclone_s3.make_cache(bucket):
            pass


async def test_failures_name_operation_bucket_and_key(
    moto_s3: S3Server, s3_moto_bucket: str
) -> None:
    """When S3 refuses an operation (here: the bucket vanished after the cache was opened), the
    CacheError names the S3 operation, the bucket and the object key."""
    bucket = s3_moto_bucket
    async with moto_s3.make_cache(bucket, prefix="jobs") as cache:
        moto_s3.client.delete_bucket(Bucket=bucket)
        with pytest.raises(CacheError) as info:
            await cache.put("some/key", b"x")
        message = str(info.value)
        assert "PutObject" in message
        assert repr(bucket) in message
        assert "jobs/some/key" in message
        with pytest.raises(CacheError, match="GetObject"):
            await cache.get("some/key")


class FlakyProxy:
    """A TCP proxy in front of a real S3 server that breaks the connections it is told to, in
    order of arrival: ``"503"`` answers the first request with 503 SlowDown and closes;
    ``"cut"`` relays the connection but closes it after ``cut_after`` bytes of answers (so a
    large body breaks in the middle); anything else relays faithfully."""

    def __init__(self, upstream_port: int, plan: list[str], cut_after: int = MiB) -> None:
        self.upstream_port = upstream_port
        self.plan = list(plan)
        self.cut_after = cut_after
        self.seen: list[str] = []
        self.cuts = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> FlakyProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self.plan.pop(0) if self.plan else "pass"
        self.seen.append(mode)
        try:
            if mode == "503":
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                if length:
                    await reader.readexactly(int(length.group(1)))
                body = b"<Error><Code>SlowDown</Code><Message>slow down</Message></Error>"
                writer.write(
                    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                    + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            limit = self.cut_after if mode == "cut" else None

            async def pump(
                src: asyncio.StreamReader, dst: asyncio.StreamWriter, cap: int | None
            ) -> None:
                sent = 0
                while data := await src.read(65536):
                    if cap is not None and sent + len(data) > cap:
                        dst.write(data[: cap - sent])
                        await dst.drain()
                        self.cuts += 1
                        return
                    dst.write(data)
                    await dst.drain()
                    sent += len(data)

            tasks = [
                asyncio.create_task(pump(reader, up_writer, None)),
                asyncio.create_task(pump(up_reader, writer, limit)),
            ]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            up_writer.close()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def test_transient_failures_are_retried(rclone_s3: S3Server, s3_rclone_bucket: str) -> None:
    """A 503 SlowDown on entering and a response body cut off in the middle of a GET are retried
    (with back-off, on new connections): the caller sees the right value, not an error."""
    data = os.urandom(3 * MiB)
    async with rclone_s3.make_cache(s3_rclone_bucket) as direct:
        await direct.put("k", data)
    async with FlakyProxy(rclone_s3.port, ["503", "cut", "cut"]) as proxy:
        cache = AmazonS3Cache(
            s3_rclone_bucket, prefix="", endpoint_url=f"http://127.0.0.1:{proxy.port}"
        )
        async with cache:
            assert await cache.get("k") == data
        assert proxy.seen[0] == "503"
        assert proxy.cuts >= 1  # a GET's body really broke in the middle, and was read again


# -- listing, clearing, reading --------------------------------------------------------------------
async def test_2500_keys_listed_once_across_pages_and_cleared_in_batches(
    rclone_s3: S3Server, s3_rclone_bucket: str
) -> None:
    """2,500 keys in a group are listed exactly once over three ListObjectsV2 pages, and clear()
    removes them with three DeleteObjects batches of at most 1,000 (on rclone: 2,500 PUTs to moto
    take half a minute)."""
    server, bucket = rclone_s3, s3_rclone_bucket
    async with server.make_cache(bucket) as cache:
        group = cache.group("many")
        limit = asyncio.Semaphore(32)

        async def put(i: int) -> None:
            async with limit:
                await group.put(f"k{i:05d}", b"v")

        await asyncio.gather(*(put(i) for i in range(2500)))
        wire = Wire(cache)
        keys = [k async for k in group]
        assert keys == [f"k{i:05d}" for i in range(2500)]
        assert len(wire.of("ListObjectsV2")) == 3
        await cache.clear()
        assert len(wire.of("DeleteObjects")) == 3
        assert [k async for k in group] == []
    assert server.object_keys(bucket) == []


async def test_large_reads_are_concurrent_ranges_in_order(
    rclone_s3: S3Server, s3_rclone_bucket: str
) -> None:
    """A value of several parts is read as part-sized ranged GETs (rclone answers each with 200
    and Content-Range), yielded in order in exact chunks; get_range is one ranged GET."""
    bucket = s3_rclone_bucket
    data = os.urandom(4 * SMALL_PART + 777)
    raw = rclone_s3.client.put_object  # written by another tool: swath reads it all the same
    async with rclone_s3.make_cache(bucket, part_size=SMALL_PART, max_concurrency=3) as cache:
        await cache.put("big", data)
        answer = rclone_s3.client.get_object(Bucket=bucket, Key="big", Range="bytes=10-19")
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200  # the quirk is real
        wire = Wire(cache)
        chunks = [c async for c in cache.stream("big", chunk_size=3 * MiB)]
        assert b"".join(chunks) == data
        assert all(len(c) == 3 * MiB for c in chunks[:-1])
        ranges = [h.get("range") for h, _ in wire.of("GetObject")]
        assert ranges == [
            f"bytes={s}-{min(s + SMALL_PART, len(data)) - 1}"
            for s in range(0, len(data), SMALL_PART)
        ]
        wire.requests.clear()
        assert (
            await cache.get_range("big", SMALL_PART - 5, SMALL_PART + 5)
            == data[SMALL_PART - 5 : SMALL_PART + 5]
        )
        assert [h.get("range") for h, _ in wire.of("GetObject")] == [
            f"bytes={SMALL_PART - 5}-{SMALL_PART + 4}"
        ]
        raw(Bucket=bucket, Key="foreign", Body=data[:1000])
        assert await cache.get("foreign") == data[:1000]
        assert (await cache.stat("foreign")).checksum == f"crc32c:{crc32c.crc32c(data[:1000]):08x}"
        with pytest.raises(KeyNotFoundError):
            await cache.get_range("nothing", 0, 1)


async def test_put_file_and_get_file_multipart(
    server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """put_file of a file of several parts uploads it as a multipart upload and get_file
    brings back the same bytes, with the whole CRC32C recorded."""
    data = os.urandom(2 * SMALL_PART + 4321)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    async with server.make_cache(bucket, part_size=SMALL_PART, max_concurrency=2) as cache:
        wire = Wire(cache)
        assert await cache.put_file("f", src) == len(data)
        assert len(wire.of("UploadPart")) == 3
        dst = tmp_path / "dst.bin"
        assert await cache.get_file("f", dst) == len(data)
        assert dst.read_bytes() == data
        assert (await cache.stat("f")).checksum == f"crc32c:{crc32c.crc32c(data):08x}"
    assert server.pending_uploads(bucket) == []


# -- large objects on rclone -----------------------------------------------------------------------
@pytest.mark.slow
async def test_sigkill_mid_upload_leaves_no_visible_object_rclone(
    factory_s3_rclone: BackendFactory,
) -> None:
    """The conformance suite's SIGKILL test on rclone with 256 MiB writes: a process killed in
    the middle of two multipart uploads leaves the old value and no visible new object."""
    await durability.test_sigkill_mid_write_leaves_previous_state(factory_s3_rclone)


@pytest.mark.slow
def test_streaming_1gib_keeps_rss_flat_rclone(factory_s3_rclone: BackendFactory) -> None:
    """The conformance suite's RSS test on rclone: 1 GiB through put_stream and stream grows
    peak RSS by less than part_size x (max_concurrency + 2) + 32 MiB."""
    durability.test_streaming_1gib_keeps_rss_flat(factory_s3_rclone)


_ONE_GET_READER = """
import asyncio, json, resource, sys
from swath.cache.s3 import AmazonS3Cache

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

async def main(endpoint, bucket, part):
    async with AmazonS3Cache(bucket, prefix="", endpoint_url=endpoint, part_size=part) as cache:
        [c async for c in cache.stream("small")]
        base = peak()
        read = 0
        async for piece in cache.stream("big"):
            read += len(piece)
    print(json.dumps({"read": read, "growth": peak() - base}))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


@pytest.mark.slow
async def test_one_get_read_is_streamed_not_held_rclone(
    rclone_s3: S3Server, s3_rclone_bucket: str
) -> None:
    """A value that fits in one part (part_size 256 MiB, value 128 MiB) is read by one GET whose
    body is passed on as it arrives: the reading process's peak RSS grows by less than 48 MiB
    (holding the body whole, as the reader once did, costs at least the value's 128 MiB)."""
    size = 128 * MiB
    async with rclone_s3.make_cache(s3_rclone_bucket) as cache:
        await cache.put("small", b"warm-up")
        block = os.urandom(MiB)
        await cache.put_stream("big", (block for _ in range(size // MiB)))
    argv = [sys.executable, "-c", _ONE_GET_READER, rclone_s3.endpoint, s3_rclone_bucket]
    proc = await asyncio.to_thread(
        subprocess.run,
        [*argv, str(256 * MiB)],
        env={**os.environ, **rclone_s3.env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["read"] == size
    assert report["growth"] < 48 * MiB, f"peak RSS grew by {report['growth'] / MiB:.0f} MiB"
