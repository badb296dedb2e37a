"""A job store wrapper that fails chosen calls: store errors on claim, complete and heartbeat.

``FaultyStore(store, faults)`` delegates everything to ``store``; ``faults`` maps an operation to
the call numbers (1-based, counted per process) that fail and how:

* ``before``: raise :class:`InjectedStoreError` without calling the store (the request was lost);
* ``after``: call the store, then raise (the store did the work but the reply was lost).

It also records (``tests.faults.records``) when each claim and heartbeat call started and ended
(so the checks know whether a lease could have lapsed) and which outcomes the store accepted (so
they know which executions' results were committed). Spec strings, as the worker takes them:
``claim:3:before,complete:5:after,heartbeat:2:before``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from swath.store.base import JobStore
from tests.faults import records

OPS = ("claim", "complete", "heartbeat")
WHENS = ("before", "after")


class InjectedStoreError(ConnectionError):
    """A store call failed on purpose (a transient error: a dropped connection)."""


def parse(spec: str) -> dict[str, dict[int, str]]:
    faults: dict[str, dict[int, str]] = {}
    for item in filter(None, spec.split(",")):
        op, n, when = item.split(":")
        if op not in OPS or when not in WHENS:
            raise ValueError(f"bad fault {item!r}: OP:N:WHEN with OP in {OPS}, WHEN in {WHENS}")
        faults.setdefault(op, {})[int(n)] = when
    return faults


def format_spec(faults: dict[str, dict[int, str]]) -> str:
    return ",".join(
        f"{op}:{n}:{when}" for op in OPS for n, when in sorted(faults.get(op, {}).items())
    )


class FaultyStore:
    """See the module docstring. Anything not wrapped goes straight to the inner store."""

    def __init__(self, inner: JobStore, faults: dict[str, dict[int, str]]) -> None:
        self._inner = inner
        self._faults = faults
        self._calls: Counter[str] = Counter()
        self._attempts: dict[str, int] = {}  # task id -> its retry_count when claimed
        self.url = inner.url

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _when(self, op: str) -> str | None:
        self._calls[op] += 1
        return self._faults.get(op, {}).get(self._calls[op])

    def _fault(self, op: str, when: str) -> InjectedStoreError:
        n = self._calls[op]
        records.write("F", records.now(), op, n, when)
        verb = "before calling the store" if when == "before" else "after the store answered"
        return InjectedStoreError(f"injected fault: {op} call {n} failed {verb}")

    async def claim(self, cluster: str, runner_id: str, *args: Any, **kwargs: Any) -> Any:
        when = self._when("claim")
        if when == "before":
            raise self._fault("claim", when)
        started = records.now()
        claimed = await self._inner.claim(cluster, runner_id, *args, **kwargs)
        if claimed:
            records.write("Q", started, records.now(), *(c.id for c in claimed))
        for c in claimed:
            self._attempts[c.id] = c.retry_count
        if when == "after":
            raise self._fault("claim", when)
        return claimed

    async def complete(self, runner_id: str, outcomes: Any, *args: Any, **kwargs: Any) -> Any:
        when = self._when("complete")
        if when == "before":
            raise self._fault("complete", when)
        # the attempt each outcome belongs to, taken now: a claim running meanwhile may lease a
        # task again (its retry) before this call returns
        attempts = {o.task_id: self._attempts.get(o.task_id, -1) for o in outcomes}
        started = records.now()
        records.write("m", started, *attempts)  # begun (a killed process never ends it)
        try:
            result = await self._inner.complete(runner_id, outcomes, *args, **kwargs)
        finally:
            # while the call holds the reported tasks' rows locked, PostgreSQL's heartbeat skips
            # them (it renews them only once the call is over)
            records.write("M", started, records.now(), *attempts)
        if isinstance(result, int):
            accepted = result
            took = list(outcomes) if accepted == len(outcomes) else []
        else:  # a store that says which outcomes it took
            ids = set(result)
            took = [o for o in outcomes if o.task_id in ids]
            accepted = len(took)
        if took:
            items = [
                f"{o.task_id}:{attempts[o.task_id]}:"
                f"{'ok' if type(o).__name__ == 'TaskSuccess' else 'fail'}"
                for o in took
            ]
            records.write("K", records.now(), runner_id, *items)
        elif accepted:
            records.write("P", records.now(), runner_id, f"{accepted}/{len(outcomes)}")
        if when == "after":
            raise self._fault("complete", when)
        return result

    async def stop_requested(self, runner_id: str, *args: Any, **kwargs: Any) -> Any:
        """Not a fault target; recorded because the runner's heartbeat loop awaits it between
        heartbeats (a call stalled here delays the next renewal)."""
        started = records.now()
        records.write("h", started)
        try:
            return await self._inner.stop_requested(runner_id, *args, **kwargs)
        finally:
            records.write("H", started, records.now(), "poll")

    async def heartbeat(self, runner_id: str, *args: Any, **kwargs: Any) -> Any:
        when = self._when("heartbeat")
        if when == "before":
            records.write("H", records.now(), records.now(), "fail")
            raise self._fault("heartbeat", when)
        started = records.now()
        records.write("h", started)  # begun (a killed process never ends it)
        try:
            renewed = await self._inner.heartbeat(runner_id, *args, **kwargs)
        except BaseException:
            records.write("H", started, records.now(), "fail")
            raise
        records.write("H", started, records.now(), "ok")
        if when == "after":
            raise self._fault("heartbeat", when)
        return renewed
