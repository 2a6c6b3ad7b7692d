"""Tests of the jobboard admin command."""
