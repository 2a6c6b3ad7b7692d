"""Small shared types of the engine."""
