"""Helpers shared by the command-line modules."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

import click
from rich.console import Console

from swath.client import Client
from swath.errors import SwathError

T = TypeVar("T")

DATABASE_HELP = (
    "Job store URL: sqlite:///path.db, postgresql://..., or :memory: "
    "(default: $SWATH_DATABASE_URL or ./swath.db)."
)

# Piped output is not cut to 80 columns (job ids and task trees stay whole).
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, highlight=False)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine; swath's own errors and bad input become a clean exit with a message."""
    try:
        return asyncio.run(coro)
    except (SwathError, ValueError, LookupError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


def client(ctx: click.Context) -> Client:
    database = (ctx.find_root().obj or {}).get("database")
    return Client(database)


def when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def duration(start: float | None, end: float | None) -> str:
    if start is None:
        return "-"
    if end is None:
        return "running"
    return f"{end - start:.2f} s"


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
