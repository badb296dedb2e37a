"""A fault-injecting HTTP proxy on a loopback port, shared by the S3 and GCS fault tests.

It sits between a cache and a real server (moto, rclone, fake-gcs-server) and decides, request by
request, what happens (:attr:`FaultProxy.rule`): relay it (``"pass"``), answer ``503`` itself,
answer ``200`` with an HTML page (``"html"``: a plain web server), take the request and never
answer (``"silent"``), relay it and then close without answering (``"drop"``: a lost response),
relay the answer and reset the connection after ``cut_after`` bytes of it (``"reset"``; with
``"reset_later"`` those bytes are left a moment to reach the client first), or reset the
connection while the request's body is still coming (``"cut_request"``).
:meth:`FaultProxy.freeze` makes it behave like a server stopped with SIGSTOP: connections are
still accepted (the kernel does that) but nothing is read or answered until :meth:`thaw`.

Without an upstream it is a server of its own (a silent one, or a plain web server). Each
request is relayed on a fresh upstream connection with ``Connection: close``, and the answer
closes the client's connection too: simple, and every request is seen on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

HTML = b"<!doctype html><html><head><title>Welcome</title></head><body>It works!</body></html>"


@dataclass
class Request:
    """What the proxy saw of one request."""

    method: str
    target: str  # path and query, as sent
    headers: dict[str, str]  # lower-case names
    body: bytes = b""


@dataclass
class FaultProxy:
    """See the module docstring. ``upstream`` is ``host:port`` (None: no server behind)."""

    upstream: str | None = None
    rule: Callable[[Request], str] = field(default=lambda request: "pass")
    cut_after: int = 1 << 20
    seen: list[tuple[Request, str]] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _thawed: asyncio.Event = field(default_factory=asyncio.Event)
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FaultProxy:
        self._thawed.set()
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    def freeze(self) -> None:
        """Stop reading and answering, as a server under SIGSTOP (connections still open)."""
        self._thawed.clear()

    def thaw(self) -> None:
        self._thawed.set()

    def actions(self, action: str) -> list[Request]:
        return [request for request, done in self.seen if done == action]

    # -- one connection: one request ----------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._handlers.discard(task)
            self._writers.discard(writer)
            if not writer.transport.is_closing():  # a closed one may still be flushing
                writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._thawed.wait()
        head = await reader.readuntil(b"\r\n\r\n")
        request = _parse(head)
        action = self.rule(request)
        self.seen.append((request, action))
        if action == "silent":
            await asyncio.Event().wait()  # took the request; never reads on, never answers
        length = int(request.headers.get("content-length", "0") or 0)
        if request.headers.get("expect", "").lower() == "100-continue":
            await self._thawed.wait()
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # as a server does; not relayed
            await writer.drain()
        body = bytearray()
        while len(body) < length:
            await self._thawed.wait()
            if action == "cut_request" and len(body) >= min(self.cut_after, length // 2):
                _reset(writer)  # the connection breaks while the body is being sent
                return
            body += await reader.readexactly(min(1 << 16, length - len(body)))
        request.body = bytes(body)
        head_only = request.method == "HEAD"
        if action == "503":
            body_503 = _error_xml("SlowDown")
            await self._answer(writer, 503, "Slow Down", body_503, "application/xml", head_only)
        elif action == "html":
            await self._answer(writer, 200, "OK", HTML, "text/html; charset=utf-8", head_only)
        else:
            answer = await self._relay(head, request.body)
            await self._thawed.wait()
            if action == "drop":
                return  # relayed, and the answer is lost
            if action in ("reset", "reset_later"):
                writer.write(answer[: self.cut_after])
                await writer.drain()
                if action == "reset_later":
                    await asyncio.sleep(0.5)
                _reset(writer)
                return
            writer.write(answer)
            writer.close()  # flushes what drain() may leave buffered (abort() would drop it)
            await writer.wait_closed()

    async def _answer(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        reason: str,
        body: bytes,
        kind: str,
        head_only: bool,
    ) -> None:
        await self._thawed.wait()
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + (b"" if head_only else body)
        )
        await writer.drain()

    async def _relay(self, head: bytes, body: bytes) -> bytes:
        """Send the request upstream on a fresh connection; its whole answer, with the upstream's
        address in headers (a resumable session's Location) replaced by the proxy's."""
        assert self.upstream is not None, "a proxy without upstream can only answer by itself"
        host, _, port = self.upstream.rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        try:
            lines = head.split(b"\r\n")
            kept = [
                line
                for line in lines[1:]
                if not line.lower().startswith((b"connection:", b"expect:"))
            ]
            up_writer.write(b"\r\n".join([lines[0], b"Connection: close", *kept]) + body)
            await up_writer.drain()
            answer = await up_reader.read()
        finally:
            up_writer.close()
        answer_head, sep, answer_body = answer.partition(b"\r\n\r\n")
        answer_head = answer_head.replace(f"http://{self.upstream}".encode(), self.url.encode())
        return answer_head + sep + answer_body


def _parse(head: bytes) -> Request:
    first, *lines = head.decode("latin-1").split("\r\n")
    method, target, _ = first.split(" ", 2)
    headers = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return Request(method, target, headers)


def _error_xml(code: str) -> bytes:
    return f"<Error><Code>{code}</Code><Message>{code}</Message></Error>".encode()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (RST), as a crashed peer or a middlebox does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
