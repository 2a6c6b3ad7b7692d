"""Tests of the conductor package: the engine, the daemon, its command and metrics."""
