"""AmazonS3Cache: values as S3 objects; the S3 primitives under the shared transfer engine.

Layout: the value of key path ``(job, "a", "b")`` is the object ``<prefix>/job/a/b`` (no prefix if
``prefix=""``); a group is the key prefix ``.../a/``, so a name can be a key and a group at once.
No other object is ever written: a value is made visible by one PutObject or one
CompleteMultipartUpload, both atomic, so there are no temporaries to hide or clean up.

What is S3's own here (the engine, ``_transfer.py``, does the rest: bounded concurrent parts,
ordered ranged reads, CRC32C; ``_retry.py``: the one retry policy and the deadlines):

* the upload primitives (:class:`_S3Upload`): PutObject, CreateMultipartUpload, UploadPart,
  CompleteMultipartUpload with a ``FULL_OBJECT`` CRC32C combined from the part CRCs, and
  AbortMultipartUpload. A completion whose answer was lost and whose retry answers NoSuchUpload
  is a success if the object is there with the expected checksum. Servers that drop full-object
  checksums (rclone serve s3 does) are detected by a HeadObject after completion, and the
  checksum is then attached as metadata by a metadata-only CopyObject onto itself, guarded by
  ``CopySourceIfMatch``;
* ranged GETs (a server may answer a range with 200 plus Content-Range: rclone does), pinned to
  the first answer's ETag;
* what a store must answer: an ETag on every write, a ListObjectsV2 result on entry. A plain web
  server answering 200 with a page is a clear :class:`CacheError`, not a store;
* servers built on a file system (rclone) cannot hold a key and a group of one name: a write that
  would make one is refused before any byte is sent, naming the collision.

Botocore's own retries are off (one attempt each) and so is its ``Expect: 100-continue`` (with
it, aiohttp waits for the server's go-ahead without any deadline). Botocore's response checksum
validation is off too: it cannot check ranges, and it wrongly rejects servers that replay a
full-object checksum on a range answer; swath verifies the CRC32C of every whole read itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection
from typing import Any

import aiohttp
import anyio
import botocore.handlers
import botocore.loaders
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from swath._urls import refuse_credentials
from swath.cache import _checksum, _transfer
from swath.cache._base import Stat, StoredObject, joined, missing, rechunk
from swath.cache._checksum import crc32c_combine
from swath.cache._retry import GaveUp
from swath.cache.keys import Path, join, object_name, split_key
from swath.errors import CacheError, ChecksumMismatchError, InvalidKeyError

log = logging.getLogger(__name__)
_transfer.register_body_payload()

META_CRC = "swath-crc32c"  # x-amz-meta-swath-crc32c: the whole value's CRC32C, 8 hex digits
MIN_PART_SIZE = 5 << 20  # S3's minimum for every part but the last
MAX_PART_SIZE = 5 << 30
MAX_PARTS = 10_000
MAX_OBJECT_KEY_BYTES = 1024  # S3's limit for a whole object key

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_NO_UPLOAD = {"NoSuchUpload"}
# answers the caller interprets (missing key, empty range, replaced object, gone upload)
_PASS_THROUGH = {*_NOT_FOUND, "InvalidRange", "PreconditionFailed"}
# a range of the object being read is refused: it was replaced (If-Match; rclone checks the range
# against the new object first and answers InvalidRange)
_REPLACED = {"PreconditionFailed", "InvalidRange"}
_THROTTLED = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "ProvisionedThroughputExceededException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "PriorRequestNotComplete",
}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _is_missing(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and _error_code(exc) in _NOT_FOUND


class _ShortRead(Exception):
    """A response body shorter (or placed otherwise) than its headers promised."""


def _web_page(exc: BaseException) -> bool:
    """An answer in HTML: a web server, not S3 (botocore turns a 200 it cannot parse into a
    500; S3's own errors are XML). It is retried like any 5xx (a proxy's 502 page is HTML too),
    and named for what it is if it persists."""
    if isinstance(exc, GaveUp):
        exc = exc.last  # type: ignore[assignment]
    if not isinstance(exc, ClientError):
        return False
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return "html" in str(headers.get("content-type", "")).lower()


def _transient(exc: BaseException) -> bool:
    """What the retry policy retries: throttling, 5xx, broken or stalled connections."""
    if isinstance(exc, ClientError):
        status = _status(exc)
        return status >= 500 or status == 429 or _error_code(exc) in _THROTTLED
    return isinstance(
        exc,
        botocore.exceptions.ConnectionError
        | botocore.exceptions.HTTPClientError
        | botocore.exceptions.IncompleteReadError
        | aiohttp.ClientError
        | asyncio.IncompleteReadError
        | TimeoutError
        | ConnectionError
        | _ShortRead,
    )


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
            return _checksum.from_b64(value)
    return None


def _segment_ok(name: str) -> bool:
    if not name or "/" in name:
        return False
    try:
        split_key(name)
    except InvalidKeyError:
        return False
    return True


# -- the upload primitives -----------------------------------------------------------------------
class _S3Upload(_transfer.PartTarget):
    """One value's upload: PutObject, or a multipart upload with a FULL_OBJECT CRC32C."""

    def __init__(self, cache: AmazonS3Cache, path: Path) -> None:
        self._cache = cache
        self._path = path
        self._name = cache._name(path)
        self._upload_id: str | None = None

    async def put_single(self, data: memoryview, crc: int) -> None:
        await self._cache._put_object(self._name, data, crc)

    async def begin(self) -> None:
        await self._cache._check_collision(self._name)
        response = await self._cache._request(
            "CreateMultipartUpload",
            self._name,
            ChecksumAlgorithm="CRC32C",
            ChecksumType="FULL_OBJECT",
        )
        self._upload_id = str(response["UploadId"])

    async def upload_part(self, number: int, data: memoryview, crc: int, last: bool) -> Any:
        response = await self._cache._request(
            "UploadPart",
            self._name,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=data,
            ContentLength=len(data),
            ChecksumCRC32C=_checksum.to_b64(crc),
        )
        return self._cache._etag("UploadPart", self._name, response)

    async def complete(self, parts: list[_transfer.Part], crc: int, size: int) -> None:
        cache, name = self._cache, self._name
        try:
            completed = await cache._request(
                "CompleteMultipartUpload",
                name,
                passthrough=_NO_UPLOAD,
                UploadId=self._upload_id,
                MultipartUpload={
                    "Parts": [
                        {
                            "PartNumber": p.number,
                            "ETag": p.token,
                            "ChecksumCRC32C": _checksum.to_b64(p.crc),
                        }
                        for p in parts
                    ]
                },
                ChecksumCRC32C=_checksum.to_b64(crc),
                ChecksumType="FULL_OBJECT",
            )
        except ClientError as exc:
            # A completion whose answer was lost is retried and answers NoSuchUpload: if the
            # object is there with our bytes, the first attempt did complete it.
            if not await cache._holds(self._path, crc, size):
                raise cache._failure("CompleteMultipartUpload", name, exc) from exc
            log.info("the completion of %s was answered late; the object is whole", name)
            return
        cache._etag("CompleteMultipartUpload", name, completed)
        if _recorded_crc(completed, whole=True) != crc:  # S3 answers with the checksum
            await cache._ensure_recorded_crc(name, crc)

    async def abort(self) -> None:
        if self._upload_id is None:
            return  # refused before it began
        try:
            await self._cache._request(
                "AbortMultipartUpload",
                self._name,
                passthrough=_NO_UPLOAD,
                budget=self._cache.deadlines.abort_timeout,
                UploadId=self._upload_id,
            )
        except ClientError:
            return  # NoSuchUpload: already gone
        except CacheError as exc:
            log.warning(
                "multipart upload %s of %s may be left behind (S3 removes it with a lifecycle "
                "rule, see docs/s3.md): %s",
                self._upload_id,
                self._cache._where(self._name),
                exc,
            )


