"""The ZooKeeper board (``zookeeper://``): see :mod:`jobboard.zookeeper.board`."""

from jobboard.zookeeper.board import ZookeeperBoard

__all__ = ["ZookeeperBoard"]
