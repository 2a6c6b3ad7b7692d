"""Progress records of a ZooKeeper board: what is known of them, and reading them.

A layer of :class:`jobboard.zookeeper.ZookeeperBoard` (which sets up the state
declared here). Each atom's record is a node ``progress/<id>/a<atom>``; the
board remembers, per held job, which of them exist and whether the folder
does, so that a fenced write (``save_progress``, or the consume that carries
the last records) creates or rewrites them without reading first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

from kazoo.exceptions import NodeExistsError

from jobboard import errors
from jobboard.model import JobRef
from jobboard.zookeeper.nodes import load
from jobboard.zookeeper.view import ZkView


class ZkProgress(ZkView):
    """What is known of a held job's progress nodes, the writes of records, and reading them."""

    #: Per held job: the progress atoms known to exist (None: unknown), and
    #: whether its progress folder exists.
    _progress: dict[str, set[str] | None]
    _progress_dir: dict[str, bool]
    _fences: dict[str, Any]

    def _progress_ops(self, job_id: str, progress: Mapping[str, str]) -> list[tuple[Any, ...]]:
        """The writes of encoded progress records (creating the job's folder if needed)."""
        folder = self._path("progress", job_id)
        with self._lock:
            known = self._progress.get(job_id)
            has_dir = self._progress_dir.get(job_id, True)
        ops: list[tuple[Any, ...]] = [] if has_dir else [("create", folder, b"", False)]
        for atom_name, encoded in progress.items():
            node = "a" + quote(atom_name, safe="")
            if known is not None and node in known:
                ops.append(("set", f"{folder}/{node}", encoded.encode(), -1))
            else:
                ops.append(("create", f"{folder}/{node}", encoded.encode(), False))
        return ops


    def _learn_progress(
        self, job_id: str, op: tuple[Any, ...], node: str, error: Exception
    ) -> None:
        """What a refused progress write tells about the existing progress nodes."""
        with self._lock:
            atoms = self._progress.get(job_id)
            if op[0] == "create" and op[1] == self._path("progress", job_id):
                self._progress_dir[job_id] = True
            elif isinstance(error, NodeExistsError):
                self._progress_dir[job_id] = True
                self._progress[job_id] = (atoms or set()) | {node}
            elif op[0] == "create":  # NoNode: the folder is missing
                self._progress_dir[job_id] = False
                self._progress[job_id] = set()
            elif atoms is not None:  # NoNode on set: the atom is missing
                atoms.discard(node)

    def load_progress(self, job: JobRef) -> dict[str, dict[str, Any]]:
        job_id = self._require_id(job)

        def read() -> dict[str, dict[str, Any]]:
            jobs, done, names = self._gather(
                [
                    ("exists", self._path("jobs", job_id)),
                    ("exists", self._path("done", job_id)),
                    ("get_children", self._path("progress", job_id)),
                ]
            )
            if jobs is None and done is None:
                raise errors.JobNotFound(f"no job {errors.shown(job_id)} on board {self.name!r}")
            names = [n for n in names or [] if n.startswith("a")]
            found = self._gather([("get", self._path("progress", job_id, n)) for n in names])
            records = {
                unquote(n[1:]): load(f[0], job_id) for n, f in zip(names, found, strict=True) if f
            }
            with self._lock:
                if job_id in self._fences:
                    self._progress_dir[job_id] = bool(names) or self._progress_dir.get(
                        job_id, False
                    )
                    self._progress[job_id] = {n for n, f in zip(names, found, strict=True) if f}
            return records

        return self._read(read, f"load progress of {job_id}")
