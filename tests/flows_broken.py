"""A flows module that fails at import (``conductor run`` must say so in one line)."""

raise RuntimeError("flows module broken on purpose")
