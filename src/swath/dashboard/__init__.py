"""``swath dashboard``: a local web app over the Client API and a cache (the optional extra
``swath[dashboard]``: Starlette, uvicorn, Jinja2). See docs/dashboard.md."""

from __future__ import annotations

from swath.dashboard.app import create_app

__all__ = ["create_app"]
