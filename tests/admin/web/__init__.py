"""Tests of the web dashboard, its JSON API and the board metrics."""
