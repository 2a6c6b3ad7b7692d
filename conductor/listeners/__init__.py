"""Listeners: hook objects that react to an engine's flow and atom transitions."""
