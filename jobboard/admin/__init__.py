"""The ``jobboard`` admin command (also ``python -m jobboard``): see :mod:`jobboard.admin.cli`."""
