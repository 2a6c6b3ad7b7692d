"""The session timeout the server grants, not the one asked for, bounds how long a
partitioned owner believes in its claims."""

from __future__ import annotations

import time

import pytest
from kazoo.client import KazooClient

import jobboard
from jobboard import ClaimStatus, UnclaimableJob, unique_owner
from jobboard.zookeeper import ZookeeperBoard
from tests.fixtures import CHROOT, board_url
from tests.helpers import wait_until
from tests.zkproxy import TcpProxy

pytestmark = pytest.mark.zookeeper


@pytest.mark.parametrize("given_client", [False, True], ids=["own-client", "given-client"])
def test_a_partitioned_owner_knows_its_claim_lost_before_anyone_can_take_it(
    zookeeper_server_factory, given_client
):
    # Given a server granting at most 3 s sessions, and an owner asking for 30 s
    # through a proxy that can cut its connection
    server = zookeeper_server_factory(max_session_timeout=3000)
    opened: list[jobboard.JobBoard] = []
    client = None
    with TcpProxy(server.port) as proxy:
        try:
            if given_client:
                client = KazooClient(hosts=proxy.hosts, timeout=30)
                client.start(timeout=10)
                owner = ZookeeperBoard(client=client, chroot=CHROOT, namespace="ns").connect()
            else:
                owner = jobboard.connect(board_url(proxy.hosts, 30), namespace="ns")
            opened.append(owner)
            rival = jobboard.connect(board_url(server.hosts, 30), namespace="ns")
            opened.append(rival)
            assert owner.session_timeout == 3.0
            # the conductor's bound on an uncertain claim follows the granted timeout
            assert owner.uncertain_claim_bound() == pytest.approx(3.0 * 0.85)
            job = owner.post("j", "f")
            claim = owner.claim(job, unique_owner("owner"))
            assert owner.claim_uncertain_since(claim) is None
            rival_who = unique_owner("rival")

            # When the owner's connection is cut
            proxy.cut()
            cut_at = time.monotonic()
            seen: dict[str, float] = {}

            def rival_took_it() -> bool:
                status = owner.claim_status(claim)
                since = owner.claim_uncertain_since(claim)
                if status is ClaimStatus.UNCERTAIN and since is not None:
                    seen.setdefault("trusted_until", since + owner.uncertain_claim_bound())
                if "lost" not in seen and status is ClaimStatus.LOST:
                    seen["lost"] = time.monotonic()
                    assert owner.claim_uncertain_since(claim) is None
                attempt = time.monotonic()
                try:
                    seen["token"] = rival.claim(job, rival_who).token
                except UnclaimableJob:
                    return False
                seen["taken"] = attempt
                return True

            wait_until(rival_took_it, timeout=20)

            # Then the owner knew its claim lost before the rival's claim was even sent
            print(
                f"lost after {seen.get('lost', float('nan')) - cut_at:.2f}s, "
                f"taken after {seen['taken'] - cut_at:.2f}s"
            )
            assert "lost" in seen and seen["lost"] < seen["taken"]
            # an uncertain claim was trusted no longer than the board itself kept it
            if "trusted_until" in seen:
                print(f"uncertain claim trusted until {seen['trusted_until'] - cut_at:.2f}s")
                assert seen["trusted_until"] <= seen["taken"]
            assert seen["token"] == claim.token + 1
        finally:
            proxy.close()  # a closed connection ends the clients at once
            for board in opened:
                board.close()
            if client is not None:
                client.stop()
                client.close()
