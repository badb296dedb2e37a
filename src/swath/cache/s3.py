"""AmazonS3Cache: values as S3 objects, streamed with concurrent multipart uploads and ranged GETs.

Layout: the value of key path ``(job, "a", "b")`` is the object ``<prefix>/job/a/b`` (no prefix if
``prefix=""``); a group is the key prefix ``.../a/``, so a name can be a key and a group at once.
No other object is ever written: a value is made visible by one PutObject or one
CompleteMultipartUpload, both atomic, so there are no temporaries to hide or clean up.

Writes: up to ``part_size`` bytes go as one PutObject; beyond that a multipart upload starts and
parts are uploaded as the source produces them, at most ``max_concurrency`` at a time, so a write
holds about ``part_size x (max_concurrency + 1)`` bytes. Any error or cancellation aborts the
multipart upload (shielded from the cancellation), leaving no parts behind.

Integrity: swath computes CRC32C itself (``swath.cache._checksum``) and passes it explicitly
(``ChecksumCRC32C``) with every PutObject and UploadPart, which S3 verifies on arrival. The
whole-object checksum is recorded where S3 keeps it:

* PutObject: as the object's CRC32C checksum and in the metadata ``x-amz-meta-swath-crc32c``;
* multipart: as a ``FULL_OBJECT`` CRC32C checksum on CompleteMultipartUpload (S3 combines the part
  checksums and refuses the upload if they disagree with it). The whole-object CRC is combined
  from the part CRCs, so no byte is hashed twice. Servers that drop full-object checksums (rclone
  serve s3 does) are detected by a HeadObject after completion, and the checksum is then attached
  as metadata by a metadata-only CopyObject onto itself, guarded by ``CopySourceIfMatch``.

Whole reads (``get``, ``stream``, ``get_file``) verify the CRC32C of everything they return and
raise :class:`~swath.errors.ChecksumMismatchError` on a mismatch. Botocore's own response
validation is off (``response_checksum_validation="when_required"``): it cannot check ranges,
and it wrongly rejects servers that replay a full-object checksum on a range answer.

Reads: one GET for values up to ``part_size``; larger ones are read as ``part_size`` ranges, up to
``max_concurrency`` in flight, yielded in order. A server may answer a range with 200 plus
Content-Range (rclone does): that is accepted.

Errors: botocore's "standard" retry mode retries throttling, 5xx and connection errors with
exponential back-off; a body that breaks while being read is re-requested here. What still fails
becomes :class:`~swath.errors.CacheError` naming the operation, the bucket and the object.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import os
import random
import re
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import aiohttp.abc
import aiohttp.payload
import anyio
import anyio.to_thread
import botocore.loaders
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from swath._urls import refuse_credentials
from swath.cache import _checksum
from swath.cache._base import Backend, BackendWriter, Stat, missing
from swath.cache.keys import Path, join, object_name, split_key
from swath.errors import CacheError, ChecksumMismatchError, InvalidKeyError

log = logging.getLogger(__name__)

META_CRC = "swath-crc32c"  # x-amz-meta-swath-crc32c: the whole value's CRC32C, 8 hex digits
MIN_PART_SIZE = 5 << 20  # S3's minimum for every part but the last
MAX_PART_SIZE = 5 << 30
MAX_PARTS = 10_000
MAX_OBJECT_KEY_BYTES = 1024  # S3's limit for a whole object key
THREAD_CRC_ABOVE = 1 << 20  # CRC larger buffers in a worker thread (crc32c releases the GIL)
BODY_SLICE = 1 << 20  # request bodies are handed to the socket in slices of this size
READ_ATTEMPTS = 5  # for a response body that breaks while being read

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


# -- request bodies without copies ---------------------------------------------------------------
class _Body:
    """A request body over a buffer, sent without copying it.

    Botocore takes any object with ``read`` (and ``seek``/``tell`` to rewind for a retry); aiohttp
    sends it through :class:`_BodyPayload`, which hands memoryview slices to the socket. Passing
    ``bytes`` instead would make botocore wrap it in a BytesIO that aiohttp reads in a worker
    thread 256 KiB at a time, and a ``bytearray`` would be copied whole into the transport."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data
        self.pos = 0

    def __len__(self) -> int:
        return self.view.nbytes - self.pos

    def read(self, n: int | None = -1) -> bytes:
        end = self.view.nbytes if n is None or n < 0 else min(self.view.nbytes, self.pos + n)
        out = bytes(self.view[self.pos : end])
        self.pos = end
        return out

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.view.nbytes}[whence]
        self.pos = max(0, min(self.view.nbytes, base + offset))
        return self.pos

    def tell(self) -> int:
        return self.pos


