"""One parser for every URL swath is handed: job stores (``postgresql://``, ``sqlite://``),
caches (``s3://``, ``gs://``, ``file://``, ``memory://``) and service endpoints.

It splits a URL the way libpq splits a PostgreSQL connection URI, so a URL that works with
``psql`` means the same to swath:

* ``scheme://[user[:password]@][hostspec][/path][?query]``; there is no fragment, so ``#`` is an
  ordinary character (``urllib.parse`` would cut the URL there and leak the rest of a password
  into the port);
* the user information runs to the first ``@`` met before any ``/``; the password is everything
  after the first ``:`` in it. So a password may hold any character raw except ``@`` and ``/``
  (and ``%``, which starts an escape); those three are written percent-encoded (``%40``,
  ``%2F``, ``%25``), as in any URL;
* user, password, path and query are percent-decoded; the host specification is kept as given
  (``host:port``, ``[::1]:5432``, ``h1:5432,h2:5433``).

A URL that cannot be split this way is a :class:`URLError` whose message quotes none of the URL
(any part of it may be a secret). What is left after a host specification must not hold an
``@`` either: that is a password with a raw ``/`` in it, and the URL is refused rather than
read with part of the password as a database name.

:meth:`URL.redacted` is the only form of a URL swath prints, logs or raises: the password (and
any ``password=`` parameter) replaced by ``***``. :func:`redact` does the same for a string that
may not even parse, erring on the side of hiding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from swath.errors import SwathError

MASK = "***"

_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
#: query parameters whose values are secrets (libpq's ``password``, and common spellings)
_SECRET_PARAMS = frozenset({"password", "passwd", "pass", "secret", "token", "sslpassword"})


class URLError(SwathError, ValueError):
    """A URL swath cannot read; the message never quotes the URL's user information."""


def _decode(text: str, what: str) -> str:
    """Percent-decode ``text`` as UTF-8 (libpq's rules: every ``%`` starts a two-digit escape)."""
    if "%" not in text:
        return text
    if text.count("%") != len(_PERCENT.findall(text)):
        raise URLError(f"the {what} has a '%' that does not start an escape such as %25 or %40")
    raw = _PERCENT.sub(lambda m: chr(int(m.group(1), 16)), text)
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        raise URLError(f"the {what} is not UTF-8 once percent-decoded") from None


@dataclass(frozen=True)
class URL:
    """A URL split into its parts (see the module docstring for the rules)."""

    scheme: str
    #: None if the URL has no user information (no ``@``)
    user: str | None
    #: None if the user information has no ``:``
    password: str | None
    hostspec: str
    path: str
    query: tuple[tuple[str, str], ...]
    has_path: bool

    @property
    def params(self) -> dict[str, str]:
        return dict(self.query)

    def hosts(self) -> list[tuple[str, int | None]]:
        """The hosts of a libpq host specification, ``h1[:port],[::1][:port],...``; a
        :class:`URLError` that quotes nothing for a port that is not a number from 1 to 65535
        or an IPv6 address without its ``]``."""
        found: list[tuple[str, int | None]] = []
        for item in self.hostspec.split(",") if self.hostspec else []:
            if item.startswith("["):
                end = item.find("]")
                if end < 0:
                    raise URLError("an IPv6 host without its closing ']'")
                host, rest = item[1:end], item[end + 1 :]
                if rest and not rest.startswith(":"):
                    raise URLError("text after an IPv6 host's ']' (expected ]:port)")
                port = rest[1:] if rest else ""
            else:
                host, _, port = item.partition(":")
            if port and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
                raise URLError("a port is not a number from 1 to 65535")
            found.append((_decode(host, "host"), int(port) if port else None))
        return found

    def secrets(self) -> list[str]:
        """Every secret this URL carries, decoded and as written, longest first: the strings a
        message must never contain."""
        found = {self.password or ""}
        found.update(v for k, v in self.query if k.lower() in _SECRET_PARAMS)
        found |= {quote(s, safe="") for s in found} | {quote(s) for s in found}
        return sorted((s for s in found if s), key=len, reverse=True)

    def build(self) -> str:
        """The URL again, percent-encoded so that any URL parser splits it as this one did."""
        return self._render(mask=False)

    def redacted(self) -> str:
        """The URL with its password and secret parameters shown as ``***``."""
        return self._render(mask=True)

    def _render(self, *, mask: bool) -> str:
        def secret(value: str) -> str:
            return MASK if mask else quote(value, safe="")

        auth = ""
        if self.user is not None:
            auth = quote(self.user, safe="")
            if self.password is not None:
                auth += ":" + secret(self.password)
            auth += "@"
        text = f"{self.scheme}://{auth}{self.hostspec}"
        if self.has_path:
            text += "/" + quote(self.path, safe="/")
        if self.query:
            text += "?" + "&".join(
                f"{quote(k, safe='')}="
                + (secret(v) if k.lower() in _SECRET_PARAMS else quote(v, safe=""))
                for k, v in self.query
            )
        return text

    def without_secrets(self) -> URL:
        """This URL without its password or secret query parameters."""
        return URL(
            self.scheme,
            self.user,
            None,
            self.hostspec,
            self.path,
            tuple((k, v) for k, v in self.query if k.lower() not in _SECRET_PARAMS),
            self.has_path,
        )


