"""The HTTP server of ``jobboard serve``: uvicorn, ending event streams when asked to stop.

An open server-sent event stream never ends by itself, so a plain uvicorn
server would wait for its graceful-shutdown timeout on every stop and then
cancel the streams with an error. :class:`DashboardServer` ends the streams
first, so a stop (Ctrl-C, SIGTERM, ``should_exit``) is quick and quiet.
"""

from __future__ import annotations

from types import FrameType

import uvicorn
from starlette.applications import Starlette

__all__ = ["DashboardServer", "make_server"]


class DashboardServer(uvicorn.Server):
    """A uvicorn server that ends the dashboard's event streams before it stops."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.dashboard_app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.stop_streams()
        super().handle_exit(sig, frame)

    def stop_streams(self) -> None:
        """End the open event streams (thread-safe)."""
        self.dashboard_app.state.dashboard.hub.end_streams()

    def request_stop(self) -> None:
        """Stop serving, from any thread."""
        self.stop_streams()
        self.should_exit = True


def make_server(
    app: Starlette, host: str, port: int, *, log_level: str = "warning"
) -> DashboardServer:
    """A server for the dashboard app on ``host:port`` (not started)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    return DashboardServer(config, app)
