"""A live sandbox server in a background thread, for tests and scripts.

>>> server = SandboxServer().start()          # 127.0.0.1, a free port
>>> server.url                                 # doctest: +SKIP
'http://127.0.0.1:53411'
>>> server.stop()

Starting sets ``sandbox.url``, so :attr:`Sandbox.config <.state.Sandbox.config>` points a host app at it.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .app import create_sandbox_app
from .state import Sandbox

__all__ = ["QuietRequestHandler", "SandboxServer"]


class QuietRequestHandler(WSGIRequestHandler):
    """werkzeug's handler without the per-request access log line (errors are still logged)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log nothing for successful requests."""


class SandboxServer:
    """Serve a :class:`~.state.Sandbox` with werkzeug's threaded server in a daemon thread.

    :param sandbox: the sandbox (default: a new one).
    :param host: interface to bind (default ``127.0.0.1``).
    :param port: port to bind (default 0: a free port; the real one is in :attr:`port` and :attr:`url`).
    :param app: a WSGI app to serve instead of ``create_sandbox_app(sandbox)`` (e.g. one mounted under a prefix
        with ``DispatcherMiddleware``; then give ``prefix`` so :attr:`url` includes it).
    :param prefix: the path the sandbox is mounted at inside ``app`` (``""`` at the root).
    :param quiet: do not log each request.
    """

    def __init__(
        self,
        sandbox: Sandbox | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        app: Any = None,
        prefix: str = "",
        quiet: bool = True,
    ) -> None:
        self.sandbox = sandbox if sandbox is not None else Sandbox()
        self.host = host
        self.requested_port = port
        self.app: Flask | Any = app if app is not None else create_sandbox_app(self.sandbox)
        self.prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
        self.quiet = quiet
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port. :raises RuntimeError: not started."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        """``http://host:port`` plus the prefix, no trailing slash. :raises RuntimeError: not started."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}{self.prefix}"

    def start(self) -> SandboxServer:
        """Bind and serve in a daemon thread; sets ``sandbox.url``. Returns self."""
        if self._server is not None:
            raise RuntimeError("the server is already started")
        handler = QuietRequestHandler if self.quiet else WSGIRequestHandler
        self._server = make_server(self.host, self.requested_port, self.app, threaded=True, request_handler=handler)
        self.sandbox.url = self.url
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"patronlock-sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent). Requests in flight finish on their daemon threads."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(5)
        self._server = self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start() if self._server is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
