"""The local picture of a ZooKeeper board's active jobs, claims and cancel flags.

Pure data kept by :mod:`jobboard.zookeeper.view` (its caller holds the
board's lock): folder members from listings and our own writes, and per-flow
heaps of waiting jobs in claim order.
"""

from __future__ import annotations

import bisect
import heapq
import random
import re
import time
from collections.abc import Collection, Iterable
from typing import Any

from jobboard.zookeeper.nodes import VIEW_KINDS, due_of, id_parts, is_scheduled, parse_id

#: A job id's prefix: ``p<rank>+<flow>+``.
PREFIX_RE = re.compile(r"^p[0-4]\+[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127}\+$")


class View:
    """The local picture of active jobs, claims and cancel flags (caller holds the lock).

    Listings come from children watches; our own writes are applied at once as
    overrides, which a listing drops only when it was requested after the
    write (ZooKeeper answers one session's requests in order), so a listing
    already in flight never undoes a change we know about.
    """

    def __init__(self) -> None:
        self.members: dict[str, set[str]] = {kind: set() for kind in VIEW_KINDS}
        self.gen = dict.fromkeys(VIEW_KINDS, 0)
        self.pzxid = dict.fromkeys(VIEW_KINDS, -1)
        self.overrides: dict[str, dict[str, tuple[int, bool]]] = {k: {} for k in VIEW_KINDS}
        #: Per flow, a heap of job ids: within one flow a plain id's text orders as
        #: (rank, seq) does (``p<rank>+<flow>+<10-digit seq>``), so no id is parsed.
        self.heaps: dict[str, list[str]] = {}
        #: Per flow, jobs posted for later that fell due: a heap of (rank, seq, id).
        self.later: dict[str, list[tuple[int, int, str]]] = {}
        # Jobs posted for later, by due time; moved to their flow's heap once due.
        self.due: list[tuple[float, str]] = []
        # Jobs whose claim ended, not yet known to be waiting rather than finished
        # (the jobs/ listing is paced; one read of the job node settles it).
        self.unconfirmed: set[str] = set()
        self.loaded = False

    #: A listing with at least this many new names is taken in one batch.
    BATCH = 64

    def listing(
        self, kind: str, children: Iterable[str], pzxid: int, sent_gen: int
    ) -> tuple[set[str], set[str]] | None:
        """Apply a children listing; returns (added, removed) or None if it was older
        (or the same: an unchanged ``pzxid`` means unchanged children)."""
        if pzxid <= self.pzxid[kind]:
            return None
        self.pzxid[kind] = pzxid
        old = self.members[kind]
        members = set(children)
        fresh = members - old  # only names not seen before are looked at
        if len(fresh) >= self.BATCH:
            members.difference_update(self._push_batch(sorted(fresh), kind == "jobs"))
        else:
            members.difference_update([c for c in fresh if parse_id(c) is None])
            if kind == "jobs":
                for job_id in fresh:
                    self.push(job_id)
        overrides = self.overrides[kind]
        for job_id, (gen, present) in list(overrides.items()):
            if gen <= sent_gen:
                del overrides[job_id]
            elif present:
                members.add(job_id)
            else:
                members.discard(job_id)
        self.members[kind] = members
        return members - old, old - members

    def local(self, kind: str, job_id: str, present: bool) -> bool:
        """Apply one of our own writes; True when it changed the view."""
        self.gen[kind] += 1
        self.overrides[kind][job_id] = (self.gen[kind], present)
        members = self.members[kind]
        if (job_id in members) == present:
            return False
        if present:
            members.add(job_id)
        else:
            members.discard(job_id)
        return True

    def push(self, job_id: str) -> None:
        parsed = parse_id(job_id)
        if parsed is None:
            return
        rank, flow, seq = parsed
        if due_of(job_id) is None:
            heapq.heappush(self.heaps.setdefault(flow, []), job_id)
        elif is_scheduled(job_id):
            heapq.heappush(self.due, (due_of(job_id) or 0.0, job_id))
        else:
            heapq.heappush(self.later.setdefault(flow, []), (rank, seq, job_id))

    def _push_batch(self, names: list[str], push: bool) -> list[str]:
        """Take many sorted names at once without parsing each: plain ids sharing a
        ``p<rank>+<flow>+`` prefix lie together (a digit follows the prefix), and
        each such run is in claim order. Other names (jobs posted for later, odd
        ones) are looked at one by one. Returns the names that are not job ids."""
        bad: list[str] = []
        runs: dict[str, list[str]] = {}
        odd: list[str] = []
        i = 0
        while i < len(names):
            first = names[i]
            prefix = first[: first.rfind("+") + 1]
            end = bisect.bisect_left(names, prefix + ":", i) if prefix else i + 1
            end = max(end, i + 1)
            run = names[i:end]
            if PREFIX_RE.match(prefix) and parse_id(run[-1]) and parse_id(run[0]):
                runs.setdefault(prefix[3:-1], []).extend(run)  # ranks come in order
            else:
                for name in run:
                    (bad if parse_id(name) is None else odd).append(name)
            i = end
        if push:
            for flow, run in runs.items():
                heap = self.heaps.get(flow)
                if heap:
                    heap.extend(run)
                    heapq.heapify(heap)
                else:
                    self.heaps[flow] = run  # a sorted list is a heap
            for job_id in odd:
                self.push(job_id)
        return bad

    def promote_due(self, now: float) -> None:
        """Move jobs whose due time came to their flow's heap (cheapest first)."""
        while self.due and self.due[0][0] <= now:
            _, job_id = heapq.heappop(self.due)
            if job_id in self.members["jobs"]:
                self.push(job_id)

    def next_due(self) -> float | None:
        """The earliest due time of a job posted for later that is still active."""
        while self.due and self.due[0][1] not in self.members["jobs"]:
            heapq.heappop(self.due)
        return self.due[0][0] if self.due else None

    def waiting(self, job_id: str) -> bool:
        return (
            job_id in self.members["jobs"]
            and job_id not in self.members["claims"]
            and job_id not in self.unconfirmed
            and not is_scheduled(job_id)
        )

    def best(self, flows: Collection[str] | None, pop: bool) -> str | None:
        """The best waiting job of ``flows`` (dropping stale heap entries); pop it if asked."""
        self.promote_due(time.time())
        best: tuple[tuple[int, int], str, Any] | None = None
        for flow in list({*self.heaps, *self.later} if flows is None else flows):
            heap = self.heaps.get(flow)
            while heap and not (self.waiting(heap[0]) and heap[0][-1].isdigit()):
                heapq.heappop(heap)  # not waiting any more (or not an id after all)
            if heap:
                head = heap[0]
                key = (int(head[1]), int(head[head.rfind("+") + 1 :]))
                if best is None or key < best[0]:
                    best = (key, head, heap)
            later = self.later.get(flow)
            while later and not self.waiting(later[0][2]):
                heapq.heappop(later)
            if later and (best is None or later[0][:2] < best[0]):
                best = (later[0][:2], later[0][2], later)
        if best is None:
            return None
        if pop:
            heapq.heappop(best[2])
        return best[1]

    def spread(self, flows: Collection[str] | None, k: int) -> str | None:
        """Pop one of the ``k`` best waiting jobs of the best priority at random (to
        keep racing conductors off each other's heads); push the others back."""
        place = random.randrange(k)  # pop no further than the place drawn
        picked: list[str] = []
        while len(picked) <= place and (job_id := self.best(flows, pop=True)) is not None:
            picked.append(job_id)
        if not picked:
            return None
        rank = id_parts(picked[0])[0]
        same = [j for j in picked if id_parts(j)[0] == rank]
        choice = same[place] if place < len(same) else random.choice(same)
        for job_id in picked:
            if job_id != choice:
                self.push(job_id)
        return choice

    def active(self, flow: str | None) -> list[str]:
        """Active job ids in claim order."""
        ids = []
        for job_id in self.members["jobs"]:
            parsed = parse_id(job_id)
            if parsed is not None and (flow is None or parsed[1] == flow):
                ids.append((parsed[0], parsed[2], job_id))
        return [job_id for _, _, job_id in sorted(ids)]
