"""``jobboard serve``: the web dashboard, its JSON API and board-level metrics.

Everything here reads and steers a board through the :class:`~jobboard.base.JobBoard`
contract only, so it works on every backend:

* :mod:`.snapshot` reads the board into the dashboard's overview document
  (flows, conductors, claims, waiting and recent jobs) once per refresh;
* :mod:`.jobpage` builds one job's page (masked store, attempts, parent and
  children, the timeline of its tasks);
* :mod:`.hub` turns board events and the bounded refresh into server-sent events;
* :mod:`.app` is the ASGI application (Starlette) serving the pages and ``/api``,
  :mod:`.actions` its admin actions, :mod:`.server` the uvicorn server around it;
* :mod:`.metrics` exports per-flow gauges for Prometheus;
* :mod:`.commands` registers ``jobboard serve`` and ``jobboard metrics``.

Only :mod:`.commands`, :mod:`.snapshot`, :mod:`.jobpage`, :mod:`.masking` and
:mod:`.actions` import without the ``web`` extra (Starlette and uvicorn);
:mod:`.metrics` needs only prometheus_client.
"""
