"""GoogleStorageCache: values as objects in a Google Cloud Storage bucket, streamed both ways.

Layout (see docs/gcs.md):

* a value is the object ``<prefix>/<path joined with "/">`` (no prefix: just the path); the job
  cache is the runner cache's group named by the job id, so a job's values are
  ``<prefix>/<job id>/<key>``. A name can be a key and a group at once (GCS has no directories);
* listing a group is ``objects.list`` with ``delimiter="/"`` and ``pageToken``, one page at a time:
  ``items`` are the direct keys, ``prefixes`` the direct subgroups;
* temporary objects (the parts of a parallel composite upload) live under
  ``<prefix>/\\swath-tmp/<upload id>/``. No valid key segment contains a backslash, so no key or
  group can ever name them, and listings skip every name with a backslash in it;
* the checksum is the object's own ``crc32c`` metadata (computed by GCS); ``Stat.checksum`` is its
  hex form. Every upload compares the CRC32C GCS computed with the one computed here, every whole
  read compares what it read with the metadata.

Uploads stream. A value of at most ``chunk_size`` bytes is one multipart upload. A larger one,
with ``max_concurrency > 1``, is a parallel composite upload: ``chunk_size`` parts uploaded
concurrently as temporary objects, composed (at most 32 sources a call, in a tree), then deleted,
also on failure or cancellation. With ``max_concurrency == 1`` it is a resumable upload session fed
one chunk at a time (``Content-Range: bytes a-b/*`` until the last chunk). gcloud-aio-storage
provides the session, the credentials, the API root (``STORAGE_EMULATOR_HOST``) and the simple
calls (list, compose, delete, metadata); its own resumable upload sends the whole body in one
request, so the chunked protocol and the ranged reads are written here on its aiohttp session.

Downloads: up to ``max_concurrency`` ranged GETs of ``chunk_size`` bytes in flight, pinned to the
object's generation, yielded in order.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import random
import secrets
import struct
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import anyio
import anyio.to_thread
from gcloud.aio.auth import Token
from gcloud.aio.storage import Storage
from gcloud.aio.storage.storage import SCOPES, init_api_root

from swath._urls import refuse_credentials
from swath.cache import _checksum
from swath.cache._base import Backend, BackendWriter, Stat, missing
from swath.cache.keys import Path, join, object_name, split_key
from swath.errors import CacheError, ChecksumMismatchError, InvalidKeyError, KeyNotFoundError

log = logging.getLogger(__name__)

T = TypeVar("T")

ALIGN = 256 << 10  # resumable chunks must be multiples of 256 KiB
MAX_COMPOSE = 32  # sources per compose call
MAX_OBJECT_NAME_BYTES = 1024  # GCS's limit for an object name
TMP_NAME_BYTES = 16 + 1 + 9  # "<upload id>/<part or compose name>" below the hidden prefix
TMP_SEGMENT = "\\swath-tmp"  # a backslash: no key segment can contain one
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
RETRY_EXCEPTIONS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)
CONTENT_TYPE = "application/octet-stream"
CRC_INLINE = 1 << 20  # smaller buffers are checksummed on the event loop, larger in a thread
DELETE_CONCURRENCY = 32
LIST_PAGE = 1000

# request timeouts in seconds: small JSON calls, and calls that move or compose data
SHORT_TIMEOUT = 60
LONG_TIMEOUT = 900


def crc_to_b64(crc: int) -> str:
    """GCS's form of a CRC32C: base64 of the 4 big-endian bytes."""
    return base64.b64encode(struct.pack(">I", crc)).decode("ascii")


def crc_from_b64(text: str) -> int:
    raw = base64.b64decode(text)
    if len(raw) != 4:
        raise ValueError(f"not a base64 CRC32C: {text!r}")
    return int(struct.unpack(">I", raw)[0])


def _hash_header_crc(header: str | None) -> int | None:
    """The CRC32C in an ``X-Goog-Hash: crc32c=...,md5=...`` header, if any."""
    for item in (header or "").split(","):
        algo, _, value = item.strip().partition("=")
        if algo == "crc32c" and value:
            return crc_from_b64(value)
    return None


async def _crc(crc: int, data: bytes | bytearray | memoryview) -> int:
    if len(data) < CRC_INLINE:
        return _checksum.update(crc, data)
    return await anyio.to_thread.run_sync(_checksum.update, crc, data)


