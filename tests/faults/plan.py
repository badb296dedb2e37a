"""The job of one trial, drawn from its seed, and what the rules of API.md say must become of it.

A plan is a tree of nodes. Each node is one task (async or sync ``execute``); it sleeps a few ms,
raises on its first ``fail_attempts`` attempts (so a node with ``fail_attempts <= max_retries``
succeeds after retries and one with more fails finally), and on success submits its children
(with their ``depends_on`` siblings, ``optional`` and ``max_retries``) and writes a value derived
from its index to the job cache. Everything here is a pure function of the seed.

:func:`expect` applies the rules of API.md section 2 to a plan:

* a node exists once its parent succeeded; it succeeds (COMPLETED) if its failures fit its
  retries;
* an optional node that fails finally is FAILED_OPTIONAL and counts as done for its dependents;
* a non-optional node that fails finally inside the subtree of an optional node stops there
  (docs/guide.md, "Optional subtrees"): it is recorded FAILED_OPTIONAL, the tasks that depend on
  it, directly or through each other, are SKIPPED without running, its parent and the rest of the
  branch complete as usual, and the job goes on;
* a non-optional node that fails finally outside every optional subtree fails the job: the job
  is FAILED, that node FAILED, and nothing else is predictable but that it is not left QUEUED or
  RUNNING.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

#: the seconds a "hang" node sleeps: far longer than a runner's grace period in a trial
HANG_SECONDS = 1.5


class Node(msgspec.Struct):
    idx: int
    parent: int  # -1 for the root
    sync: bool
    optional: bool = False
    max_retries: int = 0
    fail_attempts: int = 0  # the first ``fail_attempts`` attempts raise
    deps: list[int] = []  # earlier siblings (node indices) this node depends on
    children: list[int] = []
    work: float = 0.002  # seconds of sleep
    size: int = 64  # bytes of the cache value it writes
    hang: float = 0.0  # extra seconds of sleep (sync nodes only)

    @property
    def fails_finally(self) -> bool:
        return self.fail_attempts > self.max_retries

    @property
    def attempts(self) -> int:
        """How many times it runs when nothing is lost: each failure is one attempt."""
        return min(self.fail_attempts, self.max_retries) + 1


class Plan(msgspec.Struct):
    seed: str
    nodes: list[Node]

    def ancestors(self, idx: int) -> list[int]:
        """Parent first, the root last."""
        out = []
        parent = self.nodes[idx].parent
        while parent >= 0:
            out.append(parent)
            parent = self.nodes[parent].parent
        return out

    def subtree(self, idx: int) -> list[int]:
        """``idx`` and every descendant."""
        out, todo = [], [idx]
        while todo:
            n = todo.pop()
            out.append(n)
            todo.extend(self.nodes[n].children)
        return out

    def nearest_optional_ancestor(self, idx: int) -> int | None:
        for a in self.ancestors(idx):
            if self.nodes[a].optional:
                return a
        return None

    def dump(self, path: Path) -> None:
        path.write_bytes(msgspec.json.encode(self))


@functools.lru_cache(maxsize=8)
def load(path: str) -> Plan:
    """The plan in ``path`` (read once per process)."""
    with open(path, "rb") as f:
        return msgspec.json.decode(f.read(), type=Plan)


def value(idx: int, size: int) -> bytes:
    """The cache value node ``idx`` writes: a header naming the node, then a pattern derived from
    it, ``size`` bytes in all (so a torn or foreign value is recognised)."""
    head = f"node {idx} size {size}\n".encode()
    block = hashlib.sha256(f"swath-faults:{idx}".encode()).digest()
    body = block * (size // len(block) + 1)
    return (head + body)[:size] if size >= len(head) else head[:size]


# -- drawing a plan --------------------------------------------------------------------------------
@dataclass
class Shape:
    """How big and how faulty the drawn jobs are."""

    groups: tuple[int, int] = (4, 6)
    group_children: tuple[int, int] = (10, 30)
    subgroup_children: tuple[int, int] = (4, 12)
    max_nodes: int = 320
    sync_share: float = 0.4
    optional_group: float = 0.3
    optional_leaf: float = 0.1
    transient_failure: float = 0.1
    optional_final_failure: float = 0.35  # of optional nodes
    branch_fatal: float = 0.5  # of optional groups: one non-optional node inside fails finally
    job_fatal: float = 0.15  # of jobs: one non-optional node outside optional subtrees fails
    sizes: tuple[int, ...] = (64, 1024, 16 << 10, 100 << 10)


def generate(rng: random.Random, seed: str, *, hang: bool, shape: Shape | None = None) -> Plan:
    """Draw a plan from ``rng``. ``hang``: one sync node (outside optional subtrees, never
    failing) sleeps :data:`HANG_SECONDS`."""
    s = shape or Shape()
    nodes: list[Node] = [Node(0, -1, sync=False, work=0.001)]

    def new(parent: int, sync: bool) -> Node:
        node = Node(
            len(nodes),
            parent,
            sync=sync,
            work=rng.uniform(0.001, 0.006),
            size=rng.choice(s.sizes),
        )
        nodes.append(node)
        nodes[parent].children.append(node.idx)
        return node

    def fill(parent: int, depth: int, count: int) -> None:
        for i in range(count):
            node = new(parent, rng.random() < s.sync_share)
            siblings = nodes[parent].children[:-1]
            if siblings:
                if i == count - 1 and rng.random() < 0.5:
                    node.deps = list(siblings)  # a reducer over the whole group
                elif rng.random() < 0.15:
                    node.deps = sorted(rng.sample(siblings, min(len(siblings), rng.randint(1, 3))))
            if rng.random() < s.transient_failure:
                node.max_retries = rng.randint(1, 2)
                node.fail_attempts = rng.randint(1, node.max_retries)
            elif rng.random() < 0.05:
                node.max_retries = rng.randint(1, 2)
            group = depth < 3 and len(nodes) < s.max_nodes and rng.random() < 0.25 / depth
            if group:
                node.optional = rng.random() < s.optional_group
                fill(node.idx, depth + 1, rng.randint(*s.subgroup_children))
            else:
                node.optional = rng.random() < s.optional_leaf
            if node.optional and rng.random() < s.optional_final_failure:
                node.fail_attempts = node.max_retries + 1

    for _ in range(rng.randint(*s.groups)):
        if len(nodes) >= s.max_nodes:
            break
        group = new(0, rng.random() < s.sync_share)
        group.optional = rng.random() < s.optional_group
        fill(group.idx, 1, rng.randint(*s.group_children))
    plan = Plan(seed, nodes)

    # a non-optional node inside some optional groups fails finally (stops at that group)
    for a in [n.idx for n in nodes if n.optional and n.children and not n.fails_finally]:
        if rng.random() < s.branch_fatal:
            inside = [
                d
                for d in plan.subtree(a)
                if d != a
                and not nodes[d].optional
                and plan.nearest_optional_ancestor(d) == a
                and not nodes[d].fails_finally
            ]
            if inside:
                victim = nodes[rng.choice(inside)]
                victim.fail_attempts = victim.max_retries + 1
    outside = [
        n.idx for n in nodes[1:] if not n.optional and plan.nearest_optional_ancestor(n.idx) is None
    ]
    if rng.random() < s.job_fatal and outside:  # empty when every group drawn is optional
        victim = nodes[rng.choice(outside)]
        victim.fail_attempts = victim.max_retries + 1
    if hang:
        candidates = [
            i
            for i in outside
            if nodes[i].sync and not nodes[i].children and nodes[i].fail_attempts == 0
        ]
        if candidates:
            # early in the job, so the fault finds it running
            nodes[min(candidates[: max(1, len(candidates) // 3)])].hang = HANG_SECONDS
    return plan


# -- what must become of it ---------------------------------------------------------------------
class Run(enum.Enum):
    MUST = "must run"
    NEVER = "never runs"
    MAYBE = "may run"


@dataclass
class Expected:
    """What must become of one node's task (if it exists at all: see ``exists``)."""

    states: frozenset[str]
    run: Run
    exists: Run  # MUST: its task must be in the store; NEVER: must not; MAYBE: either
    strict: bool  # its executions must follow the plan exactly (attempts, final outcome)
    why: str = ""


