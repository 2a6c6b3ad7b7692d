"""Options of a ZooKeeper board URL: unknown or out-of-range values are refused at
the door with ``BadURL`` naming the option, and no password ever shows in an error."""

from __future__ import annotations

import pytest

import jobboard
from jobboard import BadURL, InvalidJob, unique_owner
from jobboard.admin.cli import main as admin_main
from jobboard.zookeeper import ZookeeperBoard

pytestmark = pytest.mark.zookeeper

BAD_VALUES = [
    ("lease", "nan"),
    ("lease", "inf"),
    ("lease", "-1"),
    ("max_attempts", "0"),
    ("max_payload", "-5"),
    ("retention", "-1"),
    ("retention", "nan"),
]


def test_an_unknown_option_is_a_bad_url_naming_it():
    with pytest.raises(BadURL, match="bogus"):
        ZookeeperBoard.from_url("zookeeper://127.0.0.1:1/x?bogus=1")
    with pytest.raises(BadURL, match="colour"):
        ZookeeperBoard.from_url("zookeeper://127.0.0.1:1/x", colour="red")


def test_the_admin_tool_exits_2_on_an_unknown_option(capsys):
    assert admin_main(["--board", "zookeeper://127.0.0.1:1/x?bogus=1", "list"]) == 2
    assert "bogus" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "value"), BAD_VALUES)
def test_out_of_range_options_are_refused_naming_them(option, value):
    with pytest.raises(BadURL, match=option):
        ZookeeperBoard.from_url(f"zookeeper://127.0.0.1:1/x?{option}={value}")
    with pytest.raises(BadURL, match=option):
        ZookeeperBoard.from_url("zookeeper://127.0.0.1:1/x", **{option: float(value)})


def test_a_huge_claim_lease_is_refused(zookeeper_board_factory):
    board = zookeeper_board_factory()
    job = board.post("j", "f")
    for lease in (1e12, float("inf"), float("nan"), 0):
        with pytest.raises(InvalidJob, match="lease"):
            board.claim(job, unique_owner("a"), lease=lease)
    assert board.claim(job, unique_owner("a"), lease=60).lease == 60


@pytest.mark.parametrize(
    "url",
    [
        "zookeeper://alice:s3cr3tpw@127.0.0.1:1/x?lease=abc",
        "zookeeper://alice:s3cr3tpw@127.0.0.1:1/x?bogus=1",
        "zookeeper://alice:s3cr3tpw@127.0.0.1:1/x?session_timeout=soon",
        "zookeeper://alice:s3cr3tpw@127.0.0.1:1/x?max_attempts=0",
        "zookeeper://alice:s3cr3tpw@127.0.0.1:1/x?digest=bob:pw2s3cr3t&namespace=a/b",
    ],
)
def test_passwords_never_show_in_url_errors(url, capsys):
    with pytest.raises(BadURL) as info:
        jobboard.connect(url)
    assert "s3cr3t" not in str(info.value)
    assert admin_main(["--board", url, "list"]) == 2
    assert "s3cr3t" not in capsys.readouterr().err
