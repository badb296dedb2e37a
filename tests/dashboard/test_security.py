"""The dashboard's security: loopback only without a token, the token off loopback (constant
time, moved into an HttpOnly cookie), DNS rebinding refused, CSRF on the actions, read-only
mode, every user string escaped, the cache browser kept inside the cache's root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import markupsafe
import pytest
from click.testing import CliRunner

from swath import Client
from swath.cli import main
from swath.dashboard.security import CSRF_COOKIE, TOKEN_COOKIE, is_loopback
from swath.store.base import JobState
from tests.dashboard.harness import XSS_DISPLAY, XSS_KEY, XSS_NAME, app_for, http, populate


@pytest.fixture
async def world(tmp_path: Path) -> dict[str, Any]:
    db = f"sqlite:///{tmp_path}/jobs.db"
    ids = await populate(db, tmp_path / "cache")
    (tmp_path / "secret.txt").write_text("outside the cache")
    return {"db": db, "cache": tmp_path / "cache", "tmp": tmp_path, **ids}


async def test_without_a_token_only_loopback_is_served(world: dict[str, Any]) -> None:
    """Without a token the dashboard answers loopback peers only, and only with a loopback
    Host header (a DNS-rebound name is refused)."""
    app = app_for(world["db"], world["cache"])
    async with http(app, peer="10.1.2.3") as client:
        assert (await client.get("/jobs")).status_code == 403
    async with http(app, peer="127.0.0.1", base="http://evil.example:8765") as client:
        assert (await client.get("/jobs")).status_code == 403
    async with http(app, peer="::1", base="http://localhost:8765") as client:
        assert (await client.get("/jobs")).status_code == 200


async def test_a_token_is_required_off_loopback(world: dict[str, Any]) -> None:
    """With a token every request needs it, from any address: none or a wrong one is 401;
    ?token= once is a redirect that sets an HttpOnly SameSite=Strict cookie and drops the token
    from the address; the cookie or a Bearer header then work."""
    token = "s3cret-token-value"
    app = app_for(world["db"], world["cache"], token=token)
    async with http(app, peer="10.1.2.3", base="http://dash.example:8765") as client:
        assert (await client.get("/jobs")).status_code == 401
        assert (await client.get("/api/jobs")).status_code == 401
        assert (await client.get("/jobs", params={"token": "wrong"})).status_code == 401
        bearer = await client.get("/api/jobs", headers={"authorization": f"Bearer {token}"})
        assert bearer.status_code == 200
        login = await client.get("/jobs", params={"token": token, "name": "hello"})
        assert login.status_code == 303
        assert login.headers["location"] == "/jobs?name=hello"
        set_cookie = login.headers["set-cookie"]
        assert f"{TOKEN_COOKIE}={token}" in set_cookie
        assert "HttpOnly" in set_cookie
        assert "SameSite=Strict" in set_cookie
        page = await client.get("/jobs?name=hello")  # the cookie is sent now
        assert page.status_code == 200
        assert world["hello"] in page.text


def test_an_empty_token_is_refused_and_loopback_is_recognised(tmp_path: Path) -> None:
    """`swath dashboard --token ''` is a usage error (exit 2, before anything is opened);
    loopback addresses and names are told from others (the command makes and prints a token
    for any other: tests/dashboard/test_live.py::test_swath_dashboard_serves_the_demo)."""
    db = tmp_path / "jobs.db"
    result = CliRunner().invoke(main, ["dashboard", "--database", f"sqlite:///{db}", "--token", ""])
    assert result.exit_code == 2
    assert "--token is empty" in result.output
    assert not db.exists()
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "app.localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.2", "example.com", "localhost.example.com"):
        assert not is_loopback(host), host


async def test_actions_need_the_csrf_token(world: dict[str, Any]) -> None:
    """Cancel and retry are refused (403, nothing changed) without the session's CSRF token,
    with a wrong one, or from another origin; with the token from the page they work."""
    app = app_for(world["db"], world["cache"])
    job = world["queued"]
    async with http(app) as client:
        page = await client.get(f"/jobs/{job}")
        assert CSRF_COOKIE in page.headers["set-cookie"]
        assert "SameSite=Strict" in page.headers["set-cookie"]
        token = client.cookies[CSRF_COOKIE]
        assert (await client.post(f"/jobs/{job}/cancel")).status_code == 403  # cookie only
        assert f'name="csrf" value="{token}"' in page.text
        wrong = await client.post(f"/jobs/{job}/cancel", data={"csrf": "x" * 43})
        assert wrong.status_code == 403
        cross = await client.post(
            f"/jobs/{job}/cancel", data={"csrf": token}, headers={"origin": "http://evil.example"}
        )
        assert cross.status_code == 403
        async with Client(world["db"]) as c:
            assert (await c.jobs().find(job)).state == JobState.QUEUED
        ok = await client.post(
            f"/jobs/{job}/cancel",
            data={"csrf": token},
            headers={"origin": "http://127.0.0.1:8765"},
        )
        assert ok.status_code == 303
        async with Client(world["db"]) as c:
            assert (await c.jobs().find(job)).state == JobState.CANCELED
        by_header = await client.post(
            f"/jobs/{world['fan']}/retry",
            headers={"x-csrf-token": token, "accept": "application/json"},
        )
        assert by_header.json() == {"action": "retry", "tasks": 0}


async def test_read_only_hides_and_refuses_the_actions(world: dict[str, Any]) -> None:
    """--read-only: a job page has no action forms and a POST with a valid CSRF token is 403."""
    app = app_for(world["db"], world["cache"], read_only=True)
    job = world["queued"]
    async with http(app) as client:
        page = await client.get(f"/jobs/{job}")
        assert "/cancel" not in page.text
        assert "read-only" in page.text
        token = client.cookies[CSRF_COOKIE]
        refused = await client.post(f"/jobs/{job}/cancel", data={"csrf": token})
        assert refused.status_code == 403
    async with Client(world["db"]) as c:
        assert (await c.jobs().find(job)).state == JobState.QUEUED


async def test_user_strings_are_shown_as_text(world: dict[str, Any]) -> None:
    """A job name, a task display, an error message, a log message and a cache key that are HTML
    payloads appear escaped (as text) on every page, never as markup; every response forbids inline
    script by its Content-Security-Policy."""
    app = app_for(world["db"], world["cache"])
    async with http(app) as client:
        pages = [
            await client.get("/jobs"),
            await client.get(f"/jobs/{world['fan']}"),
            await client.get("/cache", params={"group": "misc"}),
            await client.get("/cache/value", params={"key": f"misc/{XSS_KEY}"}),
            await client.get(f"/jobs/{world['fan']}/logs", params={"level": "WARNING"}),
        ]
        for payload, where in [
            (XSS_NAME, pages[0]),
            (XSS_NAME, pages[1]),
            (XSS_DISPLAY, pages[1]),
            ('a <b>bold</b> & "quoted" failure', pages[1]),
            (XSS_KEY, pages[2]),
            (XSS_KEY, pages[3]),
            ("<script>alert('value')</script>", pages[3]),
            ('about to fail: a <b>bold</b> & "quoted" failure', pages[1]),  # a log record
            ('about to fail: a <b>bold</b> & "quoted" failure', pages[4]),
            (XSS_NAME, pages[4]),
        ]:
            assert payload not in where.text
            assert str(markupsafe.escape(payload)) in where.text, payload
        for page in pages:
            assert page.status_code == 200
            assert "default-src 'self'" in page.headers["content-security-policy"]
            assert "<script>" not in page.text.replace('<script src="/static/app.js" defer>', "")
        events = await client.get(f"/jobs/{world['fan']}/events")  # finished: one update
        assert XSS_DISPLAY not in events.text
        assert "&lt;img src=x" in events.text


@pytest.mark.parametrize(
    "key",
    [
        "../secret.txt",
        "big/../../secret.txt",
        "/etc/passwd",
        "big/./blob.bin",
        "..",
        "big\\..\\..\\secret.txt",
        "",
    ],
)
async def test_the_cache_browser_stays_inside_the_cache(world: dict[str, Any], key: str) -> None:
    """Keys and groups that would leave the cache's root (.., absolute, backslashes, empty) are
    refused by the cache's own key validation: 400, nothing read, for the value page, the
    download and the listing."""
    app = app_for(world["db"], world["cache"])
    async with http(app) as client:
        for path in ("/cache/value", "/cache/download"):
            response = await client.get(path, params={"key": key})
            assert response.status_code == 400, (path, key)
            assert "outside the cache" not in response.text
        if key:
            listing = await client.get("/cache", params={"group": key})
            assert listing.status_code == 400, key
            api = await client.get("/api/cache", params={"group": key})
            assert api.status_code == 400, key
