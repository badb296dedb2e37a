"""GoogleStorageCache: values as objects in a Google Cloud Storage bucket; the GCS primitives
under the shared transfer engine.

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

What is GCS's own here (the engine, ``_transfer.py``, does the rest: bounded concurrent parts,
ordered ranged reads, CRC32C; ``_retry.py``: the one retry policy and the deadlines):

* the upload primitives (:class:`_GcsUpload`): a value of at most ``chunk_size`` bytes is one
  multipart upload. A larger one, with ``max_concurrency > 1``, is a parallel composite upload:
  parts uploaded as temporary objects, composed (at most 32 sources a call, in a tree), then
  deleted, also on failure or cancellation. With ``max_concurrency == 1`` it is a resumable
  upload session fed one chunk at a time (``Content-Range: bytes a-b/*`` until the last chunk);
  a chunk that fails is resumed from what the session says it persisted;
* ranged GETs pinned to the object's generation;
* what GCS must answer: JSON for every JSON call, the object's ``crc32c`` and ``size`` after an
  upload. A plain web server is a clear :class:`CacheError`, not a store.

gcloud-aio-auth provides the credentials and gcloud-aio-storage the API root
(``STORAGE_EMULATOR_HOST``); every request is made here on one aiohttp session, so every one has
the same deadlines and retries.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import anyio
from gcloud.aio.auth import Token
from gcloud.aio.storage.storage import SCOPES, init_api_root

from swath._urls import refuse_credentials
from swath.cache import _checksum, _transfer
from swath.cache._base import Stat, StoredObject, joined, missing
from swath.cache._retry import GaveUp
from swath.cache.keys import Path, join, object_name
from swath.errors import CacheError, ChecksumMismatchError, InvalidKeyError, KeyNotFoundError

log = logging.getLogger(__name__)
_transfer.register_body_payload()

ALIGN = 256 << 10  # resumable chunks must be multiples of 256 KiB
MAX_CHUNK = 5 << 30
MAX_COMPOSE = 32  # sources per compose call
MAX_OBJECT_NAME_BYTES = 1024  # GCS's limit for an object name
TMP_NAME_BYTES = 16 + 1 + 9  # "<upload id>/<part or compose name>" below the hidden prefix
TMP_SEGMENT = "\\swath-tmp"  # a backslash: no key segment can contain one
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
CONTENT_TYPE = "application/octet-stream"
DELETE_CONCURRENCY = 32
LIST_PAGE = 1000

crc_to_b64 = _checksum.to_b64  # GCS's form of a CRC32C: base64 of the 4 big-endian bytes


def _hash_header_crc(header: str | None) -> int | None:
    """The CRC32C in an ``X-Goog-Hash: crc32c=...,md5=...`` header, if any."""
    for item in (header or "").split(","):
        algo, _, value = item.strip().partition("=")
        if algo == "crc32c" and value:
            return _checksum.from_b64(value)
    return None


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, aiohttp.ClientResponseError):
        return exc.status in RETRY_STATUSES
    return isinstance(
        exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | TimeoutError
    )


def _detail(exc: BaseException | None) -> str:
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status}: {_short(exc.message)}"
    if exc is None:
        return "no answer"
    return f"{type(exc).__name__}: {exc}"


class _TransientError(CacheError):
    """A failure that persisted through the retries but might succeed later (5xx, timeouts)."""


class _Response:
    """What a request returns: status, headers and the body, read already: kept as the pieces
    the connection received (a media range is handed on as they are) and joined on first use of
    ``body``."""

    def __init__(
        self, what: str, status: int, headers: Mapping[str, str], received: list[bytes]
    ) -> None:
        self.what = what
        self.status = status
        self.headers = headers
        self.received = received
        self.size = sum(map(len, received))

    @property
    def body(self) -> bytes:
        if len(self.received) != 1:
            self.received = [joined(self.received)]
        return self.received[0]

    def json(self) -> dict[str, Any]:
        """The body as a JSON object; anything else is not a GCS answer."""
        try:
            data = json.loads(self.body or b"{}")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            kind = self.headers.get("Content-Type", "no content type")
            raise CacheError(
                f"{self.what}: the endpoint answered {kind} ({_short(repr(self.body[:200]))}) "
                "instead of JSON; is it a GCS server?"
            )
        return data


class GoogleStorageCache(_transfer.PartedBackend):
    """A cache in a Google Cloud Storage bucket (or fake-gcs-server via STORAGE_EMULATOR_HOST).

    ``chunk_size`` (a multiple of 256 KiB) is the size of upload parts and download ranges;
    ``max_concurrency`` is how many of them are in flight at once for one value. Streaming holds
    at most about ``chunk_size * (max_concurrency + 2)`` bytes. Time limits: ``**deadlines``
    (docs/gcs.md); retries: the ``RetryPolicy`` attributes.
    """

    url_scheme = "gs"

    def __init__(
        self,
        bucket: str,
        prefix: str = "jobs",
        *,
        chunk_size: int = 8 << 20,
        max_concurrency: int = 8,
        read_only: bool = False,
        **deadlines: float | str,
    ) -> None:
        super().__init__()
        if isinstance(chunk_size, int) and chunk_size % ALIGN:
            raise ValueError(f"chunk_size must be a multiple of 256 KiB ({ALIGN}): {chunk_size}")
        _transfer.check_tuning(
            "chunk_size (a multiple of 256 KiB)", chunk_size, ALIGN, MAX_CHUNK, max_concurrency
        )
        self._configure(bucket, prefix, max_concurrency, deadlines, read_only)
        self.chunk_size = chunk_size
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
        self._token: Token | None = None
        self._api_root = ""
        self._is_dev = False

    def __repr__(self) -> str:
        return f"GoogleStorageCache({self.bucket!r}, prefix={self.prefix!r})"

    # -- lifecycle ------------------------------------------------------------------------------
    async def _open(self) -> None:
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            refuse_credentials(os.environ["STORAGE_EMULATOR_HOST"], "$STORAGE_EMULATOR_HOST")
        self._is_dev, self._api_root = init_api_root(None)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(64, 4 * self.max_concurrency)),
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=self.deadlines.connect_timeout,
                sock_read=self.deadlines.read_timeout,
            ),
            auto_decompress=False,
        )
        self._session = session
        try:
            try:  # gcloud-aio-auth finds the credentials (it may read files here)
                self._token = None if self._is_dev else Token(scopes=SCOPES, session=session)  # type: ignore[arg-type]
            except Exception as exc:
                raise CacheError(
                    f"cannot open GCS bucket {self.bucket!r}: no usable credentials: {exc}"
                ) from exc
            await self._check_bucket()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._close()
            raise

    async def _check_bucket(self) -> None:
        """One ``objects.list`` under the prefix: the bucket exists, the credentials are
        accepted, and the endpoint answers like GCS."""
        url = f"{self._api_root}/storage/v1/b/{quote(self.bucket, safe='')}/o"
        params = {"maxResults": "1", "prefix": self._root, "fields": "kind"}
        try:
            resp = await self._request("open", "", "GET", url, params=params, allow=(401, 403, 404))
            resp.json()
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
        except CacheError as exc:
            raise CacheError(
                f"cannot use GCS bucket {self.bucket!r} at {self._api_root}: {exc}"
            ) from exc
        except Exception as exc:  # credentials that cannot even produce a token
            raise CacheError(
                f"cannot open GCS bucket {self.bucket!r}: {type(exc).__name__}: {exc}"
            ) from exc

    async def _close(self) -> None:
        session, self._session, self._token = self._session, None, None
        if session is not None:
            await session.close()

    @property
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError(f"{self!r} is not open: use 'async with' first")
        return self._session

    # -- names ----------------------------------------------------------------------------------
    def _name(self, path: Path) -> str:
        return object_name(self._root, path, "GCS", MAX_OBJECT_NAME_BYTES)

    def _object_url(self, name: str) -> str:
        bucket = quote(self.bucket, safe="")
        return f"{self._api_root}/storage/v1/b/{bucket}/o/{quote(name, safe='')}"

    def _upload_url(self) -> str:
        return f"{self._api_root}/upload/storage/v1/b/{quote(self.bucket, safe='')}/o"

    def _where(self, name: str) -> str:
        return f"gs://{self.bucket}/{name}" if name else f"bucket {self.bucket!r}"

    # -- requests -------------------------------------------------------------------------------
    async def _headers(self) -> dict[str, str]:
        if self._token is None:
            return {}
        return {"Authorization": f"Bearer {await self._token.get()}"}

    def _error(
        self, op: str, name: str, detail: str, attempts: int = 1, *, transient: bool = False
    ) -> CacheError:
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        cls = _TransientError if transient else CacheError
        return cls(f"GCS {op} of {self._where(name)} failed{tries}: {detail}")

    async def _send(
        self,
        op: str,
        name: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        ok: Collection[int] = (200, 201, 204, 206),
    ) -> _Response:
        """One attempt of one request; the body is read whole, as the pieces received (callers
        ask only for JSON or one chunk). Statuses in ``ok`` or 308 return; others raise
        ``ClientResponseError``."""
        hdrs = {**(await self._headers()), **(headers or {})}
        async with self._http.request(
            method,
            url,
            params=params,
            headers=hdrs,
            data=data() if callable(data) else data,
            allow_redirects=False,  # a resumable session answers 308 "Resume Incomplete"
        ) as resp:
            received = [piece async for piece in _transfer.received(resp.content)]
            answer = _Response(f"GCS {op} of {self._where(name)}", resp.status, resp.headers,
                               received)  # fmt: skip
            if resp.status in ok or resp.status == 308:
                return answer
            raise aiohttp.ClientResponseError(
                resp.request_info,
                resp.history,
                status=resp.status,
                message=answer.body.decode("utf-8", "replace"),
                headers=resp.headers,
            )

    async def _retried(
        self,
        op: str,
        name: str,
        call: Callable[[], Awaitable[Any]],
        allow: Collection[int] = (),
        budget: float | None = None,
    ) -> Any:
        """``call`` under the retry policy and the operation budget. An HTTP error whose status
        is in ``allow`` is raised as ``ClientResponseError`` for the caller to interpret (404:
        missing, 416: empty range); any other failure becomes a :class:`CacheError` naming the
        operation, the bucket and the object."""
        try:
            return await self._with_retries(
                call, _transient, f"GCS {op} of {self._where(name)}", budget
            )
        except aiohttp.ClientResponseError as exc:
            if exc.status in allow:
                raise
            raise self._error(op, name, _detail(exc)) from None
        except GaveUp as exc:
            detail = _detail(exc.last)
            if exc.budget_spent:
                detail += (
                    f" (no success within operation_timeout={self.deadlines.operation_timeout:g} s)"
                )
            raise self._error(op, name, detail, exc.attempts, transient=True) from exc

    async def _request(
        self,
        op: str,
        name: str,
        method: str,
        url: str,
        *,
        allow: Collection[int] = (),
        budget: float | None = None,
        **options: Any,
    ) -> _Response:
        """One request with retries (see ``_send`` and ``_retried``)."""
        response: _Response = await self._retried(
            op, name, lambda: self._send(op, name, method, url, **options), allow, budget
        )
        return response

    def _body(self, data: bytes | bytearray | memoryview) -> Callable[[], _transfer.Body]:
        """A fresh request body for each attempt, sent without copies and with a deadline."""
        return lambda: _transfer.Body(data, stall=self.deadlines.read_timeout)

    # -- uploads --------------------------------------------------------------------------------
    def _part_writer(self, path: Path) -> _transfer.PartWriter:
        self._http  # noqa: B018  (fail early if not open)
        return _transfer.PartWriter(
            _GcsUpload(self, self._name(path)),
            self.chunk_size,
            self.max_concurrency,
            abort_timeout=self.deadlines.abort_timeout,
        )

    async def _upload_media(self, op: str, name: str, data: memoryview, crc: int) -> None:
        """One plain media upload (for temporary parts: the CRC32C GCS computed is compared with
        ours, and a damaged part never becomes visible, it is deleted with the others)."""
        resp = await self._request(
            op,
            name,
            "POST",
            self._upload_url(),
            params={"uploadType": "media", "name": name},
            headers={"Content-Type": CONTENT_TYPE, "Content-Length": str(len(data))},
            data=self._body(data),
        )
        self._check_uploaded(op, name, resp.json(), crc, len(data))

    async def _upload_whole(self, op: str, name: str, data: memoryview, crc: int) -> None:
        """One multipart upload (metadata with the CRC32C, then the bytes): GCS rejects a body
        whose CRC32C differs; we also compare what it computed (emulators do not check)."""
        meta = {"name": name, "contentType": CONTENT_TYPE, "crc32c": crc_to_b64(crc)}

        def body() -> aiohttp.MultipartWriter:
            writer = aiohttp.MultipartWriter("related")
            writer.append_json(meta)
            writer.append(self._body(data)(), {"Content-Type": CONTENT_TYPE})
            return writer

        resp = await self._request(
            op, name, "POST", self._upload_url(), params={"uploadType": "multipart"}, data=body
        )
        await self._check_final(op, name, resp.json(), crc, len(data))

    async def _check_final(
        self, op: str, name: str, result: Mapping[str, Any], crc: int, size: int
    ) -> None:
        """Check a value just made visible; if GCS holds other bytes than were sent, delete it
        (a damaged value must not be read as valid: its stored checksum would match it)."""
        try:
            self._check_uploaded(op, name, result, crc, size)
        except ChecksumMismatchError:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.deadlines.abort_timeout):
                try:
                    await self._delete_object(op, name)
                except CacheError as exc:
                    log.warning("could not delete the damaged %s: %s", self._where(name), exc)
            raise

    def _check_uploaded(
        self, op: str, name: str, result: Mapping[str, Any], crc: int, size: int
    ) -> None:
        stored = result.get("crc32c")
        if not isinstance(stored, str) or str(result.get("size")) != str(size):
            raise self._error(op, name, f"unexpected answer to an upload: {_short(str(result))}")
        if _checksum.from_b64(stored) != crc:
            raise ChecksumMismatchError(
                f"GCS {op} of gs://{self.bucket}/{name}: GCS computed "
                f"{_checksum.render(_checksum.from_b64(stored))} for what was sent, "
                f"expected {_checksum.render(crc)}"
            )

    async def _compose(self, op: str, name: str, sources: list[str]) -> dict[str, Any]:
        body = {
            "sourceObjects": [{"name": source} for source in sources],
            "destination": {"contentType": CONTENT_TYPE},
        }
        resp = await self._request(
            op,
            name,
            "POST",
            self._object_url(name) + "/compose",
            headers={"Content-Type": "application/json"},
            data=json.dumps(body),
        )
        return resp.json()

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
        try:
            await self._request(op, name, "DELETE", self._object_url(name), allow=(404,))
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
        try:
            resp = await self._request(op, name, "GET", self._object_url(name), allow=(404,))
        except aiohttp.ClientResponseError:
            return None
        meta = resp.json()
        if not isinstance(meta.get("crc32c"), str) or "size" not in meta:
            raise self._error(op, name, f"metadata without crc32c and size: {_short(str(meta))}")
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
            _checksum.verify(_checksum.from_b64(meta["crc32c"]), 0, repr(join(path)))
            return
        total, generation, expected = await self._describe(name, first)
        if first.status == 200 or total <= step:
            if first.size != total:
                raise self._error("read", name, "short read")
        elif first.size != step:
            raise self._error("read", name, f"asked for {step} bytes, got {first.size}")

        async def fetch(start: int, end: int) -> list[bytes]:
            resp = await self._get_range("read", name, start, end - 1, generation)
            if resp is None or resp.size != end - start:
                raise self._error("read", name, f"short read at offset {start}")
            return resp.received

        async for piece in _transfer.ordered_reads(
            first.received, first.size, total, step, self.max_concurrency, fetch,
            chunk_size, expected, repr(join(path)),
        ):  # fmt: skip
            yield piece

    async def _describe(self, name: str, resp: _Response) -> tuple[int, str | None, int]:
        """Total size, generation and stored CRC32C of the object a media response came from
        (from its headers, or from the object's metadata if they are missing)."""
        content_range = resp.headers.get("Content-Range", "")
        total_text = content_range.rpartition("/")[2]
        generation = resp.headers.get("X-Goog-Generation")
        crc = _hash_header_crc(resp.headers.get("X-Goog-Hash"))
        if resp.status == 200:
            total_text = str(resp.size)
        if crc is not None and generation and total_text.isdigit():
            return int(total_text), generation, crc
        meta = await self._metadata("read", name)
        if meta is None or (generation and str(meta.get("generation")) != generation):
            raise CacheError(
                f"GCS read of gs://{self.bucket}/{name}: the object changed while it was read"
            )
        return int(meta["size"]), str(meta.get("generation")), _checksum.from_b64(meta["crc32c"])

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
        crc = _checksum.from_b64(meta["crc32c"])
        return Stat(size=int(meta["size"]), checksum=_checksum.render(crc))

    # -- delete, listing, clear -----------------------------------------------------------------
    async def _delete(self, path: Path) -> None:
        try:
            await self._delete_object("delete", self._name(path))
        except KeyNotFoundError:
            raise missing(path) from None

    async def _pages(
        self, op: str, prefix: str, delimiter: str | None, page_size: int = LIST_PAGE
    ) -> AsyncIterator[dict[str, Any]]:
        url = f"{self._api_root}/storage/v1/b/{quote(self.bucket, safe='')}/o"
        params = {"prefix": prefix, "maxResults": str(page_size)}
        if delimiter:
            params["delimiter"] = delimiter
        while True:
            page = (await self._request(op, prefix, "GET", url, params=dict(params))).json()
            yield page
            token = page.get("nextPageToken")
            if not token:
                return
            params["pageToken"] = token

    def _group_prefix(self, prefix: Path) -> str:
        return self._root + "".join(f"{segment}/" for segment in prefix)

    async def _objects(self, page_size: int = LIST_PAGE) -> AsyncIterator[list[StoredObject]]:
        """Every object below the prefix but this cache's temporaries (whose names hold a
        backslash), one ``objects.list`` page at a time; only one page is held."""
        async for page in self._pages("objects", self._root, None, page_size):
            yield [
                StoredObject(
                    item["name"][len(self._root) :],
                    int(item.get("size", 0)),
                    _rfc3339(item.get("timeCreated") or item.get("updated") or ""),
                    str(item.get("generation", "")),
                    _checksum.render(_checksum.from_b64(item["crc32c"]))
                    if isinstance(item.get("crc32c"), str)
                    else None,
                )
                for item in page.get("items", [])
                if TMP_SEGMENT not in item["name"]
            ]

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


def compose_groups(count: int) -> list[tuple[int, int]]:
    """Which of ``count`` consecutive sources to compose into intermediate objects at one level
    of a composite upload: ``[start, end)`` runs, in order, of 2 to ``MAX_COMPOSE`` sources.

    A compose copies its sources (the emulator copies every byte; GCS charges one operation a
    call), so a level merges only as many sources as the final compose needs to take at most
    ``MAX_COMPOSE``: ``k`` groups of ``r + k`` sources in all remove ``r = count - MAX_COMPOSE``,
    split evenly so they compose at once. 64 parts: two groups of 17 (34 parts copied twice,
    30 once), where 32-source groups copied all 64 twice. Above ``MAX_COMPOSE`` x
    ``MAX_COMPOSE`` sources one level cannot get there: it merges runs of ``MAX_COMPOSE``."""
    if count <= MAX_COMPOSE:
        return []
    excess = count - MAX_COMPOSE
    k = -(-excess // (MAX_COMPOSE - 1))  # each group of g sources removes g - 1
    if k > MAX_COMPOSE:  # too many for one level: full groups, and another level after
        runs = [(i, min(i + MAX_COMPOSE, count)) for i in range(0, count, MAX_COMPOSE)]
        return [(start, end) for start, end in runs if end - start > 1]
    merged = excess + k
    size, extra = divmod(merged, k)
    groups, start = [], 0
    for i in range(k):
        end = start + size + (1 if i < extra else 0)
        groups.append((start, end))
        start = end
    return groups


class _GcsUpload(_transfer.PartTarget):
    """One value's upload: a multipart upload if it fits one chunk; else a parallel composite
    upload (``max_concurrency > 1``) or a resumable session (``max_concurrency == 1``)."""

    def __init__(self, cache: GoogleStorageCache, name: str) -> None:
        self._cache = cache
        self._name = name
        self._composite = cache.max_concurrency > 1
        # parallel composite
        self._tmp_dir = f"{cache._tmp_root}{secrets.token_hex(8)}/"
        self._temps: list[str] = []  # every temporary name ever started (to clean up)
        #: temporaries whose request was cancelled before the server answered: the server may
        #: still create them after the clean-up deleted the others (see _cleanup)
        self._unsettled: set[str] = set()
        # resumable session
        self._session_uri: str | None = None
        self._sent = 0
        self._last: memoryview | None = None

    async def put_single(self, data: memoryview, crc: int) -> None:
        await self._cache._upload_whole("put", self._name, data, crc)

    async def begin(self) -> None:
        if self._composite:
            return
        resp = await self._cache._request(
            "put",
            self._name,
            "POST",
            self._cache._upload_url(),
            params={"uploadType": "resumable", "name": self._name},
            headers={"Content-Type": "application/json; charset=UTF-8"},
            data=json.dumps({"name": self._name, "contentType": CONTENT_TYPE}),
        )
        location = resp.headers.get("Location")
        if not location:
            raise self._cache._error("put", self._name, "no resumable session URI in the answer")
        self._session_uri = location

    async def upload_part(self, number: int, data: memoryview, crc: int, last: bool) -> Any:
        if not self._composite:
            if last:
                self._last = data  # sent by complete() with the whole value's CRC32C
            else:
                await self._put_chunk(data, final=None)
            return None
        name = f"{self._tmp_dir}{number - 1:06d}"
        self._temps.append(name)
        self._unsettled.add(name)
        try:
            await self._cache._upload_media("put", name, data, crc)
        except (CacheError, ChecksumMismatchError) as exc:
            self._unsettled.discard(name)  # the server answered
            raise self._named(exc, f"part {number - 1:06d}") from exc
        self._unsettled.discard(name)
        return name

    def _named(self, exc: Exception, what: str) -> Exception:
        """The error of a temporary object, restated for the key being written."""
        return type(exc)(
            f"GCS put of gs://{self._cache.bucket}/{self._name} failed ({what}): {exc}"
        )

    async def complete(self, parts: list[_transfer.Part], crc: int, size: int) -> None:
        cache = self._cache
        if not self._composite:
            assert self._last is not None
            result = await self._put_chunk(self._last, final=crc)
            await cache._check_final("put", self._name, result, crc, size)
            return
        done = False
        try:
            result = await self._compose_tree([str(p.token) for p in parts])
            await cache._check_final("put", self._name, result, crc, size)
            done = True
        finally:  # the parts go in any case; after a failure, within the abort budget
            budget = cache.deadlines.operation_timeout if done else cache.deadlines.abort_timeout
            with anyio.CancelScope(shield=True), anyio.move_on_after(budget):
                await self._cleanup()

    async def _compose_tree(self, sources: list[str]) -> dict[str, Any]:
        cache = self._cache
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
            groups = compose_groups(len(sources))
            names = [f"{self._tmp_dir}c{level}-{i:06d}" for i in range(len(groups))]
            self._temps.extend(names)
            async with anyio.create_task_group() as tg:
                for target, (start, end) in zip(names, groups, strict=True):
                    tg.start_soon(one, target, sources[start:end])
            if failures:
                raise failures[0]
            # each group becomes one source; the sources between and after the groups stay
            merged: list[str] = []
            done = 0
            for target, (start, end) in zip(names, groups, strict=True):
                merged += sources[done:start]
                merged.append(target)
                done = end
            sources = merged + sources[done:]
            level += 1
        return await cache._compose("put", self._name, sources)

    async def _put_chunk(self, chunk: memoryview, *, final: int | None) -> dict[str, Any]:
        """Send one chunk of the resumable session (the last one when ``final`` is the whole
        value's CRC32C). A chunk that fails is resumed from what the session says it persisted
        (``Content-Range: bytes */*``), under the retry policy."""
        cache = self._cache
        assert self._session_uri is not None
        uri, start, length = self._session_uri, self._sent, len(chunk)
        total = f"{start + length}" if final is not None else "*"
        state = {"tries": 0}

        async def attempt() -> dict[str, Any]:
            offset = 0
            if state["tries"]:
                offset, finished = await self._persisted(start, length, final)
                if finished is not None:  # the session is complete: the answer was lost
                    if final is None:
                        raise cache._error("put", self._name, "upload finished early")
                    return finished
                if offset == length:
                    return {}
            state["tries"] += 1
            headers = {
                "Content-Range": f"bytes {start + offset}-{start + length - 1}/{total}",
                "Content-Length": str(length - offset),
            }
            if final is not None:
                headers["X-Goog-Hash"] = f"crc32c={crc_to_b64(final)}"
            try:
                resp = await cache._send(
                    "put",
                    self._name,
                    "PUT",
                    uri,
                    headers=headers,
                    data=_transfer.Body(chunk[offset:], stall=cache.deadlines.read_timeout),
                )
            except aiohttp.ClientResponseError as exc:
                return await self._finished_object(exc, final)
            if resp.status in (200, 201):
                if final is None:
                    raise cache._error("put", self._name, "upload finished early")
                return resp.json()
            if _persisted_end(resp.headers.get("Range")) < start + length:
                raise aiohttp.ClientPayloadError("the session persisted only part of the chunk")
            return {}

        result: dict[str, Any] = await cache._retried("put", self._name, attempt)
        self._sent = start + length
        return result

    async def _persisted(
        self, start: int, length: int, final: int | None
    ) -> tuple[int, dict[str, Any] | None]:
        """Ask the session how much it has: the offset into the current chunk to resume from,
        and the object if the session is already complete (its last answer was lost). A
        session that is gone (GCS forgets completed sessions after a while; fake-gcs-server at
        once) after the last chunk was sent: the object itself says whether it is ours."""
        cache = self._cache
        assert self._session_uri is not None
        try:
            resp = await cache._send(
                "put",
                self._name,
                "PUT",
                self._session_uri,
                headers={"Content-Range": "bytes */*"},
                data=b"",
            )
        except aiohttp.ClientResponseError as exc:
            return length, await self._finished_object(exc, final)
        if resp.status in (200, 201):
            return length, resp.json()
        persisted = _persisted_end(resp.headers.get("Range"))
        if persisted < start:
            raise cache._error("put", self._name, "the upload session lost data")
        return min(persisted - start, length), None

    async def _finished_object(
        self, exc: aiohttp.ClientResponseError, final: int | None
    ) -> dict[str, Any]:
        """After the last chunk was sent, a session that answers 404 is gone (GCS forgets
        completed sessions after a while, fake-gcs-server at once; aiohttp itself may resend
        a PUT whose connection closed): the object says whether it is ours."""
        if exc.status != 404 or final is None:
            raise exc
        meta = await self._cache._metadata("put", self._name)
        if meta is None or meta["crc32c"] != crc_to_b64(final):
            raise self._cache._error("put", self._name, "the upload session is gone") from None
        return meta

    async def abort(self) -> None:
        await self._cleanup()
        if self._session_uri is not None:  # GCS answers 499: the session is cancelled
            try:
                await self._cache._send(
                    "put", self._name, "DELETE", self._session_uri, ok=(499, 204, 200)
                )
            except (aiohttp.ClientError, TimeoutError, CacheError) as exc:
                log.info("could not cancel the upload session of %s: %s", self._name, exc)

    async def _cleanup(self) -> None:
        temps, self._temps = self._temps, []
        unsettled, self._unsettled = self._unsettled, set()
        if temps:
            for failure in await self._cache._delete_many("cleanup", temps):
                log.warning("temporary object left behind: %s", failure)
        if unsettled:
            await self._sweep()

    async def _sweep(self) -> None:
        """Delete the temporaries that appear after the clean-up: a part whose request was
        cancelled (another part failed, or the caller cancelled) may have reached the server,
        which creates it a moment later (through a proxy, after the client gave up). Looked for
        a few times over about a second; the caller bounds the whole abort in time."""
        for delay in (0.05, 0.25, 0.7):
            await asyncio.sleep(delay)
            left = [
                item["name"]
                async for page in self._cache._pages("cleanup", self._tmp_dir, None)
                for item in page.get("items", [])
            ]
            if left:
                for failure in await self._cache._delete_many("cleanup", left):
                    log.warning("temporary object left behind: %s", failure)


def _rfc3339(text: str) -> float:
    """Unix seconds of a GCS timestamp (``2026-11-29T21:00:00.123Z``); 0.0 if there is none."""
    if not text:
        return 0.0
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _persisted_end(range_header: str | None) -> int:
    """From a 308's ``Range: bytes=0-N``, how many bytes the session holds (N + 1; 0 if none)."""
    if not range_header:
        return 0
    _, _, last = range_header.partition("-")
    return int(last) + 1 if last.strip().isdigit() else 0


def _short(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


__all__ = ["TMP_SEGMENT", "GoogleStorageCache", "crc_to_b64"]
