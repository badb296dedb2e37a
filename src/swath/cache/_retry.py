"""The one retry policy and the deadlines of the cloud backends (S3 and GCS).

Every request the cloud backends make goes through :func:`with_retries`: a transient failure
(the backend says which: 5xx, throttling, a connection reset, a stalled transfer) is retried with
exponential back-off and jitter (tenacity's ``wait_exponential_jitter``) up to ``attempts`` times,
all inside one *operation budget*. The SDKs' own retries are off, so the attempt count is what the
documentation says under any load: nothing is shared between concurrent requests (botocore's
"standard" mode shares a retry quota across a client, and under a storm of 503s most concurrent
requests would fail after a single attempt).

Deadlines (seconds; documented constructor and URL options of both backends):

* ``connect_timeout``: to open a TCP connection;
* ``read_timeout``: the longest a request may make no progress, sending or receiving (the body is
  handed to the socket in slices, each with this deadline; then aiohttp's read timeout runs);
* ``operation_timeout``: one request with all its retries (one part, one range, one call);
* ``abort_timeout``: the clean-up after a failure or cancellation (aborting an upload, deleting
  temporary parts), so that a dead server cannot hold an error or a cancellation for long.

With the defaults a dead or frozen server is reported within about ``operation_timeout`` plus
``abort_timeout``: 100 s.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar
from urllib.parse import urlencode

import anyio

log = logging.getLogger("swath.cache")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Deadlines:
    """The time limits of a cloud backend (see the module docstring)."""

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    operation_timeout: float = 90.0
    abort_timeout: float = 10.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(f"{f.name} must be a positive number of seconds, not {value!r}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Deadlines:
        """The defaults with ``options`` (constructor keywords or URL query values: numbers or
        numbers in text) replacing them; an unknown name is a TypeError."""
        unknown = sorted(set(options) - set(DEADLINE_OPTIONS))
        if unknown:
            raise TypeError(
                f"unknown options {unknown}; the deadlines are {list(DEADLINE_OPTIONS)}"
            )
        changes: dict[str, float] = {}
        for name, value in options.items():
            if value is None:
                continue
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise ValueError(f"{name} must be a number of seconds, not {value!r}") from None
            changes[name] = value
        return cls(**changes)

    def query(self) -> str:
        """The URL query that rebuilds these deadlines ('' for the defaults)."""
        default = Deadlines()
        changed = {
            name: f"{getattr(self, name):g}"
            for name in DEADLINE_OPTIONS
            if getattr(self, name) != getattr(default, name)
        }
        return "?" + urlencode(changed) if changed else ""


DEADLINE_OPTIONS = ("connect_timeout", "read_timeout", "operation_timeout", "abort_timeout")


class RetryPolicy:
    """How often and how patiently a transient failure is retried (class attributes of each
    cloud backend, so they can be tuned per instance)."""

    #: attempts for a request that fails transiently (the first one included)
    attempts = 6
    #: first back-off in seconds (doubled each retry, plus up to as much jitter)
    backoff = 0.25
    #: the longest back-off in seconds
    max_backoff = 8.0


class GaveUp(Exception):
    """A transient failure that persisted: every attempt failed, or the budget ran out.
    ``last`` is the last failure (None if the budget ran out during the first attempt)."""

    def __init__(self, last: BaseException | None, attempts: int, budget_spent: bool) -> None:
        self.last = last
        self.attempts = attempts
        self.budget_spent = budget_spent
        super().__init__(self.describe())

    def describe(self) -> str:
        last = "no answer" if self.last is None else _describe(self.last)
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        if self.budget_spent:
            return f"{last}; the operation's time budget ran out{tries}"
        return f"{last}{tries}"


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "?"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError) and "timeout" not in text.lower():
        text = f"timed out ({text})"
    return text


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    transient: Callable[[BaseException], bool],
    policy: RetryPolicy,
    budget: float,
    what: str,
) -> T:
    """Run ``call`` until it succeeds, fails permanently (raised as is) or fails transiently
    ``policy.attempts`` times or past ``budget`` seconds (:class:`GaveUp`). Cancellation goes
    through at once, whatever the server does."""
    import tenacity  # a dependency of the cloud extras only

    attempts = 0
    last: BaseException | None = None
    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(max(1, policy.attempts)),
        wait=tenacity.wait_exponential_jitter(
            multiplier=policy.backoff, max=policy.max_backoff, jitter=policy.backoff
        ),
        retry=tenacity.retry_if_exception(transient),
        reraise=True,
        before_sleep=lambda state: log.info(
            "%s: %s; retry %d in %.2fs",
            what,
            _describe(state.outcome.exception() if state.outcome else None),
            state.attempt_number,
            state.upcoming_sleep,
        ),
    )
    with anyio.move_on_after(budget):
        try:
            async for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    try:
                        return await call()
                    except Exception as exc:
                        last = exc
                        raise
        except Exception as exc:
            if not transient(exc):
                raise
            raise GaveUp(exc, attempts, budget_spent=False) from exc
    raise GaveUp(last, attempts, budget_spent=True) from last
