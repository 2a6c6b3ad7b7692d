"""The project's benchmark: ``python -m bench`` (or ``make bench``) prints its figures.

Figures, not tests. Each module measures one family of figures on private
servers started by :mod:`bench.servers`; :mod:`bench.peer_driver` runs the
same workload on OpenStack TaskFlow in its own virtual environment.
"""
