"""What the ZooKeeper board adds for producers: dedupe keys, ``wait_for``, children, records.

A layer of :class:`jobboard.zookeeper.ZookeeperBoard`.

* **Keys.** A keyed post is one transaction creating ``keys/k<key>`` and the
  job's sequential node, so the key is taken if and only if the job exists:
  racing producers get one job, and a post resent after a connection loss
  finds its own job. ZooKeeper names a sequential node only when it creates
  it, so the key's node is given the job's id by a second write right after
  the transaction. A reader that meets a key node still without an id waits
  for it with a data watch (:attr:`ZkProducers.KEY_SETTLE` seconds); if the
  producer died in between, the job is found by the transaction id it shares
  with the key's node (one look at each job: a rare repair, done once).
  A key whose job is gone (purged) is dropped by the next post naming it,
  and retention drops it with the job.
* **Posting for later** needs no node of its own: the due time is part of the
  job's id (see :mod:`jobboard.zookeeper.nodes`), the local view keeps such
  jobs in a heap by due time and moves them to their flow's heap when due.
* **wait_for** sets a data watch on ``done/<id>``, re-armed after each event:
  the job's ending creates that node.
* **Children** are listed from the job records (active jobs from the local
  view's cache, finished ones from ``done/``): an honest scan of the board,
  since a child's sequential id cannot be named in its parent's index inside
  the posting transaction. Children are few; listings of them are rare.
* **Records** are the nodes ``schedules/s<name>``; ZooKeeper's node version
  is the compare-and-set version (plus one).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import quote, unquote

from kazoo.exceptions import (
    BadVersionError,
    KazooException,
    NodeExistsError,
    NoNodeError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import EventType

from jobboard import errors
from jobboard.changes import NewJob
from jobboard.model import Job
from jobboard.zookeeper.consumenext import ZkConsumeNext
from jobboard.zookeeper.nodes import load, parse_id
from jobboard.zookeeper.session import Refused, log

__all__ = ["ZkProducers"]


class ZkProducers(ZkConsumeNext):
    """Dedupe keys, ``wait_for`` watches, children and the record store."""

    #: Seconds a reader waits for a just-taken key to be given its job's id.
    KEY_SETTLE: ClassVar[float] = 3.0

    # -- keys -------------------------------------------------------------------

    @staticmethod
    def _links(new: NewJob) -> dict[str, Any]:
        """The producers' fields a job record keeps (key, parent)."""
        links: dict[str, Any] = {}
        if new.key is not None:
            links["key"] = new.key
        if new.parent is not None:
            links["parent"] = new.parent
        return links

    def _key_path(self, key: str) -> str:
        return self._path("keys", "k" + quote(key, safe=""))

    def _post_keyed(self, key: str, create: list[tuple[Any, ...]]) -> tuple[str, Job | None]:
        """Post under a dedupe key, ``create`` being the job's create operation:
        (new job id, None), or (the held job's id, that job)."""
        path = self._key_path(key)
        ops = [("create", path, b"", False), *create, *self._counted("posted")]

        def attempt(_uncertain: bool) -> tuple[str, Job | None]:
            for _ in range(self.MAX_ROUNDS):
                held = self._resolve_key(path)
                if held is not None:
                    return held.id, held
                try:
                    results = self._transact(ops)
                except Refused as refused:
                    if refused.index == 0 and isinstance(refused.error, NodeExistsError):
                        continue  # another producer took the key: read it again
                    raise errors.BoardError(
                        f"{self}: post with key {key!r} refused: {refused}"
                    ) from None
                job_id = str(results[1]).rpartition("/")[2]
                self._name_key(path, job_id)
                return job_id, None
            raise errors.BoardUnavailable(f"{self}: key {key!r} kept changing while posting")

        return self._retrying(f"post with key {key!r}", attempt)

    def _name_key(self, path: str, job_id: str) -> None:
        """Give a key's node (created empty with the job) the job's id."""
        try:
            self._read(lambda: self._call("set", path, job_id.encode(), 0), "name key")
        except errors.BoardError as err:  # readers repair it from the transaction id
            log.warning("%s: key node %s not named yet: %s", self, path, err)

    def _resolve_key(self, path: str) -> Job | None:
        """The job holding a key, or None when the key is free (a stale one is dropped)."""
        found = self._gather([("get", path)])[0]
        if found is None:
            return None
        raw, stat = found
        job_id = raw.decode() if raw else self._settle_key(path, stat)
        if job_id:
            snap = self._snapshot(job_id)
            if snap.done is not None or snap.static is not None:
                return self._job(snap)
        try:  # the job is gone (purged): free its key, unless it changed meanwhile
            self._call("delete", path, stat.version)
        except (NoNodeError, BadVersionError):
            pass
        return None

    def _settle_key(self, path: str, stat: Any) -> str | None:
        """The id of a key node created empty: wait for its naming, else find its job by
        the transaction id both nodes share (and name the key node for the next reader)."""
        named = threading.Event()
        found = self.client.get_async(path, watch=lambda _event: named.set())
        raw = found.get(timeout=self.session_timeout)[0]
        if not raw and named.wait(self.KEY_SETTLE):
            raw = (self._gather([("get", path)])[0] or (b"", None))[0]
        if raw:
            return str(raw.decode())
        with self._lock:
            active = sorted(self._view.members["jobs"])
        done = [n for n in self._gather([("get_children", self._path("done"))])[0] or []]
        candidates: list[tuple[str, str]] = [("jobs", n) for n in active]
        candidates += [("done", n) for n in done if parse_id(n)]
        stats = self._gather([("exists", self._path(where, n)) for where, n in candidates])
        for (_, job_id), found_stat in zip(candidates, stats, strict=True):
            if found_stat is not None and found_stat.czxid == stat.czxid:
                log.warning("%s: key node %s repaired: job %s", self, path, job_id)
                try:
                    self._call("set", path, job_id.encode(), stat.version)
                except (NoNodeError, BadVersionError):
                    pass
                return str(job_id)
        return None

    def _key_deletes(self, doomed: list[str]) -> dict[str, tuple[str, int]]:
        """For finished jobs about to be deleted: ``{job id: (key node, version)}`` of
        the key nodes still naming them (two pipelined reads)."""
        records = self._gather([("get", self._path("done", n)) for n in doomed])
        keyed = []
        for job_id, found in zip(doomed, records, strict=True):
            try:
                record = load(found[0], job_id) if found else None
            except errors.InvalidJob:
                continue  # an unreadable record: its key (if any) is freed by the next post
            if record and isinstance(record.get("key"), str):
                keyed.append((job_id, self._key_path(record["key"])))
        nodes = self._gather([("get", path) for _, path in keyed])
        return {
            job_id: (path, item[1].version)
            for (job_id, path), item in zip(keyed, nodes, strict=True)
            if item is not None and item[0].decode() == job_id
        }

    # -- waiting for a result ---------------------------------------------------------

    def _watch_job(self, job_id: str, wake: Callable[[], None]) -> Callable[[], None]:
        """A data watch on ``done/<id>`` (created when the job ends), re-armed after
        each event until stopped."""
        path = self._path("done", job_id)
        stopped = threading.Event()

        def arm() -> None:
            if stopped.is_set() or self._closed or self._client is None:
                return
            try:
                self._client.exists_async(path, watch=fired)
            except (KazooException, KazooTimeoutError) as err:  # the re-check covers it
                log.debug("%s: no watch on %s: %s", self, path, err)

        def fired(event: Any) -> None:
            if stopped.is_set():
                return
            wake()
            if event.type != EventType.NONE:
                arm()

        arm()
        return stopped.set

    # -- the record store ---------------------------------------------------------------

    def _record_path(self, name: str) -> str:
        return self._path("schedules", "s" + quote(name, safe=""))

    def _current_version(self, name: str) -> int | None:
        found = self._gather([("exists", self._record_path(name))])[0]
        return None if found is None else found.version + 1

    def _put_schedule(self, name: str, encoded: str, expect_version: int | None) -> int:
        path, data = self._record_path(name), encoded.encode()

        def write(uncertain: bool) -> int:
            try:
                if expect_version is None:
                    self._call("create", path, data, **self._create_kwargs())
                    return 1
                stat = self._call("set", path, data, expect_version - 1)
                return int(stat.version) + 1
            except (NodeExistsError, NoNodeError, BadVersionError) as err:
                current = self._current_version(name)
                ours = (expect_version or 0) + 1
                if uncertain and current == ours and self._stored(path) == data:
                    return ours  # our own write went through before the connection dropped
                raise self._conflict(name, expect_version, current) from err

        version = self._retrying(f"put schedule {name!r}", write)
        self._mark_settings()
        return version

    def _stored(self, path: str) -> bytes | None:
        found = self._gather([("get", path)])[0]
        return None if found is None else bytes(found[0])

    def _get_schedules(self) -> dict[str, tuple[str, int]]:
        def read() -> dict[str, tuple[str, int]]:
            names = self._gather([("get_children", self._path("schedules"))])[0] or []
            names = [n for n in names if n.startswith("s")]
            found = self._gather([("get", self._path("schedules", n)) for n in names])
            return {
                unquote(n[1:]): (item[0].decode(), item[1].version + 1)
                for n, item in zip(names, found, strict=True)
                if item is not None
            }

        return self._read(read, "get schedules")

    def _remove_schedule(self, name: str, expect_version: int | None) -> bool:
        path = self._record_path(name)

        def delete(uncertain: bool) -> bool:
            try:
                self._call("delete", path, -1 if expect_version is None else expect_version - 1)
                return True
            except NoNodeError:
                if expect_version is not None and not uncertain:
                    raise self._conflict(name, expect_version, None) from None
                return uncertain
            except BadVersionError:
                raise self._conflict(name, expect_version, self._current_version(name)) from None

        removed = self._retrying(f"remove schedule {name!r}", delete)
        self._mark_settings()
        return removed
