"""Claim events missed while the event link was down are caught up (issue 9 item 4)."""

from __future__ import annotations

import redis

from jobboard import ClaimStatus, unique_owner
from jobboard.redis import RedisBoard
from tests.helpers import wait_until
from tests.jobboard.redis.helpers import namespace


def _kill_event_links(port: int) -> int:
    admin = redis.Redis(port=port)
    try:
        return admin.client_kill_filter(_type="pubsub")
    finally:
        admin.close()


def test_claim_taken_while_the_event_link_was_down_is_lost_after_reconnect(
    redis_server_factory, open_board, monkeypatch
):
    monkeypatch.setattr(RedisBoard, "LISTEN_BACKOFF", 2.0)  # back after 1-2 s: room to act
    server = redis_server_factory()
    ns = namespace()
    owner = open_board(server, namespace=ns, lease=60)
    operator = open_board(server, namespace=ns)
    rival = open_board(server, namespace=ns)
    job = owner.post("j", "f")
    who = unique_owner("owner")
    claim = owner.claim(job, who)
    assert owner.claim_status(claim) is ClaimStatus.OWNED

    assert _kill_event_links(server.port) >= 1
    wait_until(lambda: owner.claim_status(claim) is ClaimStatus.UNCERTAIN, timeout=10)
    operator.abandon(job, "operator", force=True)
    taken = rival.claim(job, unique_owner("rival"))
    assert taken.token > claim.token

    # Once the link is back, the owner knows: its claim is lost, never owned.
    status = wait_until(
        lambda: (s := owner.claim_status(claim)) is not ClaimStatus.UNCERTAIN and s, timeout=15
    )
    assert status is ClaimStatus.LOST


def test_claims_still_ours_stay_owned_after_a_reconnect(redis_server_factory, open_board):
    server = redis_server_factory()
    owner = open_board(server, lease=60)
    jobs = [owner.post(f"j{i}", "f") for i in range(3)]
    who = unique_owner("owner")
    claims = [owner.claim(job, who) for job in jobs]
    assert _kill_event_links(server.port) >= 1
    wait_until(lambda: owner.claim_status(claims[0]) is ClaimStatus.UNCERTAIN, timeout=10)
    wait_until(lambda: owner.claim_status(claims[0]) is ClaimStatus.OWNED, timeout=15)
    assert [owner.claim_status(c) for c in claims] == [ClaimStatus.OWNED] * 3