@dataclass
class Expectation:
    job_state: str
    nodes: dict[int, Expected] = field(default_factory=dict)
    #: the node whose failure fails the job, if any
    job_fatal: int | None = None
    #: nodes that must be COMPLETED when the job COMPLETED (their values must be present)
    certain: set[int] = field(default_factory=set)


def expect(plan: Plan) -> Expectation:
    """Apply the rules (module docstring) to ``plan``."""
    nodes = plan.nodes
    result = Expectation(job_state="COMPLETED")
    # skipped: a node that fails for good inside an optional subtree, and every task that depends
    # on it, directly or through each other (filled in as the walk meets them: dependencies are
    # earlier siblings, so always visited first)
    skipped: set[int] = set()
    job_fatal: list[int] = []

    def visit(idx: int) -> None:
        node = nodes[idx]
        if any(d in skipped for d in node.deps):
            skipped.add(idx)
            result.nodes[idx] = Expected(
                frozenset({"SKIPPED"}), Run.NEVER, Run.MUST, False, "depends on a failed task"
            )
            _absent(plan, result, idx)
            return
        if node.fails_finally:
            if node.optional:
                why = "optional, fails for good"
            elif plan.nearest_optional_ancestor(idx) is not None:
                why = "fails for good inside an optional subtree"
                skipped.add(idx)
            else:
                why = "fails for good: fails the job"
                job_fatal.append(idx)
            state = "FAILED" if idx in job_fatal else "FAILED_OPTIONAL"
            result.nodes[idx] = Expected(frozenset({state}), Run.MUST, Run.MUST, True, why)
            _absent(plan, result, idx)
            return
        result.nodes[idx] = Expected(frozenset({"COMPLETED"}), Run.MUST, Run.MUST, True)
        result.certain.add(idx)
        for c in node.children:
            visit(c)

    visit(0)
    if job_fatal:
        (f,) = job_fatal  # a plan has one at most
        result.job_state = "FAILED"
        result.job_fatal = f
        for idx, exp in result.nodes.items():
            if idx != f and exp.exists != Run.NEVER:
                states = {"COMPLETED", "COMPUTED", "FAILED_OPTIONAL", "SKIPPED"}
                if nodes[idx].fail_attempts:
                    states.add("FAILED")  # failed after the job had failed: no retry
                result.nodes[idx] = Expected(
                    frozenset(states), Run.MAYBE, Run.MAYBE, False, "the job fails"
                )
        result.certain = set()
    return result


