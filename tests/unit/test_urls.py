"""One URL parser for job stores and caches (``swath._urls``): libpq's rules, round trips, and
no password in any form swath shows of a URL, whatever characters the password holds."""

from __future__ import annotations

import logging
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swath.cache import InMemoryCache, LocalFileSystemCache, cache_from_url
from swath.store.base import store_from_url
from swath.store.postgres import PostgresJobStore
from swath.store.sqlite import SQLiteJobStore

#: printable ASCII, every URL delimiter included (# / ? @ : % & = [ ])
PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
passwords = st.text(PRINTABLE, min_size=4, max_size=24).filter(lambda p: p.strip())
USERS = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=8)
#: the fixed words of swath's URL errors (a password piece that is one of them is no leak)
ERRORS = (
    "an '@' after the host: a user name or password with '@' or '/' in it must be "
    "percent-encoded (%40, %2F) the password has a '%' that does not start an escape such as "
    "%25 or %40 a query parameter without '=' (expected ?name=value&...) not a URL: it must "
    "start with a scheme such as postgresql:// or s3:// is not UTF-8 once percent-decoded "
    "endpoint_url carries credentials (user:password@): give credentials to the client "
    "instead (for S3, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or a profile) postgresql://***"
)


def pieces(secret: str, n: int = 4) -> list[str]:
    """Every substring of ``secret`` of length ``n`` (the whole secret if it is shorter)."""
    if len(secret) <= n:
        return [secret]
    return [secret[i : i + n] for i in range(len(secret) - n + 1)]


def leaks(secret: str, *texts: str) -> list[str]:
    """The pieces of ``secret`` (4 characters or more) that appear in any of ``texts``; pieces
    that are also in the rest of the URL (host, user, "postgresql") do not count."""
    return [p for p in pieces(secret) for t in texts if p in t]


def test_the_reported_password_with_a_hash() -> None:
    """``postgresql://u:Hq7Zx#xyz@host/db`` (the issue's example): the password is
    ``Hq7Zx#xyz`` as libpq reads it, and neither url, repr nor the DSN handed to asyncpg shows
    any of it (old code: urlsplit cut the URL at '#', and 'Hq7Zx' became a port)."""
    store = PostgresJobStore("postgresql://u:Hq7Zx#xyz@host/db")
    assert store.url == "postgresql://u:***@host/db"
    assert "Hq7Z" not in repr(store)
    assert store._password == "Hq7Zx#xyz"
    assert "Hq7Z" not in store._dsn


def test_libpq_splitting_rules() -> None:
    """Raw '#', '?' and ':' may appear in a password; '@' and '/' must be percent-encoded and
    are refused raw with a message that quotes nothing; multi-host and IPv6 host specs, the
    ``password=`` parameter and percent-decoding of user, password and path work as in libpq."""
    from swath._urls import URLError, parse_url, redact

    u = parse_url("postgresql://us%40r:p?a:s#s@h1:5432,[::1]:5433/d%2Fb?sslmode=require")
    assert (u.user, u.password, u.hostspec, u.path) == (
        "us@r",
        "p?a:s#s",
        "h1:5432,[::1]:5433",
        "d/b",
    )
    assert u.params == {"sslmode": "require"}
    for bad in ("postgresql://u:se/cretpw@h/db", "postgresql://u:se@cretpw@h/db"):
        with pytest.raises(URLError) as refused:
            parse_url(bad)
        assert "cret" not in str(refused.value)
        assert "percent-encoded" in str(refused.value)
    with pytest.raises(URLError, match="'%'") as bad_escape:
        parse_url("postgresql://u:se%zzcret@h/db")
    assert "cret" not in str(bad_escape.value)
    q = parse_url("postgresql://u@h/db?password=s3cret&application_name=x")
    assert q.redacted() == "postgresql://u@h/db?password=***&application_name=x"
    assert redact("postgresql://u:a/b@c") == "postgresql://***"  # unparsable: scheme alone


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(password=passwords, user=USERS)
def test_percent_encoded_passwords_round_trip_and_never_show(password: str, user: str) -> None:
    """Any printable password, percent-encoded as URLs require, parses back exactly; the store
    built from it hands asyncpg the same password, and its url, repr and the DSN it keeps (no
    secret in it) contain no 4-character piece of it."""
    from swath._urls import parse_url, redact

    url = f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@db.example:5432/jobs"
    parsed = parse_url(url)
    assert (parsed.user, parsed.password, parsed.hostspec, parsed.path) == (
        user,
        password,
        "db.example:5432",
        "jobs",
    )
    assert parse_url(parsed.build()) == parsed
    store = store_from_url(url)
    assert isinstance(store, PostgresJobStore)
    assert store._password == password
    shown = [store.url, repr(store), store._dsn, parsed.redacted(), redact(url)]
    context = f"PostgresJobStore('postgresql://{user}:***@db.example:5432/jobs')"
    assert [p for p in leaks(password, *shown) if p not in context] == []


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(password=passwords)
def test_raw_passwords_parse_as_libpq_or_fail_without_quoting(password: str) -> None:
    """A password written raw (not percent-encoded), any printable characters: either the URL
    parses with exactly that password (libpq would read it the same), or it is refused with a
    ``ValueError`` whose message holds no piece of the password; in neither case does any
    shown form (url, repr, redact) hold a piece of it."""
    from swath._urls import redact

    url = f"postgresql://someone:{password}@db.example:5432/jobs"
    context = "PostgresJobStore('postgresql://someone:***@db.example:5432/jobs')"
    try:
        store = PostgresJobStore(url)
    except ValueError as exc:
        refusal = f"{exc} {redact(url)}"
    else:
        refusal = ""
    if refusal:
        assert [p for p in leaks(password, refusal) if p not in context + ERRORS] == []
        return
    if "%" not in password:
        assert store._password == password
    shown = [store.url, repr(store), store._dsn, redact(url)]
    assert [p for p in leaks(password, *shown) if p not in context] == []


