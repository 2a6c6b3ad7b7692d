"""The board contract on a Sentinel-watched master and on a Redis Cluster.

The very tests of ``tests/jobboard/test_contract.py``, each on its own
namespace, with boards opened by ``redis+sentinel://`` and ``redis+cluster://``
URLs: every script, pipeline and event of the Redis board works through
both clients (a cluster namespace lives on whichever shard its tag hashes to).
"""

from __future__ import annotations

import pytest

import jobboard
from tests.factory import BoardFactory
from tests.ha.conftest import _needs_redis, _run
from tests.ha.servers import RedisClusterGroup, SentinelGroup
from tests.jobboard.test_contract import *  # noqa: F403 - the suite, run again here

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared_sentinel(request):
    _needs_redis()
    yield from _run(SentinelGroup(), request)


@pytest.fixture(scope="module")
def shared_cluster(request):
    _needs_redis()
    yield from _run(RedisClusterGroup(replicas=0), request)


@pytest.fixture(params=["sentinel", "cluster"])
def board_factory(request):
    """Boards of one fresh namespace through Sentinel or Cluster."""
    group = request.getfixturevalue(f"shared_{request.param}")
    factory = BoardFactory(
        f"redis-{request.param}",
        lambda **o: jobboard.connect(group.url(o.pop("namespace")), **o),
    )
    yield factory
    factory.close()