# -- the backend ---------------------------------------------------------------------------------
class AmazonS3Cache(_transfer.PartedBackend):
    """A cache in an S3 bucket (or any S3-compatible store), under ``prefix``.

    Endpoint, region and credentials default to the usual AWS environment
    (``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``,
    ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, profiles, instance roles). Keywords
    beyond these name deadlines in seconds (see ``_retry.Deadlines`` and docs/s3.md).
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
        **deadlines: float | str,
    ) -> None:
        super().__init__()
        if endpoint_url is not None:
            refuse_credentials(endpoint_url, "endpoint_url")
        _transfer.check_tuning(
            "part_size", part_size, MIN_PART_SIZE, MAX_PART_SIZE, max_concurrency
        )
        self._configure(bucket, prefix, max_concurrency, deadlines, read_only)
        self.endpoint_url = endpoint_url
        self.region = region
        self.part_size = part_size
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._file_system = False  # does the store refuse a key beside a group? (on entry)

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
            retries={"mode": "standard", "total_max_attempts": 1},  # swath's policy retries
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            connect_timeout=self.deadlines.connect_timeout,
            read_timeout=self.deadlines.read_timeout,
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
            # no "Expect: 100-continue": aiohttp would wait for the go-ahead without a deadline
            self._client.meta.events.unregister(
                "before-call.s3", botocore.handlers.add_expect_header
            )
            await self._check_bucket()
        except BaseException:
            self._client = None
            with anyio.CancelScope(shield=True):
                await stack.aclose()
            raise
        self._stack = stack

    async def _check_bucket(self) -> None:
        """One ListObjectsV2 under the prefix: the bucket exists, the credentials are accepted,
        and the endpoint answers like an S3 server. A store built on a file system (rclone serve
        s3, or another on gofakes3) omits ``KeyCount``, which S3 always sends: on such a store
        writes are checked for key-and-group collisions first."""
        where = f"S3 bucket {self.bucket!r} at {self._client.meta.endpoint_url}"
        try:
            page = await self._list_page(Prefix=self._root, MaxKeys=1)
            self._file_system = "KeyCount" not in page
        except CacheError as exc:
            cause = exc.__cause__
            if isinstance(cause, GaveUp) and isinstance(cause.last, ClientError):
                cause = cause.last
            if isinstance(cause, ClientError):
                code, status = _error_code(cause), _status(cause)
                if code in ("404", "NoSuchBucket", "NotFound") or status == 404:
                    raise CacheError(f"{where} does not exist") from cause
                if code in ("403", "AccessDenied", "Forbidden") or status in (401, 403):
                    raise CacheError(
                        f"access to {where} denied: check the credentials "
                        "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and permissions"
                    ) from cause
            if isinstance(cause, NoCredentialsError):
                raise CacheError(
                    f"no AWS credentials found for {where} (set AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
                ) from cause
            raise CacheError(f"cannot use {where}: {exc}") from exc

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

    async def _request(
        self,
        operation: str,
        name: str,
        *,
        passthrough: Collection[str] = (),
        budget: float | None = None,
        after: Callable[[Any], Any] | None = None,
        bucket_call: bool = False,
        **params: Any,
    ) -> Any:
        """One S3 call under the retry policy and the operation budget; errors name operation,
        bucket and object. A ClientError whose code is in ``passthrough`` (or says the object is
        missing) is raised as is for the caller to judge. ``Body`` is a buffer, sent as a fresh
        :class:`Body` on each attempt; ``after(response)`` runs inside each attempt (to read a
        body, so that a body that breaks is retried too)."""
        client = self._require_client()
        method = getattr(client, re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower())
        data = params.pop("Body", None)
        if not bucket_call:
            params["Key"] = name

        async def attempt() -> Any:
            if data is not None:
                params["Body"] = _transfer.Body(data, stall=self.deadlines.read_timeout)
            response = await method(Bucket=self.bucket, **params)
            return response if after is None else await after(response)

        try:
            return await self._with_retries(
                attempt, _transient, f"S3 {operation} of {self._where(name)}", budget
            )
        except ClientError as exc:
            if _error_code(exc) in _PASS_THROUGH or _error_code(exc) in passthrough:
                raise
            raise self._failure(operation, name, exc) from exc
        except (GaveUp, BotoCoreError, aiohttp.ClientError, OSError) as exc:
            raise self._failure(operation, name, exc) from exc

    def _failure(self, operation: str, name: str, exc: BaseException) -> CacheError:
        if _web_page(exc):
            return CacheError(
                f"S3 {operation} of {self._where(name)}: the endpoint "
                f"{self._client.meta.endpoint_url} answered with a web page ({exc}); is it an "
                "S3 server?"
            )
        return CacheError(f"S3 {operation} failed for bucket {self.bucket!r}, key {name!r}: {exc}")

    def _etag(self, operation: str, name: str, response: dict[str, Any]) -> str:
        """The ETag every S3 write answers with; without one, this is not an S3 server."""
        etag = response.get("ETag")
        if not etag:
            raise CacheError(
                f"S3 {operation} of {self._where(name)}: the endpoint "
                f"{self._client.meta.endpoint_url} answered without an ETag; is it an S3 server?"
            )
        return str(etag)

    # -- writes ---------------------------------------------------------------------------------
    def _part_writer(self, path: Path) -> _transfer.PartWriter:
        self._require_client()
        return _transfer.PartWriter(
            _S3Upload(self, path),
            self.part_size,
            self.max_concurrency,
            abort_timeout=self.deadlines.abort_timeout,
            max_parts=MAX_PARTS,
        )

    async def _put_object(self, name: str, data: memoryview, crc: int) -> None:
        await self._check_collision(name)
        response = await self._request(
            "PutObject",
            name,
            Body=data,
            ContentLength=len(data),
            ChecksumAlgorithm="CRC32C",
            ChecksumCRC32C=_checksum.to_b64(crc),
            Metadata={META_CRC: f"{crc:08x}"},
        )
        self._etag("PutObject", name, response)

    async def _check_collision(self, name: str) -> None:
        """On a store built on a file system, refuse a write that would make a key and a group
        of one name (the store would fail late, or silently drop the other value)."""
        if not self._file_system:
            return
        parts = name[len(self._root) :].split("/")
        below = await self._list_page(Prefix=name + "/", MaxKeys=1)
        if below.get("Contents"):
            raise CacheError(
                f"cannot write {self._where(name)}: this store ({self._client.meta.endpoint_url}) "
                f"keeps objects as files and {name!r} is a group holding values; a name cannot "
                "be a key and a group at once here"
            )
        for i in range(1, len(parts)):
            above = self._root + "/".join(parts[:i])
            if await self._head(above) is not None:
                raise CacheError(
                    f"cannot write {self._where(name)}: this store "
                    f"({self._client.meta.endpoint_url}) keeps objects as files and {above!r} "
                    "is a value; a name cannot be a key and a group at once here"
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

    async def _holds(self, path: Path, crc: int, size: int) -> bool:
        """Whether the object of ``path`` has this size and CRC32C (computed by reading it if
        the store recorded none: this is the rare path of a lost completion answer)."""
        found = await self._stat(path)
        if found is None or found.size != size or found.checksum != _checksum.render(crc):
            return False
        await self._ensure_recorded_crc(self._name(path), crc)
        return True

    # -- reads ----------------------------------------------------------------------------------
    async def _get(
        self, name: str, start: int, end: int | None, *, if_match: str | None = None
    ) -> tuple[list[bytes], dict[str, Any], int]:
        """GET ``[start, end)`` (``end=None``: to the end); returns (the pieces received,
        response, total size). A body that breaks while being read is requested again under the
        retry policy; a 200 with Content-Range is accepted. The pieces are kept as they came,
        never joined here."""
        params = _get_params(start, end, if_match)

        async def read(response: dict[str, Any]) -> tuple[list[bytes], dict[str, Any], int]:
            body = response["Body"]
            async with body:
                self._etag("GetObject", name, response)
                received = [piece async for piece in _received(body)]
            size = sum(map(len, received))
            total, first = self._extent(response, size)
            if first != start and "Range" in params:
                if first == 0 and "ContentRange" not in response:
                    # the server ignored Range: slice
                    received = [joined(received)[start : size if end is None else end]]
                    size = len(received[0])
                else:
                    raise _ShortRead(f"asked for byte {start}, got {first}")
            want = (total if end is None else min(end, total)) - start
            if size != max(0, want):
                raise _ShortRead(f"expected {want} bytes, got {size}")
            return received, response, total

        result: tuple[list[bytes], dict[str, Any], int] = await self._request(
            "GetObject", name, after=read, **params
        )
        return result

    @staticmethod
    def _extent(response: dict[str, Any], received: int) -> tuple[int, int]:
        """(total size, first byte) of a GET answer."""
        content_range = response.get("ContentRange")
        if content_range:
            match = _CONTENT_RANGE.match(content_range)
            if match and match.group(3) != "*":
                return int(match.group(3)), int(match.group(1))
        return int(response.get("ContentLength", received)), 0

    async def _open_get(
        self, name: str, start: int, end: int | None, *, if_match: str | None = None
    ) -> tuple[dict[str, Any], int, int]:
        """GET ``[start, end)`` (``end=None``: to the end) with its body not yet read; returns
        (response, total size, first byte). Only the request is retried here: the body is the
        caller's to read (and to close)."""
        response: dict[str, Any] = await self._request(
            "GetObject", name, **_get_params(start, end, if_match)
        )
        try:
            self._etag("GetObject", name, response)
        except BaseException:
            response["Body"].close()
            raise
        total, first = self._extent(response, int(response.get("ContentLength", 0)))
        return response, total, first

    async def _first(self, path: Path, name: str) -> tuple[dict[str, Any], int, int]:
        """The GET of the first ``part_size`` bytes (body unread), the object's size and where
        that answer ends (the whole object if the server ignored the Range)."""
        try:
            try:
                response, total, first = await self._open_get(name, 0, self.part_size)
            except ClientError as exc:
                if _error_code(exc) != "InvalidRange":
                    raise
                # an empty object has no byte 0: ask for all of it
                response, total, first = await self._open_get(name, 0, None)
        except ClientError as exc:
            if _is_missing(exc):
                raise missing(path) from None
            raise self._failure("GetObject", name, exc) from exc
        return response, total, first + int(response.get("ContentLength", 0))

    async def _stream(self, path: Path, chunk_size: int) -> AsyncIterator[bytes]:
        """The first ``part_size`` bytes are passed on as they arrive (so a value that fits in
        one part is streamed by one GET, never held whole) while the ranges after them are
        fetched up to ``max_concurrency`` at once."""
        name = self._name(path)
        self._require_client()
        response, total, first_end = await self._first(path, name)
        etag = response.get("ETag")
        try:
            expected = _recorded_crc(response, whole=first_end == total)
            if expected is None and total > first_end:
                head = await self._head(name)
                if head is not None:
                    expected = _recorded_crc(head, whole=True)
        except BaseException:
            response["Body"].close()
            raise
        arriving = rechunk(self._arriving(name, response, 0, first_end, etag), chunk_size)

        async def fetch(start: int, end: int) -> list[bytes]:
            return await self._get_part(name, start, end, etag)

        async for piece in _transfer.ordered_reads(
            arriving, first_end, total, self.part_size, self.max_concurrency, fetch,
            chunk_size, expected, repr(join(path)),
        ):  # fmt: skip
            yield piece

    async def _arriving(
        self, name: str, response: dict[str, Any], start: int, end: int, etag: str | None
    ) -> AsyncGenerator[bytes, None]:
        """The bytes ``[start, end)`` of an open GET answer, piece by piece as received. A body
        that breaks is resumed where it stopped, by a GET of the rest of the same object
        (If-Match its ETag), up to the retry policy's attempts in a row without progress."""
        at = start
        failures = 0
        while True:
            try:
                async with response["Body"] as body:
                    async for piece in _received(body):
                        at += len(piece)
                        if at > end:
                            raise CacheError(
                                f"S3 GetObject of {self._where(name)}: expected {end - start} "
                                "bytes, the server sent more"
                            )
                        failures = 0
                        yield piece
                if at != end:
                    raise _ShortRead(f"expected {end - start} bytes, got {at - start}")
                return
            except CacheError:
                raise
            except Exception as exc:
                failures += 1
                if not _transient(exc) or failures >= self.attempts:
                    raise self._failure("GetObject", name, exc) from exc
                log.info(
                    "S3 GetObject of %s broke at byte %d (%s); resuming", self._where(name), at, exc
                )
            try:
                response, _, first = await self._open_get(name, at, end, if_match=etag)
            except ClientError as exc:
                raise self._pinned_failure(name, exc) from exc
            if first != at:
                response["Body"].close()
                raise CacheError(
                    f"S3 GetObject of {self._where(name)}: asked to resume at byte {at}, the "
                    f"server answered from byte {first}"
                )

    async def _get_part(self, name: str, start: int, end: int, etag: str | None) -> list[bytes]:
        try:
            received, _, _ = await self._get(name, start, end, if_match=etag)
            return received
        except ClientError as exc:
            raise self._pinned_failure(name, exc) from exc

    def _pinned_failure(self, name: str, exc: ClientError) -> CacheError:
        """The error of a GET pinned to the ETag of the object being read."""
        if _is_missing(exc) or _error_code(exc) in _REPLACED:
            return CacheError(
                f"S3 object {self._where(name)} was replaced or deleted while being read"
            )
        return self._failure("GetObject", name, exc)

    async def _read_all(self, path: Path) -> bytes:
        return joined([chunk async for chunk in self._stream(path, self.part_size)])

    async def _read_range(self, path: Path, start: int, end: int | None) -> bytes:
        name = self._name(path)
        self._require_client()
        try:
            received, _, _ = await self._get(name, start, end)
            return joined(received)
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
        self._etag("HeadObject", name, head)
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
                crc = await _checksum.update_async(crc, chunk)
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
        """One ListObjectsV2 page; an answer without its required fields is no S3 server's."""
        prefix = params.get("Prefix", "")
        page: dict[str, Any] = await self._request(
            "ListObjectsV2", prefix, bucket_call=True, **params
        )
        if "IsTruncated" not in page:
            raise CacheError(
                f"S3 ListObjectsV2 of {self._where(prefix)}: the endpoint "
                f"{self._client.meta.endpoint_url} answered without a listing; is it an S3 "
                "server?"
            )
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

    async def _objects(self, page_size: int = 1000) -> AsyncIterator[list[StoredObject]]:
        """Every object below the prefix (none held back: not a listing of keys), one
        ListObjectsV2 page at a time; only one page is held."""
        params: dict[str, Any] = {"Prefix": self._root, "MaxKeys": page_size}
        while True:
            page = await self._list_page(**params)
            found = [
                StoredObject(
                    o["Key"][len(self._root) :],
                    int(o.get("Size", 0)),
                    o["LastModified"].timestamp(),
                    str(o.get("ETag", "")).strip('"'),
                )
                for o in page.get("Contents") or ()
            ]
            token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
            del page
            yield found
            if not token:
                return
            params["ContinuationToken"] = token

    async def _recorded_checksum(self, name: str) -> str | None:
        """The CRC32C recorded with the object ``name`` (below the prefix), as
        :attr:`Stat.checksum`: swath's metadata or S3's own full-object checksum, from one
        HeadObject; None if it has none (it is never read to compute one) or is gone."""
        self._require_client()
        head = await self._head(self._root + name)
        crc = None if head is None else _recorded_crc(head, whole=True)
        return None if crc is None else _checksum.render(crc)

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
        params: dict[str, Any] = {"Prefix": pfx, "MaxKeys": 1000}
        while True:
            page = await self._list_page(**params)
            keys = [o["Key"] for o in page.get("Contents") or ()]
            if keys:
                result = await self._request(
                    "DeleteObjects",
                    pfx,
                    bucket_call=True,
                    Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True},
                )
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


