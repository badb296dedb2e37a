"""The dashboard's guard: who may talk to it at all, and which POSTs are the user's own.

- Bound to a loopback address without a token, only loopback peers are served, and only with a
  loopback ``Host`` header (a web page on another site cannot reach it by DNS rebinding).
- With a token (required off loopback), every request carries it: ``?token=`` once (answered by
  a redirect that moves it into an HttpOnly, SameSite=Strict cookie and out of the address bar),
  the cookie, or ``Authorization: Bearer``. Compared with :func:`hmac.compare_digest`.
- The actions (POST) need the per-session CSRF token: a random value in a SameSite=Strict cookie
  that the page repeats in a form field (or the ``X-CSRF-Token`` header); both must match, and an
  ``Origin`` header, when sent, must be the dashboard's own.
- Every response says ``Content-Security-Policy: default-src 'self'`` (no inline script, nothing
  from elsewhere), ``X-Frame-Options: DENY``, ``Referrer-Policy: same-origin``, ``nosniff``.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import URL, Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOKEN_COOKIE = "swath_token"
CSRF_COOKIE = "swath_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        b"frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is this machine only."""
    host = host.strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same(given: str | None, expected: str) -> bool:
    """``given == expected`` in constant time (None is never equal)."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode())


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):  # [::1]:8765
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def cookie(name: str, value: str) -> str:
    return f"{name}={value}; Path=/; HttpOnly; SameSite=Strict"


class Guard:
    """ASGI middleware: the access rules above, and the security headers on every response."""

    def __init__(self, app: ASGIApp, *, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self._refusal(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + SECURITY_HEADERS
            await send(message)

        if refused is not None:
            await refused(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope: Scope) -> Response | None:
        headers = Headers(scope=scope)
        if self.token is None:
            client = scope.get("client")
            if client is None or not is_loopback(client[0]):
                return PlainTextResponse(
                    "this dashboard serves this machine only (start it with --token to serve "
                    "others)",
                    status_code=403,
                )
            if not is_loopback(_host_name(headers.get("host", ""))):
                return PlainTextResponse(
                    "unexpected Host header: open the dashboard as localhost or 127.0.0.1",
                    status_code=403,
                )
            return None
        request = Request(scope)
        given = request.query_params.get("token")
        if given is not None:
            if not same(given, self.token):
                return PlainTextResponse("wrong token", status_code=401)
            # move the token into a cookie and out of the address bar (and of the history)
            url = URL(scope=scope)
            query = urlencode([(k, v) for k, v in parse_qsl(url.query) if k != "token"])
            # a path of this server only: an absolute path, never "//host" (an open redirect)
            target = "/" + url.path.lstrip("/") + (f"?{query}" if query else "")
            redirect = RedirectResponse(target, 303)
            redirect.headers.append("set-cookie", cookie(TOKEN_COOKIE, self.token))
            return redirect
        auth = headers.get("authorization", "")
        bearer = auth[7:] if auth.lower().startswith("bearer ") else None
        if same(request.cookies.get(TOKEN_COOKIE), self.token) or same(bearer, self.token):
            return None
        return PlainTextResponse(
            "a token is required: open the address `swath dashboard` printed (with ?token=...)",
            status_code=401,
        )


def csrf_token(request: Request) -> tuple[str, bool]:
    """The session's CSRF token, and whether it is new (then the page sets its cookie)."""
    known = request.cookies.get(CSRF_COOKIE)
    if known and len(known) >= 32:
        return known, False
    return secrets.token_urlsafe(32), True


def csrf_ok(request: Request, form: dict[str, str]) -> bool:
    """Whether a POST carries the session's CSRF token and, if it says, comes from here."""
    expected = request.cookies.get(CSRF_COOKIE)
    if not expected:
        return False
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        return False
    given = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    return same(given, expected)