def test_store_and_cache_urls_share_the_parser() -> None:
    """store_from_url and cache_from_url read the same syntax: percent-decoding in paths, no
    fragments ('#' is part of the path), and the same refusals."""
    store = store_from_url("sqlite:////tmp/a%20b#c.db")
    assert isinstance(store, SQLiteJobStore)
    assert store.path == "/tmp/a b#c.db"
    cache = cache_from_url("file:///tmp/a%20b#c")
    assert isinstance(cache, LocalFileSystemCache)
    assert cache.root == "/tmp/a b#c"
    assert isinstance(cache_from_url("memory://"), InMemoryCache)
    with pytest.raises(ValueError, match="credentials") as creds:
        cache_from_url("s3://AKIA:s3cretKey@bucket/prefix")
    assert "s3cret" not in str(creds.value)
    with pytest.raises(ValueError, match="unknown database URL 'mysql://u:\\*\\*\\*@h/d'"):
        store_from_url("mysql://u:s3cretpw@h/d")


@settings(max_examples=200)
@given(
    scheme=st.sampled_from(["s3", "gs"]),
    bucket=st.from_regex(r"[a-z0-9][a-z0-9-]{2,20}", fullmatch=True),
    prefix=st.lists(st.from_regex(r"[A-Za-z0-9_.-]{1,8}", fullmatch=True), max_size=3).filter(
        lambda parts: all(p not in (".", "..") for p in parts)
    ),
)
def test_cloud_cache_urls_round_trip(scheme: str, bucket: str, prefix: list[str]) -> None:
    """``cache_from_url(cache.url())`` names the same bucket and prefix as ``cache`` for every
    prefix, the empty one included."""
    url = f"{scheme}://{bucket}/" + "/".join(prefix)
    cache = cache_from_url(url)
    again = cache_from_url(cache.url())
    expected = (bucket, "/".join(prefix))
    assert (cache.bucket, cache.prefix) == expected  # type: ignore[attr-defined]
    assert (again.bucket, again.prefix) == expected  # type: ignore[attr-defined]


def test_one_default_prefix_through_constructor_and_url() -> None:
    """``s3://b`` and ``gs://b`` name the same objects as ``AmazonS3Cache("b")`` and
    ``GoogleStorageCache("b")`` (the default prefix ``jobs``; old code: no prefix through the
    URL); ``s3://b/`` is the bucket's root."""
    from swath.cache.gcs import GoogleStorageCache
    from swath.cache.s3 import AmazonS3Cache

    for scheme, cls in (("s3", AmazonS3Cache), ("gs", GoogleStorageCache)):
        default = cls("b")
        via_url = cache_from_url(f"{scheme}://b")
        assert (via_url.bucket, via_url.prefix) == (default.bucket, default.prefix) == ("b", "jobs")  # type: ignore[attr-defined]
        root = cache_from_url(f"{scheme}://b/")
        assert root.prefix == ""  # type: ignore[attr-defined]
        assert cache_from_url(root.url()).prefix == ""  # type: ignore[attr-defined]


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=passwords)
def test_endpoint_urls_with_credentials_are_refused_without_quoting(
    password: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An S3 endpoint_url carrying user:password@ is refused at construction (botocore would
    ignore the credentials and print the whole URL in its errors); the error and the log hold
    no piece of the password."""
    from swath.cache.s3 import AmazonS3Cache

    caplog.set_level(logging.DEBUG)
    url = f"http://user:{quote(password, safe='')}@127.0.0.1:9/"
    with pytest.raises(ValueError, match="credentials") as refused:
        AmazonS3Cache("bucket", endpoint_url=url)
    logged = " ".join(r.getMessage() for r in caplog.records)
    context = "http://user@127.0.0.1:9/ " + ERRORS
    assert [p for p in leaks(password, str(refused.value), logged) if p not in context] == []


@pytest.mark.parametrize(
    ("variable", "backend"),
    [
        ("AWS_ENDPOINT_URL", "s3"),
        ("AWS_ENDPOINT_URL_S3", "s3"),
        ("STORAGE_EMULATOR_HOST", "gcs"),
    ],
)
async def test_endpoints_from_the_environment_with_credentials_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, backend: str
) -> None:
    """An endpoint with user:password@ in the environment is refused when the cache opens,
    before any request, and the error does not quote it (old code: botocore printed the URL in
    its connection errors; aiohttp sent the credentials along)."""
    from swath.cache.gcs import GoogleStorageCache
    from swath.cache.s3 import AmazonS3Cache

    monkeypatch.setenv(variable, "http://user:Env-S3cret-pw@127.0.0.1:9")
    cache = AmazonS3Cache("bucket") if backend == "s3" else GoogleStorageCache("bucket")
    with pytest.raises(ValueError, match="credentials") as refused:
        async with cache:
            pass
    assert "S3cret" not in str(refused.value)
    assert variable in str(refused.value)
