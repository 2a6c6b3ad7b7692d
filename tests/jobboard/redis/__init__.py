"""Redis board tests on real redis-servers."""