def _absent(plan: Plan, result: Expectation, idx: int) -> None:
    """``idx`` never succeeds: none of its descendants is ever submitted."""
    for c in plan.subtree(idx)[1:]:
        result.nodes[c] = Expected(frozenset(), Run.NEVER, Run.NEVER, False, "never submitted")


def _depends_on_doomed(plan: Plan, idx: int, doomed: set[int]) -> bool:
    return any(d in doomed for d in plan.nodes[idx].deps)


def must_see(plan: Plan) -> dict[int, list[int]]:
    """For each node with dependencies, the nodes whose values must be in the cache when it starts:
    ``depends_on`` waits for each dependency's whole subtree, so every node of it that surely
    succeeds has written its value. (A job-fatal node is taken as succeeding here: if it fails,
    whatever depends on it never starts.)"""
    neutral = msgspec.json.decode(msgspec.json.encode(plan), type=Plan)
    for n in neutral.nodes:
        if n.fails_finally and not n.optional and neutral.nearest_optional_ancestor(n.idx) is None:
            n.fail_attempts = n.max_retries
    certain = expect(neutral).certain
    return {
        n.idx: sorted(c for d in n.deps for c in plan.subtree(d) if c in certain)
        for n in plan.nodes
        if n.deps
    }


@functools.lru_cache(maxsize=8)
def must_see_cached(path: str) -> dict[int, list[int]]:
    return must_see(load(path))
