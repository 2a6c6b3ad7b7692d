__version__ = "0.1.0"


def __getattr__(name: str):
    """Import the daemon lazily so engine users do not pay for the board code."""
    if name == "Conductor":
        from conductor.conductor import Conductor

        return Conductor
    raise AttributeError(f"module 'conductor' has no attribute {name!r}")