async def _received(body: Any) -> AsyncGenerator[bytes, None]:
    """A response body's pieces as the connection received them, never joined (``body.read(n)``
    joins the pieces it finds buffered, a copy of its own). A broken or stalled connection raises
    aiohttp's error, which the retry policy retries like botocore's."""
    content = getattr(getattr(body, "raw_stream", None), "content", None)
    if isinstance(content, aiohttp.StreamReader):
        async for piece in _transfer.received(content):
            yield piece
    else:  # another HTTP backend
        while piece := await body.read(1 << 20):
            yield piece


def _get_params(start: int, end: int | None, if_match: str | None) -> dict[str, Any]:
    """GetObject's parameters for ``[start, end)`` (``end=None``: to the end). The answer from
    byte 0 asks for the recorded checksum; all of an object is asked for without a Range."""
    params: dict[str, Any] = {"Range": f"bytes={start}-{'' if end is None else end - 1}"}
    if if_match:
        params["IfMatch"] = if_match
    if start == 0:
        params["ChecksumMode"] = "ENABLED"
        if end is None:
            del params["Range"]
    return params


@functools.cache
def _shared_loader() -> Any:
    """One botocore data loader for every client: parsing the S3 service model takes a tenth of
    a second, and a fresh session would do it again on every ``__aenter__``. Credentials and
    configuration are still read afresh by each session."""
    return botocore.loaders.create_loader()


__all__ = ["AmazonS3Cache", "ChecksumMismatchError", "crc32c_combine"]
