"""Tests of the jobboard package: the contract suite and each backend."""
