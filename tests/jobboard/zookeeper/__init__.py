"""ZooKeeper board tests on a real ZooKeeper server."""