def parse_url(url: str) -> URL:
    """Split ``url`` (``scheme://...``); :class:`URLError` if it is not one."""
    if not isinstance(url, str):
        raise TypeError(f"a URL is a str, not {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME.fullmatch(scheme):
        raise URLError("not a URL: it must start with a scheme such as postgresql:// or s3://")
    user = password = None
    # libpq: the user information runs to the first '@' met before any '/'
    end = 0
    while end < len(rest) and rest[end] not in "@/":
        end += 1
    if end < len(rest) and rest[end] == "@":
        auth, rest = rest[:end], rest[end + 1 :]
        name, colon, secret = auth.partition(":")
        user = _decode(name, "user name")
        password = _decode(secret, "password") if colon else None
    if "@" in rest:
        raise URLError(
            "an '@' after the host: a user name or password with '@' or '/' in it must be "
            "percent-encoded (%40, %2F)"
        )
    rest, qmark, query_text = rest.partition("?")
    hostspec, slash, path = rest.partition("/")
    query: list[tuple[str, str]] = []
    if qmark:
        for item in query_text.split("&"):
            if not item:
                continue
            key, eq, value = item.partition("=")
            if not eq:
                raise URLError("a query parameter without '=' (expected ?name=value&...)")
            query.append((_decode(key, "query"), _decode(value, "query")))
    return URL(
        scheme.lower(),
        user,
        password,
        hostspec,
        _decode(path, "path"),
        tuple(query),
        bool(slash),
    )


def redact(text: str) -> str:
    """``text`` (a URL, or not quite one) in a form that shows no password: the parsed URL's
    :meth:`URL.redacted`, or for text that does not parse, the scheme alone."""
    try:
        return parse_url(text).redacted()
    except (URLError, TypeError):
        scheme = text.partition("://")[0] if isinstance(text, str) and "://" in text else ""
        return f"{scheme}://{MASK}" if _SCHEME.fullmatch(scheme) else MASK


def refuse_credentials(url: str, what: str) -> str:
    """``url`` if it carries no user information; else a :class:`URLError` that quotes none of
    it. For service endpoints (S3, the GCS emulator): their clients sign requests with keys of
    their own and would print the endpoint, user information and all, in their errors."""
    try:
        has_user = parse_url(url).user is not None if "://" in url else "@" in url
    except URLError:
        raise URLError(f"{what} is not a URL (expected http[s]://host[:port])") from None
    if has_user:
        raise URLError(
            f"{what} carries credentials (user:password@): give credentials to the client "
            "instead (for S3, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or a profile)"
        )
    return url


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret (longest first) replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


__all__ = ["MASK", "URL", "URLError", "parse_url", "redact", "refuse_credentials", "scrub"]
