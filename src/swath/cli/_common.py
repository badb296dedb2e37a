"""Helpers shared by the command-line modules: opening stores and caches, printing user text
safely, and turning every error into one line and a documented exit code.

Exit codes (documented in docs/cli.md):

====  =====================================================================================
0     success
1     the command failed for a reason its message gives (unknown job, missing key, invalid
      input, a watched job that did not complete)
2     usage: an unknown command or option, a bad argument (click's own code)
3     the job store or cache cannot be used: none there (reading commands create nothing),
      unreadable, read-only for a write, corrupt, unreachable
70    an internal error (a bug in swath): run again with ``--debug`` for the traceback
130   interrupted (Ctrl-C)
141   the reader of the output went away (``swath cache cat URL KEY | head``): like ``cat``
      killed by SIGPIPE, nothing is printed
====  =====================================================================================
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import os
import sqlite3
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from swath._validate import INT64_MAX, printable
from swath.cache import Backend, cache_from_url
from swath.client import Client
from swath.errors import CacheError, NotFoundError, ReadOnlyError, SwathError
from swath.store.base import StoreError, StoreOpenError, store_from_url

T = TypeVar("T")

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

DATABASE_HELP = (
    "Job store URL: sqlite:///path.db, postgresql://..., or :memory: "
    "(default: $SWATH_DATABASE_URL or ./swath.db)."
)

# Piped output is not cut to 80 columns (job ids and task trees stay whole).
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True, highlight=False)


# -- user text on the terminal --------------------------------------------------------------------
def clean(text: object, *, multiline: bool = False) -> str:
    """``text`` safe to print on a terminal (:func:`swath._validate.printable`): control
    characters, bidirectional overrides, separators and lone surrogates as ``\\x1b``-style
    escapes, so user text (job names, displays, error messages, keys) cannot move the cursor,
    retitle the window, hide text or add lines. ``multiline`` keeps newlines and tabs."""
    return printable(text, multiline=multiline)


def markup(text: object, *, multiline: bool = False) -> str:
    """``clean(text)`` with rich markup escaped: for user text inside rich output."""
    return escape(clean(text, multiline=multiline))


# -- argument types -------------------------------------------------------------------------------
class Seconds(click.ParamType):  # type: ignore[type-arg]  # generic only in newer stubs
    """A finite number of seconds, at least ``minimum`` (click's FloatRange lets NaN through)."""

    name = "seconds"

    def __init__(self, minimum: float, *, inclusive: bool = True) -> None:
        self.minimum = minimum
        self.inclusive = inclusive

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{clean(repr(value))} is not a number of seconds", param, ctx)
        too_small = seconds < self.minimum if self.inclusive else seconds <= self.minimum
        if not math.isfinite(seconds) or too_small:
            bound = ">=" if self.inclusive else ">"
            self.fail(
                f"{clean(repr(value))} is not a finite number {bound} {self.minimum}", param, ctx
            )
        return seconds


#: a count every store can hold (``--limit``)
COUNT = click.IntRange(0, INT64_MAX)


# -- opening stores and caches --------------------------------------------------------------------
def database(ctx: click.Context) -> str | None:
    return (ctx.find_root().obj or {}).get("database")


def client(ctx: click.Context, *, read_only: bool = False) -> Client:
    """A client of the ``--database`` store; ``read_only`` for commands that only read (they
    create nothing and say "no database at ..." when there is none)."""
    return Client(store=store_from_url(database(ctx), read_only=read_only))


async def require_store(ctx: click.Context) -> None:
    """Raise ``NotFoundError`` unless the ``--database`` store exists (before a command writes
    to it: a typo must not create a new, empty database)."""
    async with client(ctx, read_only=True):
        pass


def open_cache(url: str, *, read_only: bool = False) -> Backend:
    return cache_from_url(url, read_only=read_only)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine (errors are turned into one line by :class:`SwathGroup`)."""
    return asyncio.run(coro)


# -- errors ---------------------------------------------------------------------------------------
class CommandError(click.ClickException):
    """One line on stderr (``Error: ...``) and ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(one_line(message))
        self.exit_code = exit_code  # type: ignore[misc]  # click's class default is 1


def one_line(message: str) -> str:
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return clean("; ".join(lines))


def exit_code_of(exc: BaseException) -> int:
    if isinstance(exc, NotFoundError | StoreOpenError | ReadOnlyError | sqlite3.Error):
        return EXIT_UNAVAILABLE
    if isinstance(exc, StoreError) and isinstance(exc, OSError):  # the PostgreSQL store's
        return EXIT_UNAVAILABLE
    if isinstance(exc, CacheError):
        return EXIT_UNAVAILABLE
    if isinstance(exc, SwathError | ValueError | LookupError | TypeError):
        return EXIT_ERROR
    if isinstance(exc, OSError):  # permissions, a full disk, a path that is a file
        return EXIT_UNAVAILABLE
    return EXIT_INTERNAL


def message_of(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, sqlite3.Error):
        return f"the job store failed: {text}"
    if exit_code_of(exc) == EXIT_INTERNAL:
        return f"internal error: {type(exc).__name__}: {text} (run with --debug for the traceback)"
    return text


def broken_pipe() -> NoReturn:
    """The reader of stdout went away: exit quietly (Python would complain when it flushes
    stdout at exit, so stdout is pointed at /dev/null first)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    sys.exit(EXIT_BROKEN_PIPE)


class SwathGroup(click.Group):
    """The root command: whatever a subcommand raises becomes one line and an exit code
    (``--debug`` re-raises, for the traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except BrokenPipeError:
            broken_pipe()
        except KeyboardInterrupt:
            raise CommandError("interrupted", EXIT_INTERRUPTED) from None
        except Exception as exc:
            if (ctx.obj or {}).get("debug"):
                raise
            raise CommandError(message_of(exc), exit_code_of(exc)) from None


# -- formatting -----------------------------------------------------------------------------------
def when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def duration(start: float | None, end: float | None, *, finished: bool = False) -> str:
    """How long a task ran; ``running`` if it has not ended, unless its job has (``finished``):
    a task of a finished job that never ended did not run to the end, it is not running."""
    if start is None:
        return "-"
    if end is None:
        return "-" if finished else "running"
    return f"{end - start:.2f} s"


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
