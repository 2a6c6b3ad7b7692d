"""Example flows (the demo's, and the fencing-token pattern)."""
