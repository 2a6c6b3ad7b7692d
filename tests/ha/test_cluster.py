"""Redis Cluster: namespaces spread over the shards, each whole on one slot, and a
shard's master killed while conductors work.

Three masters with one replica each run on loopback. A board is one namespace;
every key and the event channel of a namespace carry the hash tag
``{namespace}``, so the namespace lives on one shard. Conductors serve several
namespaces by running one ``conductor run`` per namespace.
"""

from __future__ import annotations

import time
import uuid

import pytest
import redis

import jobboard
from jobboard import JobState
from tests.ha.fleet import (
    Fleet,
    jobboard_cli,
    post_batch,
    running,
    some_done,
    states,
    wait_all_finished,
)
from tests.ha.servers import wait_replicated
from tests.helpers import wait_until

pytestmark = pytest.mark.slow

JOBS = 15
LEASE = 6


def _spread_namespaces(group) -> dict[str, object]:
    """One namespace per master: namespace -> the node holding it."""
    owners: dict[object, str] = {}
    for _ in range(200):
        name = f"c{uuid.uuid4().hex[:8]}"
        node = group.owner_of(f"jb:{{{name}}}:seq")
        owners.setdefault(node, name)
        if len(owners) == 3:
            break
    assert len(owners) == 3
    return {name: node for node, name in owners.items()}


def _keys_of(group, namespace: str) -> dict[int, list[bytes]]:
    """Every key of a namespace, by the port of the master holding it."""
    out: dict[int, list[bytes]] = {}
    for node in group.masters():
        keys = list(node.client().scan_iter(match=f"jb:{{{namespace}}}:*", count=1000))
        if keys:
            out[node.port] = keys
    return out


def test_namespaces_spread_over_the_shards_each_on_one_slot(cluster_group):
    client = cluster_group.client()
    masters = {cluster_group.owner_of(f"jb:{{n{i}}}:seq").port for i in range(30)}
    assert len(masters) == 3  # thirty namespaces land on every shard
    namespace = f"k{uuid.uuid4().hex[:8]}"
    board = jobboard.connect(cluster_group.url(namespace, lease=LEASE))
    try:
        job = board.post("j", "steps", {"spec": {}})
        claim = board.claim_next("me")
        assert claim is not None and claim.job_id == job.id
        board.save_progress(job.id, "me", claim.token, "one", {"result": "one-ok"})
        board.register_entity("me")
        other = board.post("k", "steps", {"spec": {}})
        board.cancel(other.id)
        board.consume(job.id, "me", claim.token, result={"ok": True})
        listed = jobboard_cli(cluster_group.url(namespace), "list", "--json")  # same URL
        assert listed.returncode == 0, listed.stderr
        assert other.id in listed.stdout and "cancelled" in listed.stdout
        assert board.purge(older_than=0) >= 1
        keys = _keys_of(cluster_group, namespace)
        slot = client.cluster("keyslot", f"{{{namespace}}}")
        assert len(keys) == 1, keys  # one shard holds the whole namespace
        (found,) = keys.values()
        assert found and {client.cluster("keyslot", k) for k in found} == {slot}
    finally:
        board.close()


def test_a_shard_master_killed_while_three_namespaces_are_served(cluster_group, tmp_path):
    # Given three namespaces, one on each shard, each with its own conductor
    spread = _spread_namespaces(cluster_group)
    boards, fleets, ids = {}, {}, {}
    for namespace in spread:
        url = cluster_group.url(namespace, lease=LEASE)
        boards[namespace] = jobboard.connect(url)
        ids[namespace] = post_batch(boards[namespace], JOBS, pause=0.2)
        (tmp_path / namespace).mkdir()
        fleets[namespace] = Fleet(url, tmp_path / namespace)
    for node in cluster_group.masters():
        wait_replicated(node, cluster_group.replicas_of(node))  # the posts are on replicas
    with running(*fleets.values()):
        for namespace, fleet in fleets.items():
            fleet.start(f"c-{namespace}", "--max-jobs", "2", "--lease", str(LEASE))
        victim_ns, victim = next(iter(spread.items()))
        wait_until(lambda: some_done(boards[victim_ns], ids[victim_ns], 3), 60, 0.05, "jobs done")

        # When the master of the first namespace's shard is killed mid-run
        left = JOBS - states(boards[victim_ns], ids[victim_ns])[JobState.COMPLETE]
        killed_at = time.monotonic()
        victim.kill()
        key = f"jb:{{{victim_ns}}}:seq"
        promoted = wait_until(lambda: _promoted(cluster_group, key, victim), 30, 0.05, "promotion")
        promoted_after = time.monotonic() - killed_at
        took = {ns: wait_all_finished(boards[ns], ids[ns], 90) for ns in spread}

        # Then a replica serves the shard and every job of every namespace completed
        for namespace in spread:
            counts = states(boards[namespace], ids[namespace])
            assert counts == {JobState.COMPLETE: JOBS}, (namespace, counts)
        assert left > 0 and promoted.port != victim.port
        assert all(p.poll() is None for f in fleets.values() for p in f.procs.values())
        assert f"cluster node 127.0.0.1:{promoted.port}" in repr(boards[victim_ns])
        print(
            f"\ncluster failover: replica promoted {promoted_after:.1f}s after kill -9 of a "
            f"shard master with {left} of its {JOBS} jobs unfinished; all jobs of the three "
            f"namespaces complete "
            f"{time.monotonic() - killed_at:.1f}s after it (waits {max(took.values()):.1f}s)"
        )
    for board in boards.values():
        board.close()


def _promoted(group, key: str, victim):
    try:
        node = group.owner_of(key)
    except (LookupError, redis.RedisError):
        return None
    return node if node is not victim else None