class _BodyPayload(aiohttp.payload.Payload):
    _value: _Body

    def __init__(self, value: _Body, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("content_type", "application/octet-stream")
        super().__init__(value, *args, **kwargs)
        self._size = len(value)

    async def write(self, writer: aiohttp.abc.AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: aiohttp.abc.AbstractStreamWriter, content_length: int | None
    ) -> None:
        view = self._value.view
        pos = self._value.pos
        end = view.nbytes if content_length is None else min(view.nbytes, pos + content_length)
        while pos < end:
            step = min(BODY_SLICE, end - pos)
            await writer.write(view[pos : pos + step])
            pos += step

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._value.view[self._value.pos :]).decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return bytes(self._value.view[self._value.pos :])


aiohttp.payload.PAYLOAD_REGISTRY.register(_BodyPayload, _Body)


# -- checksums -----------------------------------------------------------------------------------
async def _crc(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    if len(data) >= THREAD_CRC_ABOVE:
        return await anyio.to_thread.run_sync(_checksum.update, crc, data)
    return _checksum.update(crc, data)


def _b64(crc: int) -> str:
    return base64.b64encode(crc.to_bytes(4, "big")).decode("ascii")


def _gf2_times(matrix: tuple[int, ...], vector: int) -> int:
    total = 0
    i = 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


def _gf2_square(matrix: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(_gf2_times(matrix, matrix[n]) for n in range(32))


@functools.lru_cache(maxsize=64)
def _shift_operator(length: int) -> tuple[int, ...]:
    """The GF(2) matrix that advances a CRC32C register over ``length`` zero bytes."""
    result = tuple(1 << n for n in range(32))  # identity
    # operator for one zero bit, then squared up to one zero byte
    power = (0x82F63B78, *(1 << n for n in range(31)))
    for _ in range(3):
        power = _gf2_square(power)
    while length:
        if length & 1:
            result = tuple(_gf2_times(power, result[n]) for n in range(32))
        length >>= 1
        if length:
            power = _gf2_square(power)
    return result


def crc32c_combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC32C of ``a + b`` from ``crc(a)``, ``crc(b)`` and ``len(b)`` (as zlib's
    ``crc32_combine``); the operator for each length is cached, so equal parts cost 32 steps."""
    if length2 <= 0:
        return crc1
    return _gf2_times(_shift_operator(length2), crc1) ^ crc2


def _recorded_crc(response: dict[str, Any], whole: bool) -> int | None:
    """The whole value's CRC32C recorded with an object: swath's metadata, else S3's own
    full-object CRC32C checksum (trusted only on answers about the whole object)."""
    meta = response.get("Metadata") or {}
    # header names are case-insensitive: rclone answers "Swath-Crc32c"
    text = next((v for k, v in meta.items() if k.lower() == META_CRC), None)
    if text:
        with contextlib.suppress(ValueError):
            return int(text, 16)
    value = response.get("ChecksumCRC32C")
    if (
        whole
        and value
        and "-" not in value
        and response.get("ChecksumType") in (None, "FULL_OBJECT")
    ):
        with contextlib.suppress(ValueError):
            raw = base64.b64decode(value, validate=True)
            if len(raw) == 4:
                return int.from_bytes(raw, "big")
    return None


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _is_missing(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and _error_code(exc) in _NOT_FOUND


def _segment_ok(name: str) -> bool:
    if not name or "/" in name:
        return False
    try:
        split_key(name)
    except InvalidKeyError:
        return False
    return True


_BODY_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    asyncio.TimeoutError,
    asyncio.IncompleteReadError,
    BotoCoreError,
    ConnectionError,
)


class _ShortRead(Exception):
    """A response body shorter (or placed otherwise) than its headers promised."""


_RETRIED_READ_ERRORS: tuple[type[BaseException], ...] = (*_BODY_ERRORS, _ShortRead)


# -- the writer ----------------------------------------------------------------------------------
class _S3Writer(BackendWriter):
    """Buffers up to ``part_size``; beyond it, runs a multipart upload with bounded concurrency.

    Part buffers are allocated at full size once and reused when their upload is done (at most
    ``max_concurrency + 1`` exist), so a long stream costs no reallocation and no page faults."""

    def __init__(self, cache: AmazonS3Cache, name: str) -> None:
        self._cache = cache
        self._name = name
        self._fill: bytearray | None = None  # the part being filled
        self._borrowed: memoryview | None = None  # or a whole part of the caller's bytes
        self._filled = 0
        self._pool: list[bytearray] = []
        self._upload_id: str | None = None
        self._parts: dict[int, tuple[str, int, int]] = {}  # number -> (etag, crc, size)
        self._next = 1
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(cache.max_concurrency)
        self._error: BaseException | None = None
        self._done = False

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    async def write(self, data: memoryview) -> None:
        self._check()
        size = self._cache.part_size
        while data:
            if self._filled == size:  # full, and more data comes: it is a part
                await self.add_part(*self._take())
                continue
            if not self._filled and len(data) >= size and isinstance(data.obj, bytes):
                # a whole part of an immutable bytes object: keep a view of it, copy nothing
                self._borrowed, self._filled = data[:size], size
                data = data[size:]
                continue
            if self._fill is None:
                self._fill = self._pool.pop() if self._pool else bytearray(size)
            n = min(size - self._filled, len(data))
            self._fill[self._filled : self._filled + n] = data[:n]
            self._filled += n
            data = data[n:]

    def _take(self) -> tuple[memoryview, bytearray | None]:
        """The bytes written since the last part, and the pool buffer holding them, if any."""
        if self._borrowed is not None:
            taken, self._borrowed = self._borrowed, None
            self._filled = 0
            return taken, None
        buf, self._fill = self._fill, None
        taken = memoryview(buf if buf is not None else b"")[: self._filled]
        self._filled = 0
        return taken, buf

    async def add_part(
        self, data: bytes | bytearray | memoryview, recycle: bytearray | None = None
    ) -> None:
        """Upload ``data`` as the next part (in the background, once a slot is free); ``recycle``
        goes back to the buffer pool when the upload is done."""
        self._check()
        if self._upload_id is None:
            response = await self._cache._request(
                "CreateMultipartUpload",
                self._name,
                ChecksumAlgorithm="CRC32C",
                ChecksumType="FULL_OBJECT",
            )
            self._upload_id = str(response["UploadId"])
        number = self._next
        if number > MAX_PARTS:
            raise CacheError(
                f"S3 object {self._cache._where(self._name)} would need more than {MAX_PARTS} "
                f"parts of {self._cache.part_size} bytes: use a larger part_size"
            )
        self._next += 1
        await self._slots.acquire()
        if self._error is not None:
            self._slots.release()
            raise self._error
        task = asyncio.create_task(self._upload_part(number, data, recycle))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _upload_part(
        self, number: int, data: bytes | bytearray | memoryview, recycle: bytearray | None
    ) -> None:
        try:
            crc = await _crc(data)
            response = await self._cache._request(
                "UploadPart",
                self._name,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=_Body(data),
                ContentLength=len(data),
                ChecksumCRC32C=_b64(crc),
            )
            self._parts[number] = (str(response["ETag"]), crc, len(data))
            if recycle is not None:
                del data
                self._pool.append(recycle)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if self._error is None:
                self._error = exc
        finally:
            self._slots.release()

    async def commit(self) -> None:
        self._check()
        pending, _ = self._take()
        if self._upload_id is None:
            await self._cache._put_object(self._name, pending)
            self._done = True
            return
        if pending:
            await self.add_part(pending)
        await self.finish()

    async def finish(self) -> None:
        """Wait for every part, then complete the multipart upload with the whole CRC32C."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))
        self._check()
        self._pool.clear()
        numbers = sorted(self._parts)
        if numbers != list(range(1, self._next)):
            raise CacheError(f"S3 multipart upload of {self._cache._where(self._name)} lost parts")
        whole = 0
        for n in numbers:
            whole = crc32c_combine(whole, self._parts[n][1], self._parts[n][2])
        completed = await self._cache._request(
            "CompleteMultipartUpload",
            self._name,
            UploadId=self._upload_id,
            MultipartUpload={
                "Parts": [
                    {
                        "PartNumber": n,
                        "ETag": self._parts[n][0],
                        "ChecksumCRC32C": _b64(self._parts[n][1]),
                    }
                    for n in numbers
                ]
            },
            ChecksumCRC32C=_b64(whole),
            ChecksumType="FULL_OBJECT",
        )
        self._done = True
        if _recorded_crc(completed, whole=True) != whole:  # S3 answers with the checksum
            await self._cache._ensure_recorded_crc(self._name, whole)

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._fill = self._borrowed = None
        self._pool.clear()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._upload_id is not None:
            await self._cache._abort_upload(self._name, self._upload_id)


# -- the backend ---------------------------------------------------------------------------------
class AmazonS3Cache(Backend):
    """A cache in an S3 bucket (or any S3-compatible store), under ``prefix``.

    Endpoint, region and credentials default to the usual AWS environment
    (``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``,
    ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, profiles, instance roles).
    """

    url_scheme = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "jobs",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        part_size: int = 8 << 20,
        max_concurrency: int = 8,
        read_only: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(bucket, str) or not bucket or "/" in bucket:
            raise ValueError(f"an S3 bucket name is required (no '/'), not {bucket!r}")
        if endpoint_url is not None:
            refuse_credentials(endpoint_url, "endpoint_url")
        if not isinstance(part_size, int) or not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ValueError(
                f"part_size must be between {MIN_PART_SIZE} (5 MiB, S3's minimum) and "
                f"{MAX_PART_SIZE} bytes, not {part_size!r}"
            )
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be a positive int, not {max_concurrency!r}")
        prefix = prefix.strip("/")
        if prefix:
            split_key(prefix)  # the same rules as keys: no empty, '.', '..' segments
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.read_only = read_only
        self.region = region
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self._root = prefix + "/" if prefix else ""
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None

    def url(self) -> str:
        # s3://bucket alone means the default prefix "jobs" (see cache_from_url)
        return f"s3://{self.bucket}/{self.prefix}"

    def __repr__(self) -> str:
        return f"AmazonS3Cache({self.bucket!r}, prefix={self.prefix!r})"

    # -- lifecycle ------------------------------------------------------------------------------
    async def _open(self) -> None:
        for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
            if os.environ.get(name):
                refuse_credentials(os.environ[name], f"${name}")
        custom_endpoint = bool(
            self.endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        s3_options: dict[str, Any] = {
            # CRC32C (verified by S3) protects every body; SHA-256 payload signing would cost
            # more CPU than everything else on plain-http endpoints (on https it is off anyway).
            "payload_signing_enabled": False,
        }
        if custom_endpoint:
            s3_options["addressing_style"] = "path"
        config = AioConfig(
            max_pool_connections=max(10, 2 * self.max_concurrency),
            retries={"mode": "standard", "max_attempts": 6},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=10,
            read_timeout=60,
            s3=s3_options,
        )
        stack = contextlib.AsyncExitStack()
        try:
            session = get_session()
            session.register_component("data_loader", _shared_loader())
            self._client = await stack.enter_async_context(
                session.create_client(
                    "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
                )
            )
            await self._check_bucket()
        except BaseException:
            self._client = None
            with anyio.CancelScope(shield=True):
                await stack.aclose()
            raise
        self._stack = stack

    async def _check_bucket(self) -> None:
        where = f"S3 bucket {self.bucket!r} at {self._client.meta.endpoint_url}"
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code, status = _error_code(exc), _status(exc)
            if code in ("404", "NoSuchBucket", "NotFound") or status == 404:
                raise CacheError(f"{where} does not exist") from exc
            if code in ("403", "AccessDenied", "Forbidden") or status in (401, 403):
                raise CacheError(
                    f"access to {where} denied: check the credentials "
                    "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and permissions"
                ) from exc
            raise CacheError(f"cannot use {where}: {exc}") from exc
        except NoCredentialsError as exc:
            raise CacheError(
                f"no AWS credentials found for {where} (set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
            ) from exc
        except (TimeoutError, BotoCoreError, aiohttp.ClientError, OSError) as exc:
            raise CacheError(f"cannot reach {where}: {exc}") from exc

    async def _close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    # -- names and requests ---------------------------------------------------------------------
    def _name(self, path: Path) -> str:
        return object_name(self._root, path, "S3", MAX_OBJECT_KEY_BYTES)

    def _group_prefix(self, prefix: Path) -> str:
        return self._root + join(prefix) + "/" if prefix else self._root

    def _where(self, name: str) -> str:
        return f"s3://{self.bucket}/{name}"

    def _require_client(self) -> Any:
        if self._client is None:
            raise RuntimeError(f"{self!r} is not open: use 'async with cache:' first")
        return self._client

    async def _request(self, operation: str, name: str, **params: Any) -> Any:
        """One S3 call (botocore retries transient failures); errors name operation, bucket
        and object. A missing object's ClientError passes through for the caller to judge."""
        client = self._require_client()
        method = getattr(client, re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower())
        try:
            return await method(Bucket=self.bucket, Key=name, **params)
        except ClientError as exc:
            if _is_missing(exc) or _error_code(exc) in ("InvalidRange", "PreconditionFailed"):
                raise
            raise self._failure(operation, name, exc) from exc
        except (TimeoutError, BotoCoreError, aiohttp.ClientError, OSError) as exc:
            raise self._failure(operation, name, exc) from exc

    def _failure(self, operation: str, name: str, exc: BaseException) -> CacheError:
        return CacheError(f"S3 {operation} failed for bucket {self.bucket!r}, key {name!r}: {exc}")

    # -- writes ---------------------------------------------------------------------------------
    async def _put_object(self, name: str, data: bytes | bytearray | memoryview) -> None:
        crc = await _crc(data)
        await self._request(
            "PutObject",
            name,
            Body=_Body(data),
            ContentLength=len(data),
            ChecksumAlgorithm="CRC32C",
            ChecksumCRC32C=_b64(crc),
            Metadata={META_CRC: f"{crc:08x}"},
        )

    async def _ensure_recorded_crc(self, name: str, crc: int) -> None:
        """After a multipart upload: if the server kept no full-object checksum (rclone does
        not), record it in the metadata with a metadata-only self-copy, unless the object was
        replaced in the meantime."""
        try:
            head = await self._request("HeadObject", name, ChecksumMode="ENABLED")
            if _recorded_crc(head, whole=True) is not None:
                return
            await self._request(
                "CopyObject",
                name,
                CopySource={"Bucket": self.bucket, "Key": name},
                CopySourceIfMatch=head["ETag"],
                MetadataDirective="REPLACE",
                Metadata={META_CRC: f"{crc:08x}"},
            )
        except ClientError as exc:  # replaced or deleted meanwhile: that write owns the object
            log.debug("not recording the checksum of %s: %s", self._where(name), exc)
        except CacheError as exc:
            log.warning("could not record the checksum of %s: %s", self._where(name), exc)

    async def _abort_upload(self, name: str, upload_id: str) -> None:
        for attempt in range(4):
            try:
                await self._request("AbortMultipartUpload", name, UploadId=upload_id)
                return
            except ClientError as exc:
                if _error_code(exc) in ("NoSuchUpload", "404"):
                    return
                raise
            except CacheError as exc:
                if attempt == 3:
                    log.warning("multipart upload %s of %s left behind: %s", upload_id, name, exc)
                    return
                await asyncio.sleep(0.2 * 2**attempt)

    async def _open_writer(self, path: Path) -> BackendWriter:
        self._require_client()
        return _S3Writer(self, self._name(path))

    async def _put_bytes(self, path: Path, data: bytes | memoryview) -> None:
        name = self._name(path)
        self._require_client()
        view = memoryview(data).cast("B")
        if view.nbytes <= self.part_size:
            await self._put_object(name, view)
            return
        writer = _S3Writer(self, name)
        try:
            for offset in range(0, view.nbytes, self.part_size):
                await writer.add_part(view[offset : offset + self.part_size])
            await writer.finish()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await writer.abort()
            raise

    async def _put_file(self, path: Path, src: str) -> int:
        name = self._name(path)
        self._require_client()
        fd = await anyio.to_thread.run_sync(os.open, src, os.O_RDONLY | os.O_CLOEXEC)
        writer = _S3Writer(self, name)
        total = 0
        try:
            pending = await anyio.to_thread.run_sync(_read_block, fd, self.part_size)
            while True:
                following = await anyio.to_thread.run_sync(_read_block, fd, self.part_size)
                if not following:
                    break
                await writer.add_part(pending)
                total += len(pending)
                pending = following
            total += len(pending)
            if writer._upload_id is None:
                await self._put_object(name, pending)
            else:
                await writer.add_part(pending)
                await writer.finish()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await writer.abort()
            raise
        finally:
            os.close(fd)
        return total

    # -- reads ----------------------------------------------------------------------------------
    async def _get(
        self, name: str, start: int, end: int | None, *, if_match: str | None = None
    ) -> tuple[bytearray, dict[str, Any], int]:
        """GET ``[start, end)`` (``end=None``: to the end); returns (data, response, total size).
        Re-requests a body that breaks while being read; accepts 200 with Content-Range. The
        body is read into one buffer as it arrives (never a list of pieces joined at the end,
        which would hold it twice)."""
        params: dict[str, Any] = {"Range": f"bytes={start}-{'' if end is None else end - 1}"}
        if if_match:
            params["IfMatch"] = if_match
        if start == 0 and end is None:
            params = {"ChecksumMode": "ENABLED"}
        elif start == 0:
            params["ChecksumMode"] = "ENABLED"
        for attempt in range(READ_ATTEMPTS):
            response = await self._request("GetObject", name, **params)
            body = response["Body"]
            try:
                async with body:
                    data = await _read_body(body, int(response.get("ContentLength", 0)))
                total, first = self._extent(response, len(data))
                if first != start and "Range" in params:
                    if first == 0 and "ContentRange" not in response:
                        del data[: min(start, len(data))]  # the server ignored Range: slice
                        if end is not None:
                            del data[end - start :]
                    else:
                        raise _ShortRead(f"asked for byte {start}, got {first}")
                want = (total if end is None else min(end, total)) - start
                if len(data) != max(0, want):
                    raise _ShortRead(f"expected {want} bytes, got {len(data)}")
                return data, response, total
            except _RETRIED_READ_ERRORS as exc:
                if attempt == READ_ATTEMPTS - 1:
                    raise self._failure("GetObject", name, exc) from exc
                await asyncio.sleep(0.1 * 2**attempt * (1 + random.random()))
        raise AssertionError("unreachable")

    @staticmethod
    def _extent(response: dict[str, Any], received: int) -> tuple[int, int]:
        """(total size, first byte) of a GET answer."""
        content_range = response.get("ContentRange")
        if content_range:
            match = _CONTENT_RANGE.match(content_range)
            if match and match.group(3) != "*":
                return int(match.group(3)), int(match.group(1))
        return int(response.get("ContentLength", received)), 0

    async def _first(self, path: Path, name: str) -> tuple[bytearray, dict[str, Any], int]:
        """The first ``part_size`` bytes with the object's size and headers."""
        try:
            return await self._get(name, 0, self.part_size)
        except ClientError as exc:
            if _is_missing(exc):
                raise missing(path) from None
            if _error_code(exc) != "InvalidRange":
                raise self._failure("GetObject", name, exc) from exc
        try:  # an empty object has no byte 0: ask for all of it
            return await self._get(name, 0, None)
        except ClientError as exc:
            if _is_missing(exc):
                raise missing(path) from None
            raise self._failure("GetObject", name, exc) from exc

    async def _stream(self, path: Path, chunk_size: int) -> AsyncIterator[bytes]:
        name = self._name(path)
        self._require_client()
        data, response, total = await self._first(path, name)
        expected = _recorded_crc(response, whole=len(data) == total)
        etag = response.get("ETag")
        if expected is None and total > len(data):
            head = await self._head(name)
            if head is not None:
                expected = _recorded_crc(head, whole=True)
        crc = await _crc(data)
        offset = len(data)
        for piece in _pieces(data, chunk_size):
            yield piece
        del data
        pending: deque[asyncio.Task[tuple[bytearray, dict[str, Any], int]]] = deque()
        next_start = offset
        try:
            while offset < total:
                while next_start < total and len(pending) < self.max_concurrency:
                    end = min(next_start + self.part_size, total)
                    pending.append(
                        asyncio.create_task(self._get_part(path, name, next_start, end, etag))
                    )
                    next_start = end
                chunk, _, _ = await pending.popleft()
                crc = await _crc(chunk, crc)
                offset += len(chunk)
                for piece in _pieces(chunk, chunk_size):
                    yield piece
                del chunk
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        if expected is not None:
            _checksum.verify(expected, crc, repr(join(path)))

    async def _get_part(
        self, path: Path, name: str, start: int, end: int, etag: str | None
    ) -> tuple[bytearray, dict[str, Any], int]:
        try:
            return await self._get(name, start, end, if_match=etag)
        except ClientError as exc:
            if _is_missing(exc) or _error_code(exc) == "PreconditionFailed":
                raise CacheError(
                    f"S3 object {self._where(name)} was replaced or deleted while being read"
                ) from exc
            raise self._failure("GetObject", name, exc) from exc

    async def _read_all(self, path: Path) -> bytes:
        parts = [chunk async for chunk in self._stream(path, self.part_size)]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _read_range(self, path: Path, start: int, end: int | None) -> bytes:
        name = self._name(path)
        self._require_client()
        try:
            data, _, _ = await self._get(name, start, end)
            return bytes(data)
        except ClientError as exc:
            if _is_missing(exc):
                raise missing(path) from None
            if _error_code(exc) == "InvalidRange":  # start is at or past the end
                return b""
            raise self._failure("GetObject", name, exc) from exc

    async def _head(self, name: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = await self._request("HeadObject", name, ChecksumMode="ENABLED")
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise self._failure("HeadObject", name, exc) from exc
        return head

    async def _stat(self, path: Path) -> Stat | None:
        name = self._name(path)
        self._require_client()
        head = await self._head(name)
        if head is None:
            return None
        size = int(head["ContentLength"])
        crc = _recorded_crc(head, whole=True)
        if crc is None:  # written by something else, or interrupted before it was recorded
            crc = 0
            async for chunk in self._stream(path, self.part_size):
                crc = await _crc(chunk, crc)
        return Stat(size=size, checksum=_checksum.render(crc))

    async def _exists(self, path: Path) -> bool:
        name = self._name(path)
        self._require_client()
        return await self._head(name) is not None  # never reads the object to find a checksum

    # -- delete and listing ---------------------------------------------------------------------
    async def _delete(self, path: Path) -> None:
        name = self._name(path)
        self._require_client()
        if await self._head(name) is None:
            raise missing(path)
        await self._request("DeleteObject", name)

    async def _list_page(self, **params: Any) -> dict[str, Any]:
        client = self._require_client()
        try:
            page: dict[str, Any] = await client.list_objects_v2(Bucket=self.bucket, **params)
        except (TimeoutError, ClientError, BotoCoreError, aiohttp.ClientError, OSError) as exc:
            raise self._failure("ListObjectsV2", params.get("Prefix", ""), exc) from exc
        return page

    async def _list(self, prefix: Path, *, groups: bool) -> AsyncIterator[str]:
        pfx = self._group_prefix(prefix)
        if len(pfx.encode("utf-8")) > MAX_OBJECT_KEY_BYTES:
            return
        params: dict[str, Any] = {"Prefix": pfx, "Delimiter": "/", "MaxKeys": 1000}
        while True:
            page = await self._list_page(**params)
            if groups:
                names = [p["Prefix"][len(pfx) : -1] for p in page.get("CommonPrefixes") or ()]
            else:
                names = [o["Key"][len(pfx) :] for o in page.get("Contents") or ()]
            token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
            del page
            names = [name for name in names if _segment_ok(name)]
            if groups:
                names = await self._holding_values(pfx, names)
            for name in names:
                yield name
            if not token:
                return
            params["ContinuationToken"] = token

    async def _holding_values(self, pfx: str, names: list[str]) -> list[str]:
        """The names whose group holds at least one object. S3 lists a common prefix only if
        objects lie below it, but servers built on a file system (rclone) also list empty
        directories, e.g. one left by an interrupted multipart upload: one small probe each."""
        limit = asyncio.Semaphore(self.max_concurrency)

        async def holds(name: str) -> bool:
            async with limit:
                page = await self._list_page(Prefix=f"{pfx}{name}/", MaxKeys=1)
            return bool(page.get("Contents"))

        found = await asyncio.gather(*(holds(name) for name in names))
        return [name for name, ok in zip(names, found, strict=True) if ok]

    async def _clear(self, prefix: Path) -> None:
        pfx = self._group_prefix(prefix)
        client = self._require_client()
        params: dict[str, Any] = {"Prefix": pfx, "MaxKeys": 1000}
        while True:
            page = await self._list_page(**params)
            keys = [o["Key"] for o in page.get("Contents") or ()]
            if keys:
                try:
                    result = await client.delete_objects(
                        Bucket=self.bucket,
                        Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True},
                    )
                except (ClientError, BotoCoreError, aiohttp.ClientError, OSError) as exc:
                    raise self._failure("DeleteObjects", pfx, exc) from exc
                errors = [e for e in result.get("Errors") or () if e.get("Code") != "NoSuchKey"]
                if errors:
                    first = errors[0]
                    raise CacheError(
                        f"S3 DeleteObjects failed for bucket {self.bucket!r}: {len(errors)} of "
                        f"{len(keys)} keys under {pfx!r} not deleted, e.g. {first.get('Key')!r}: "
                        f"{first.get('Code')} {first.get('Message')}"
                    )
            if not page.get("IsTruncated"):
                return
            params["ContinuationToken"] = page["NextContinuationToken"]


async def _read_body(body: Any, expected: int) -> bytearray:
    """A response body read into one buffer as its pieces arrive."""
    buf = bytearray(expected)
    view = memoryview(buf)
    got = 0
    while True:
        piece = await body.read(max(expected - got, 1 << 20))
        if not piece:
            break
        end = got + len(piece)
        if end > len(buf):  # longer than announced: grow (and let the caller judge)
            del view
            buf.extend(bytes(end - len(buf)))
            view = memoryview(buf)
        view[got:end] = piece
        got = end
    del view
    if got < expected:
        del buf[got:]
    return buf


def _pieces(data: bytearray, size: int) -> Iterator[bytes]:
    """``data`` as ``bytes`` pieces of ``size`` (the last may be shorter): one copy, and
    re-chunking a large range into small chunks never shifts a large buffer."""
    if len(data) <= size:
        if data:
            yield bytes(data)
        return
    view = memoryview(data)
    for i in range(0, len(data), size):
        yield bytes(view[i : i + size])


@functools.cache
def _shared_loader() -> Any:
    """One botocore data loader for every client: parsing the S3 service model takes a tenth of
    a second, and a fresh session would do it again on every ``__aenter__``. Credentials and
    configuration are still read afresh by each session."""
    return botocore.loaders.create_loader()


def _read_block(fd: int, size: int) -> bytearray:
    """Read up to ``size`` bytes (fewer only at the end of the file) into a new buffer."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            break
        got += n
    del view
    if got < size:
        del buf[got:]
    return buf


__all__ = ["AmazonS3Cache", "ChecksumMismatchError", "crc32c_combine"]
