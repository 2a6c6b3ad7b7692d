"""Children listings decoded in bulk give exactly the names kazoo's own decoder gives,
for every folder a board may meet: job ids, long names, non-ASCII names, none."""

from __future__ import annotations

import pytest
from kazoo.protocol import serialization
from kazoo.protocol.serialization import int_struct, stat_struct, write_string

from jobboard.zookeeper import ZookeeperBoard
from jobboard.zookeeper.listing import GetChildren2, list_children_async, split_names
from jobboard.zookeeper.localview import View
from tests.helpers import wait_until
from tests.jobboard.zookeeper.conftest import node

pytestmark = pytest.mark.zookeeper

STAT = tuple(range(1, 12))


def answer(names: list[str]) -> bytes:
    """A children listing's answer as the server sends it (after the reply header)."""
    out = bytearray(int_struct.pack(len(names)))
    for name in names:
        out += write_string(name)
    return bytes(out + stat_struct.pack(*STAT))


JOB_IDS = [f"p{n % 5}+flow{n % 3}+{n:010d}" for n in range(300)]


@pytest.mark.parametrize(
    "names",
    [
        JOB_IDS,
        ["p2+noop3+0000000001"],
        [],
        JOB_IDS[:5] + ["x" * 127, "y" * 128, "z" * 300] + JOB_IDS[5:9],
        JOB_IDS[:3] + ["p2+flöw+0000000007", "é"],
        ["a", "\x01b", "c\x7f", "+", "p2+x+d1234567890123+0000000001"],
    ],
    ids=["ids", "one", "none", "long", "utf8", "odd"],
)
def test_bulk_decoding_matches_kazoo(names):
    data = answer(names)
    expected = serialization.GetChildren2.deserialize(data, 0)
    assert GetChildren2.deserialize(data, 0) == expected
    assert GetChildren2.deserialize(b"\x00" * 7 + data, 7) == expected
    assert list(expected[1]) == list(STAT)


def test_bulk_decoding_leaves_what_it_cannot_split_to_kazoo():
    assert split_names(answer(JOB_IDS[:4] + ["y" * 128]), 0) is None
    assert split_names(answer(["é"]), 0) is None
    assert split_names(answer([]), 0) is None
    assert split_names(answer(JOB_IDS), 0) == (JOB_IDS, split_names(answer(JOB_IDS), 0)[1])


def test_a_listing_from_the_server_with_a_watch(zookeeper_board_factory, raw):
    board: ZookeeperBoard = zookeeper_board_factory()
    posted = {board.post(f"j{n}", "f").id for n in range(70)}
    folder = node(board, "jobs")
    for odd in ("zz-" + "x" * 200, "ünïcode", "plain"):
        raw.create(f"{folder}/{odd}")
    fired = []
    names, stat = list_children_async(board.client, board._path("jobs"), fired.append).get(10)
    kazoo_names, kazoo_stat = board.client.get_children(board._path("jobs"), include_data=True)
    assert sorted(names) == sorted(kazoo_names) and stat == kazoo_stat
    assert posted | {"zz-" + "x" * 200, "ünïcode", "plain"} == set(names)
    raw.create(f"{folder}/more")
    wait_until(lambda: fired, message="the listing's children watch")
    assert fired[0].path == board._path("jobs")


def test_a_first_listing_sorts_the_names_given_not_a_set_of_them():
    view = View()
    ids = [f"p2+f+{n:010d}" for n in range(200)] + ["p1+f+0000000500", "p2+g+0000000201", "bad"]
    assert view.listing("jobs", ids, 10, 0) == (set(ids) - {"bad"}, set())
    assert view.best(["f"], pop=True) == "p1+f+0000000500"
    assert view.best(["f"], pop=True) == "p2+f+0000000000"
    assert view.best(["g"], pop=False) == "p2+g+0000000201"
    assert "bad" not in view.members["jobs"]
