"""Paused flows of a ZooKeeper board: one persistent node per flow, ``pauses/f<flow>``;
and the ``settings`` node, whose version every pause and schedule write moves.

The node holds the pause's JSON note; the folder is made by the first pause,
so namespaces made before pauses existed need no upgrade.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from kazoo.exceptions import NodeExistsError, NoNodeError

from jobboard.zookeeper.session import ZkSession

__all__ = ["ZkPauses"]


class ZkPauses(ZkSession):
    """``pause_flow`` / ``resume_flow`` / ``paused_flows`` storage (see the module docstring)."""

    def _read_pauses(self) -> dict[str, str]:
        def read() -> dict[str, str]:
            names = self._gather([("get_children", self._path("pauses"))])[0] or []
            found = self._gather([("get", self._path("pauses", n)) for n in names])
            return {
                unquote(n[1:]): item[0].decode()
                for n, item in zip(names, found, strict=True)
                if item is not None and n.startswith("f")
            }

        return self._read(read, "paused flows")

    def _write_pause(self, flow: str, encoded: str | None) -> bool:
        path = self._path("pauses", "f" + quote(flow, safe=""))

        def write() -> bool:
            if encoded is None:
                try:
                    self._call("delete", path)
                except NoNodeError:
                    return False
                return True
            try:
                self._call("set", path, encoded.encode())
                return True
            except NoNodeError:
                pass
            try:
                self._call("create", path, encoded.encode(), makepath=True, **self._create_kwargs())
            except NodeExistsError:
                self._call("set", path, encoded.encode())
                return True
            return False

        was = self._read(write, "pause flow" if encoded else "resume flow")
        self._mark_settings()
        return was

    def settings_version(self) -> int | None:
        """The version of the ``settings`` node (moved by every pause and schedule
        write) as the last registration read it, with the minute it was read in: a
        change whose mark was lost (its writer died between the two writes) is seen
        within a minute."""
        return self._settings

    def _mark_settings(self) -> None:
        """Move the ``settings`` node's version after a pause or schedule write."""
        path = self._path("settings")

        def mark() -> None:
            try:
                self._call("set", path, b"")
            except NoNodeError:
                try:
                    self._call("create", path, b"", makepath=True, **self._create_kwargs())
                except NodeExistsError:
                    self._call("set", path, b"")

        self._read(mark, "mark settings")