class _TransientError(CacheError):
    """A failure that persisted through the retries but might succeed later (5xx, timeouts)."""


class _Response:
    """What a raw request returns: status, headers and (already read) body."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> dict[str, Any]:
        data = json.loads(self.body or b"{}")
        assert isinstance(data, dict)
        return data


class GoogleStorageCache(Backend):
    """A cache in a Google Cloud Storage bucket (or fake-gcs-server via STORAGE_EMULATOR_HOST).

    ``chunk_size`` (a multiple of 256 KiB) is the size of upload parts and download ranges;
    ``max_concurrency`` is how many of them are in flight at once for one value. Streaming holds
    at most about ``chunk_size * (max_concurrency + 2)`` bytes.
    """

    url_scheme = "gs"

    #: attempts for a request that fails transiently (5xx, 429, 408, connection errors)
    attempts = 6
    #: first back-off in seconds (doubled each retry, with jitter, at most ``max_backoff``)
    backoff = 0.25
    max_backoff = 8.0

    def __init__(
        self,
        bucket: str,
        prefix: str = "jobs",
        *,
        chunk_size: int = 8 << 20,
        max_concurrency: int = 8,
        read_only: bool = False,
    ) -> None:
        super().__init__()
        self.read_only = read_only
        if not isinstance(bucket, str) or not bucket or "/" in bucket:
            raise ValueError(f"bucket must be a non-empty name without '/', not {bucket!r}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        if not isinstance(chunk_size, int) or chunk_size <= 0 or chunk_size % ALIGN:
            raise ValueError(
                f"chunk_size must be a positive multiple of 256 KiB ({ALIGN}), not {chunk_size!r}"
            )
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be an int >= 1, not {max_concurrency!r}")
        prefix = prefix.strip("/")
        self.bucket = bucket
        self.prefix = join(split_key(prefix)) if prefix else ""
        self.chunk_size = chunk_size
        self.max_concurrency = max_concurrency
        self._root = f"{self.prefix}/" if self.prefix else ""
        self._tmp_root = f"{self._root}{TMP_SEGMENT}/"
        longest_tmp = len(self._tmp_root.encode()) + TMP_NAME_BYTES
        if longest_tmp > MAX_OBJECT_NAME_BYTES:
            raise InvalidKeyError(
                f"prefix {self.prefix[:40]!r}... is too long: the temporary parts of uploads "
                f"under it would have {longest_tmp}-byte object names, more than GCS's "
                f"{MAX_OBJECT_NAME_BYTES} (a prefix may be "
                f"{MAX_OBJECT_NAME_BYTES - TMP_NAME_BYTES - len(TMP_SEGMENT) - 2} UTF-8 bytes)"
            )
        self._session: aiohttp.ClientSession | None = None
        self._storage: Storage | None = None
        self._api_root = ""
        self._is_dev = False

    def url(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}"

    def __repr__(self) -> str:
        return f"GoogleStorageCache({self.bucket!r}, prefix={self.prefix!r})"

    # -- lifecycle ------------------------------------------------------------------------------
    async def _open(self) -> None:
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            refuse_credentials(os.environ["STORAGE_EMULATOR_HOST"], "$STORAGE_EMULATOR_HOST")
        self._is_dev, self._api_root = init_api_root(None)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(64, 4 * self.max_concurrency)),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300),
            auto_decompress=False,
        )
        self._session = session
        try:
            try:  # gcloud-aio-auth finds the credentials (it may read files here)
                token = None if self._is_dev else Token(scopes=SCOPES, session=session)  # type: ignore[arg-type]
            except Exception as exc:
                raise CacheError(
                    f"cannot open GCS bucket {self.bucket!r}: no usable credentials: {exc}"
                ) from exc
            # Storage reads STORAGE_EMULATOR_HOST itself (passing api_root would mark it "dev")
            self._storage = Storage(session=session, token=token)  # type: ignore[arg-type]
            await self._check_bucket()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._close()
            raise

    async def _check_bucket(self) -> None:
        url = f"{self._api_root}/storage/v1/b/{quote(self.bucket, safe='')}/o"
        params = {"maxResults": "1", "prefix": self._root, "fields": "kind"}
        try:
            await self._request("open", "", "GET", url, params=params, allow=(401, 403, 404))
        except aiohttp.ClientResponseError as exc:
            if exc.status == 404:
                raise CacheError(
                    f"GCS bucket {self.bucket!r} does not exist (at {self._api_root})"
                ) from None
            raise CacheError(
                f"GCS refused access to bucket {self.bucket!r} ({exc.status}): check the "
                f"credentials (GOOGLE_APPLICATION_CREDENTIALS or the default account): "
                f"{_short(exc.message)}"
            ) from None
        except CacheError:
            raise
        except Exception as exc:  # credentials that cannot even produce a token
            raise CacheError(
                f"cannot open GCS bucket {self.bucket!r}: {type(exc).__name__}: {exc}"
            ) from exc

    async def _close(self) -> None:
        storage, session = self._storage, self._session
        self._storage = self._session = None
        if storage is not None:
            await storage.close()  # closes only what it made itself (its token's session)
        if session is not None:
            await session.close()

    @property
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError(f"{self!r} is not open: use 'async with' first")
        return self._session

    @property
    def _gcs(self) -> Storage:
        if self._storage is None:
            raise RuntimeError(f"{self!r} is not open: use 'async with' first")
        return self._storage

    # -- names ----------------------------------------------------------------------------------
    def _name(self, path: Path) -> str:
        return object_name(self._root, path, "GCS", MAX_OBJECT_NAME_BYTES)

    def _object_url(self, name: str) -> str:
        bucket = quote(self.bucket, safe="")
        return f"{self._api_root}/storage/v1/b/{bucket}/o/{quote(name, safe='')}"

    def _upload_url(self) -> str:
        return f"{self._api_root}/upload/storage/v1/b/{quote(self.bucket, safe='')}/o"

    # -- requests with retries ------------------------------------------------------------------
    async def _headers(self) -> dict[str, str]:
        if self._is_dev:
            return {}
        token = await self._gcs.token.get()
        return {"Authorization": f"Bearer {token}"}

    async def _retry(
        self,
        op: str,
        name: str,
        call: Callable[[], Awaitable[T]],
        allow: Collection[int] = (),
        attempts: int | None = None,
    ) -> T:
        """Run ``call`` and retry transient failures with exponential back-off.

        An HTTP error whose status is in ``allow`` is re-raised as ``aiohttp.ClientResponseError``
        for the caller to interpret (404: missing, 416: empty range, ...); any other failure that
        remains becomes a :class:`CacheError` naming the operation, the bucket and the object."""
        delay = self.backoff
        attempts = self.attempts if attempts is None else attempts
        for attempt in range(1, attempts + 1):
            try:
                return await call()
            except aiohttp.ClientResponseError as exc:
                if exc.status in allow:
                    raise
                detail = f"HTTP {exc.status}: {_short(exc.message)}"
                if exc.status not in RETRY_STATUSES:
                    raise self._error(op, name, detail, attempt) from None
                if attempt == attempts:
                    raise self._error(op, name, detail, attempt, transient=True) from None
                reason = f"HTTP {exc.status}"
            except RETRY_EXCEPTIONS as exc:
                if attempt == attempts:
                    detail = f"{type(exc).__name__}: {exc}"
                    raise self._error(op, name, detail, attempt, transient=True) from exc
                reason = type(exc).__name__
            log.info("GCS %s of %s: %s, retry %d in %.2fs", op, name, reason, attempt, delay)
            await anyio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.max_backoff)
        raise AssertionError("unreachable")

    def _error(
        self, op: str, name: str, detail: str, attempts: int, *, transient: bool = False
    ) -> CacheError:
        where = f"gs://{self.bucket}/{name}" if name else f"bucket {self.bucket!r}"
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        cls = _TransientError if transient else CacheError
        return cls(f"GCS {op} of {where} failed{tries}: {detail}")

    async def _request(
        self,
        op: str,
        name: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        allow: Collection[int] = (),
        ok: Collection[int] = (200, 201, 204, 206),
        seconds: float = SHORT_TIMEOUT,
        attempts: int | None = None,
    ) -> _Response:
        """One HTTP request on the shared session, with retries; the body is read whole (callers
        ask only for JSON or one chunk). Statuses in ``ok`` or 308 return; others raise."""

        async def call() -> _Response:
            hdrs = {**(await self._headers()), **(headers or {})}
            body = data() if callable(data) else data
            async with self._http.request(
                method,
                url,
                params=params,
                headers=hdrs,
                data=body,
                timeout=aiohttp.ClientTimeout(total=seconds),
                allow_redirects=False,  # a resumable session answers 308 "Resume Incomplete"
            ) as resp:
                content = await resp.read()
                if resp.status in ok or resp.status == 308:
                    return _Response(resp.status, resp.headers, content)
                raise aiohttp.ClientResponseError(
                    resp.request_info,
                    resp.history,
                    status=resp.status,
                    message=content.decode("utf-8", "replace"),
                    headers=resp.headers,
                )

        return await self._retry(op, name, call, allow, attempts)

    # -- uploads --------------------------------------------------------------------------------
    async def _open_writer(self, path: Path) -> BackendWriter:
        self._http  # noqa: B018  (fail early if not open)
        return _GcsWriter(self, path)

    async def _upload_media(
        self, op: str, name: str, data: bytes | bytearray | memoryview, crc: int
    ) -> None:
        """One plain media upload (for temporary parts: the CRC32C GCS computed is compared with
        ours, and a damaged part never becomes visible, it is deleted with the others)."""
        resp = await self._request(
            op,
            name,
            "POST",
            self._upload_url(),
            params={"uploadType": "media", "name": name},
            headers={"Content-Type": CONTENT_TYPE, "Content-Length": str(len(data))},
            data=lambda: _pieces(data),
            seconds=LONG_TIMEOUT,
        )
        self._check_uploaded(op, name, resp.json(), crc, len(data))

    async def _upload_whole(
        self, op: str, name: str, data: bytes | bytearray | memoryview, crc: int
    ) -> dict[str, Any]:
        """One multipart upload (metadata with the CRC32C, then the bytes): GCS rejects a body
        whose CRC32C differs; we also compare what it computed (emulators do not check)."""
        meta = {"name": name, "contentType": CONTENT_TYPE, "crc32c": crc_to_b64(crc)}

        def body() -> aiohttp.MultipartWriter:
            writer = aiohttp.MultipartWriter("related")
            writer.append_json(meta)
            writer.append(data, {"Content-Type": CONTENT_TYPE})
            return writer

        resp = await self._request(
            op,
            name,
            "POST",
            self._upload_url(),
            params={"uploadType": "multipart"},
            data=body,
            seconds=LONG_TIMEOUT,
        )
        result = resp.json()
        await self._check_final(op, name, result, crc, len(data))
        return result

    async def _check_final(
        self, op: str, name: str, result: Mapping[str, Any], crc: int, size: int
    ) -> None:
        """Check a value just made visible; if GCS holds other bytes than were sent, delete it
        (a damaged value must not be read as valid: its stored checksum would match it)."""
        try:
            self._check_uploaded(op, name, result, crc, size)
        except ChecksumMismatchError:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await self._delete_object(op, name)
            raise

    def _check_uploaded(
        self, op: str, name: str, result: Mapping[str, Any], crc: int, size: int
    ) -> None:
        stored = result.get("crc32c")
        if stored is None or int(result.get("size", -1)) != size:
            raise self._error(op, name, f"unexpected answer to an upload: {_short(str(result))}", 1)
        if crc_from_b64(stored) != crc:
            raise ChecksumMismatchError(
                f"GCS {op} of gs://{self.bucket}/{name}: GCS computed "
                f"{_checksum.render(crc_from_b64(stored))} for what was sent, "
                f"expected {_checksum.render(crc)}"
            )

    async def _compose(self, op: str, name: str, sources: list[str]) -> dict[str, Any]:
        gcs = self._gcs
        result: dict[str, Any] = await self._retry(
            op,
            name,
            lambda: gcs.compose(
                self.bucket, name, sources, content_type=CONTENT_TYPE, timeout=LONG_TIMEOUT
            ),
        )
        return result

    async def _delete_many(self, op: str, names: list[str]) -> list[str]:
        """Delete objects concurrently, ignoring those already gone; returns the errors."""
        limiter = anyio.CapacityLimiter(DELETE_CONCURRENCY)
        failures: list[str] = []

        async def one(name: str) -> None:
            async with limiter:
                try:
                    await self._delete_object(op, name)
                except KeyNotFoundError:
                    pass
                except CacheError as exc:
                    failures.append(str(exc))

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(one, name)
        return failures

    async def _delete_object(self, op: str, name: str) -> None:
        gcs = self._gcs
        try:
            await self._retry(
                op,
                name,
                lambda: gcs.delete(self.bucket, name, timeout=SHORT_TIMEOUT),
                allow=(404,),
            )
        except aiohttp.ClientResponseError:
            raise KeyNotFoundError(f"no object gs://{self.bucket}/{name}") from None

    # -- reads ----------------------------------------------------------------------------------
    async def _get_range(
        self, op: str, name: str, first: int, last: int | None, generation: str | None = None
    ) -> _Response | None:
        """GET bytes ``first..last`` (inclusive; ``last`` None: to the end). None if the range is
        not satisfiable (416); KeyNotFoundError if there is no such object."""
        params = {"alt": "media"}
        if generation is not None:
            params["generation"] = generation
        rng = f"bytes={first}-" if last is None else f"bytes={first}-{last}"
        try:
            return await self._request(
                op,
                name,
                "GET",
                self._object_url(name),
                params=params,
                headers={"Range": rng, "Accept-Encoding": "identity"},
                allow=(404, 416),
                seconds=LONG_TIMEOUT,
            )
        except aiohttp.ClientResponseError as exc:
            if exc.status == 416:
                return None
            if generation is not None:
                raise CacheError(
                    f"GCS {op} of gs://{self.bucket}/{name}: the object was replaced or deleted "
                    "while it was being read"
                ) from None
            raise KeyNotFoundError(f"no object gs://{self.bucket}/{name}") from None

    async def _metadata(self, op: str, name: str) -> dict[str, Any] | None:
        gcs = self._gcs
        try:
            meta: dict[str, Any] = await self._retry(
                op,
                name,
                lambda: gcs.download_metadata(self.bucket, name, timeout=SHORT_TIMEOUT),
                allow=(404,),
            )
        except aiohttp.ClientResponseError:
            return None
        return meta

    async def _stream(self, path: Path, chunk_size: int) -> AsyncIterator[bytes]:
        # Ranges are always the cache's chunk_size (the caller's is applied by rechunk()).
        name = self._name(path)
        step = self.chunk_size
        try:
            first = await self._get_range("read", name, 0, step - 1)
        except KeyNotFoundError:
            raise missing(path) from None
        if first is None:  # 416 on the first byte: an empty object
            meta = await self._metadata("read", name)
            if meta is None:
                raise missing(path)
            _checksum.verify(crc_from_b64(meta["crc32c"]), 0, repr(join(path)))
            return
        total, generation, expected = await self._describe(name, first)
        crc = await _crc(0, first.body)
        if first.status == 200 or total <= step:
            if len(first.body) != total:
                raise self._error("read", name, "short read", 1)
            _checksum.verify(expected, crc, repr(join(path)))
            if first.body:
                yield first.body
            return
        if len(first.body) != step:
            raise self._error("read", name, f"asked for {step} bytes, got {len(first.body)}", 1)

        async def fetch(start: int) -> bytes:
            last = min(start + step, total) - 1
            resp = await self._get_range("read", name, start, last, generation)
            if resp is None or len(resp.body) != last - start + 1:
                raise self._error("read", name, f"short read at offset {start}", 1)
            return resp.body

        starts = iter(range(step, total, step))
        pending: deque[asyncio.Task[bytes]] = deque()
        try:
            chunk: bytes | None = first.body
            while chunk is not None:
                while len(pending) < self.max_concurrency:  # keep ranges in flight
                    start = next(starts, None)
                    if start is None:
                        break
                    pending.append(asyncio.ensure_future(fetch(start)))
                yield chunk
                chunk = None
                if pending:
                    chunk = await pending.popleft()
                    crc = await _crc(crc, chunk)
        finally:
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(BaseException):
                    await task
        _checksum.verify(expected, crc, repr(join(path)))

    async def _describe(self, name: str, resp: _Response) -> tuple[int, str | None, int]:
        """Total size, generation and stored CRC32C of the object a media response came from
        (from its headers, or from the object's metadata if they are missing)."""
        content_range = resp.headers.get("Content-Range", "")
        total_text = content_range.rpartition("/")[2]
        generation = resp.headers.get("X-Goog-Generation")
        crc = _hash_header_crc(resp.headers.get("X-Goog-Hash"))
        if resp.status == 200:
            total_text = str(len(resp.body))
        if crc is not None and generation and total_text.isdigit():
            return int(total_text), generation, crc
        meta = await self._metadata("read", name)
        if meta is None or (generation and str(meta.get("generation")) != generation):
            raise CacheError(
                f"GCS read of gs://{self.bucket}/{name}: the object changed while it was read"
            )
        return int(meta["size"]), str(meta.get("generation")), crc_from_b64(meta["crc32c"])

    async def _read_range(self, path: Path, start: int, end: int | None) -> bytes:
        name = self._name(path)
        try:
            resp = await self._get_range("get_range", name, start, None if end is None else end - 1)
        except KeyNotFoundError:
            raise missing(path) from None
        if resp is None:
            return b""
        if resp.status == 200:  # a server that ignored the Range header
            return resp.body[start:end]
        return resp.body

    async def _stat(self, path: Path) -> Stat | None:
        meta = await self._metadata("stat", self._name(path))
        if meta is None:
            return None
        crc = crc_from_b64(meta["crc32c"])
        return Stat(size=int(meta["size"]), checksum=_checksum.render(crc))

    # -- delete, listing, clear -----------------------------------------------------------------
    async def _delete(self, path: Path) -> None:
        try:
            await self._delete_object("delete", self._name(path))
        except KeyNotFoundError:
            raise missing(path) from None

    async def _pages(
        self, op: str, prefix: str, delimiter: str | None
    ) -> AsyncIterator[dict[str, Any]]:
        gcs = self._gcs
        params = {"prefix": prefix, "maxResults": str(LIST_PAGE)}
        if delimiter:
            params["delimiter"] = delimiter
        while True:
            page_params = dict(params)

            async def call(p: dict[str, str] = page_params) -> dict[str, Any]:
                page: dict[str, Any] = await gcs.list_objects(
                    self.bucket, params=p, timeout=SHORT_TIMEOUT
                )
                return page

            page = await self._retry(op, prefix, call)
            yield page
            token = page.get("nextPageToken")
            if not token:
                return
            params["pageToken"] = token

    def _group_prefix(self, prefix: Path) -> str:
        return self._root + "".join(f"{segment}/" for segment in prefix)

    async def _list(self, prefix: Path, *, groups: bool) -> AsyncIterator[str]:
        base = self._group_prefix(prefix)
        seen: set[str] = set()
        async for page in self._pages("list", base, "/"):
            if groups:
                for sub in page.get("prefixes", []):
                    name = sub[len(base) : -1]
                    if name and "\\" not in name and name not in seen:
                        seen.add(name)
                        yield name
            else:
                for item in page.get("items", []):
                    name = item["name"][len(base) :]
                    if name and "/" not in name and "\\" not in name:
                        yield name

    async def _clear(self, prefix: Path) -> None:
        base = self._group_prefix(prefix)
        async for page in self._pages("clear", base, None):
            names = [item["name"] for item in page.get("items", [])]
            failures = await self._delete_many("clear", names)
            if failures:
                raise CacheError(
                    f"GCS clear of gs://{self.bucket}/{base}: {len(failures)} objects could not "
                    f"be deleted; first: {failures[0]}"
                )


class _GcsWriter(BackendWriter):
    """Receives a value's bytes and uploads them ``chunk_size`` at a time.

    At most one chunk is buffered (the chunk being filled); a full chunk is sent only once more
    data follows, so the last chunk of a resumable session is never empty and a value that fits
    in one chunk is one request at commit. The first chunk sent picks the mode: parallel composite
    (``max_concurrency > 1``) or resumable session."""

    def __init__(self, cache: GoogleStorageCache, path: Path) -> None:
        self._cache = cache
        self._name = cache._name(path)
        self._buf = bytearray()
        self._crc = 0
        self._size = 0
        self._mode: str | None = None  # None until the first chunk is sent
        # resumable session
        self._session_uri: str | None = None
        self._sent = 0
        # parallel composite
        self._tmp_dir = f"{cache._tmp_root}{secrets.token_hex(8)}/"
        self._temps: list[str] = []  # every temporary name ever started (to clean up)
        self._parts: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._slots = asyncio.Semaphore(cache.max_concurrency)
        self._closed = False

    # -- feeding --------------------------------------------------------------------------------
    async def write(self, data: memoryview) -> None:
        self._crc = await _crc(self._crc, data)
        self._size += len(data)
        size = self._cache.chunk_size
        pos = 0
        while pos < len(data):
            if len(self._buf) == size:  # a full chunk, and more data follows it
                chunk, self._buf = self._buf, bytearray()
                await self._send(chunk)
            take = min(size - len(self._buf), len(data) - pos)
            self._buf += data[pos : pos + take]
            pos += take

    async def _send(self, chunk: bytearray) -> None:
        if self._mode is None:
            self._mode = "composite" if self._cache.max_concurrency > 1 else "resumable"
        if self._mode == "composite":
            await self._start_part(chunk)
        else:
            await self._put_chunk(chunk, final=False)

    # -- parallel composite ---------------------------------------------------------------------
    def _raise_failed_part(self) -> None:
        for task in self._tasks:
            if task.done() and not task.cancelled():
                exc = task.exception()
                if exc is not None:
                    raise exc

    async def _start_part(self, chunk: bytearray) -> None:
        self._raise_failed_part()
        await self._slots.acquire()  # back-pressure: at most max_concurrency parts in flight
        self._raise_failed_part_releasing()
        name = f"{self._tmp_dir}{len(self._parts):06d}"
        self._temps.append(name)
        self._parts.append(name)
        task = asyncio.ensure_future(self._upload_part(name, chunk))
        task.add_done_callback(lambda _t: self._slots.release())
        self._tasks.append(task)

    def _raise_failed_part_releasing(self) -> None:
        try:
            self._raise_failed_part()
        except BaseException:
            self._slots.release()
            raise

    async def _upload_part(self, name: str, chunk: bytearray) -> None:
        crc = await _crc(0, chunk)
        try:
            await self._cache._upload_media("put", name, chunk, crc)
        except (CacheError, ChecksumMismatchError) as exc:
            raise self._named(exc, f"part {name.rsplit('/', 1)[-1]}") from exc

    def _named(self, exc: Exception, what: str) -> Exception:
        """The error of a temporary object, restated for the key being written."""
        where = f"gs://{self._cache.bucket}/{self._name}"
        return type(exc)(f"GCS put of {where} failed ({what}): {exc}")

    async def _compose_tree(self) -> dict[str, Any]:
        cache = self._cache
        sources = self._parts
        level = 0
        limiter = anyio.CapacityLimiter(cache.max_concurrency)

        failures: list[Exception] = []

        async def one(target: str, srcs: list[str]) -> None:
            async with limiter:
                try:
                    await cache._compose("put", target, srcs)
                except CacheError as exc:
                    failures.append(self._named(exc, "compose"))

        while len(sources) > MAX_COMPOSE:
            groups = [sources[i : i + MAX_COMPOSE] for i in range(0, len(sources), MAX_COMPOSE)]
            names = [f"{self._tmp_dir}c{level}-{i:06d}" for i in range(len(groups))]
            self._temps.extend(names)

            async with anyio.create_task_group() as tg:
                for target, srcs in zip(names, groups, strict=True):
                    tg.start_soon(one, target, srcs)
            if failures:
                raise failures[0]
            sources = names
            level += 1
        return await cache._compose("put", self._name, sources)

    # -- resumable session ----------------------------------------------------------------------
    async def _put_chunk(self, chunk: bytearray, *, final: bool) -> None:
        cache = self._cache
        if self._session_uri is None:
            resp = await cache._request(
                "put",
                self._name,
                "POST",
                cache._upload_url(),
                params={"uploadType": "resumable", "name": self._name},
                headers={"Content-Type": "application/json; charset=UTF-8"},
                data=json.dumps({"name": self._name, "contentType": CONTENT_TYPE}),
            )
            self._session_uri = resp.headers["Location"]
        start = self._sent
        total = f"{start + len(chunk)}" if final else "*"
        offset = 0  # how much of this chunk GCS has persisted
        view = memoryview(chunk)
        delay = cache.backoff
        for attempt in range(1, cache.attempts + 1):
            headers = {
                "Content-Range": f"bytes {start + offset}-{start + len(chunk) - 1}/{total}",
                "Content-Length": str(len(chunk) - offset),
            }
            if final:
                headers["X-Goog-Hash"] = f"crc32c={crc_to_b64(self._crc)}"
            try:
                resp = await cache._request(
                    "put",
                    self._name,
                    "PUT",
                    self._session_uri,
                    headers=headers,
                    data=_pieces(view[offset:]),
                    seconds=LONG_TIMEOUT,
                    attempts=1,  # a chunk is retried only after asking what was persisted
                )
            except _TransientError:
                if attempt == cache.attempts:
                    raise
                await anyio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, cache.max_backoff)
                # the chunk may have been partly persisted: ask the session where it stands
                offset = await self._persisted(start, len(chunk))
                if offset == len(chunk):
                    if final:
                        raise cache._error(
                            "put", self._name, "the session finished without an answer", attempt
                        ) from None
                    break
                continue
            if resp.status in (200, 201):
                if not final:
                    raise cache._error("put", self._name, "upload finished early", 1)
                await cache._check_final("put", self._name, resp.json(), self._crc, self._size)
                break
            persisted = _persisted_end(resp.headers.get("Range"))
            if persisted >= start + len(chunk):
                break
            offset = max(0, persisted - start)
        else:
            raise cache._error("put", self._name, "the upload session made no progress", 0)
        self._sent = start + len(chunk)

    async def _persisted(self, start: int, length: int) -> int:
        """Ask the session how much it has (``Content-Range: bytes */*``); the offset into the
        current chunk to resume from."""
        assert self._session_uri is not None
        resp = await self._cache._request(
            "put",
            self._name,
            "PUT",
            self._session_uri,
            headers={"Content-Range": "bytes */*"},
            data=b"",
        )
        if resp.status in (200, 201):
            return length
        persisted = _persisted_end(resp.headers.get("Range"))
        if persisted < start:
            raise self._cache._error("put", self._name, "the upload session lost data", 1)
        return min(persisted - start, length)

    # -- commit and abort -----------------------------------------------------------------------
    async def commit(self) -> None:
        if self._closed:
            raise RuntimeError("writer already closed")
        cache = self._cache
        chunk, self._buf = self._buf, bytearray()
        if self._mode is None:
            await cache._upload_whole("put", self._name, chunk, self._crc)
        elif self._mode == "resumable":
            await self._put_chunk(chunk, final=True)
        else:
            try:
                if chunk:
                    await self._start_part(chunk)
                await asyncio.gather(*self._tasks)
                result = await self._compose_tree()
                await cache._check_final("put", self._name, result, self._crc, self._size)
            finally:
                with anyio.CancelScope(shield=True):
                    await self._cleanup()
        self._closed = True

    async def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buf = bytearray()
        with anyio.CancelScope(shield=True):
            await self._cleanup()
            if self._session_uri is not None:  # GCS answers 499: the session is cancelled
                with contextlib.suppress(Exception):
                    async with self._cache._http.delete(
                        self._session_uri,
                        headers=await self._cache._headers(),
                        timeout=aiohttp.ClientTimeout(total=SHORT_TIMEOUT),
                    ):
                        pass

    async def _cleanup(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks = []
        temps, self._temps = self._temps, []
        if temps:
            for failure in await self._cache._delete_many("cleanup", temps):
                log.warning("temporary object left behind: %s", failure)


async def _pieces(data: bytes | bytearray | memoryview) -> AsyncIterator[memoryview]:
    """A request body sent ``ALIGN`` bytes at a time: aiohttp waits for the socket to drain
    between pieces, so the transport never holds a second copy of a whole chunk."""
    view = memoryview(data)
    for start in range(0, len(view), ALIGN):
        yield view[start : start + ALIGN]


def _persisted_end(range_header: str | None) -> int:
    """From a 308's ``Range: bytes=0-N``, how many bytes the session holds (N + 1; 0 if none)."""
    if not range_header:
        return 0
    _, _, last = range_header.partition("-")
    return int(last) + 1 if last.strip().isdigit() else 0


def _short(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."
