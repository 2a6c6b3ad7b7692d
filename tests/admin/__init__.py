"""Tests of the jobboard admin tool."""
