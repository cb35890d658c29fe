"""``serve_app``: run an aiohttp application on 127.0.0.1, at a port the system picks, for as
long as a test needs it. Every stand-in server of the testing kit starts this way.

::

    async with serve_app(app) as url:  # "http://127.0.0.1:PORT"
        provider = MyProvider(base_url=url)
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

__all__ = ["serve_app"]


@asynccontextmanager
async def serve_app(app: web.Application | web.AppRunner, *,
                    ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1 at a free port; yields its base URL, ``http://127.0.0.1:PORT``
    (``https://`` with ``ssl_context``), without a trailing slash. The server is stopped and
    its connections closed on leaving the block, an error included.

    A handler is cancelled when its client goes away, as a real model server stops generating.
    To choose other runner options, or to reach the runner afterwards (``runner.server``
    holds the open connections), pass a ``web.AppRunner`` of your own instead of the app: it
    is set up and cleaned up the same way.
    """
    runner = app if isinstance(app, web.AppRunner) else web.AppRunner(
        app, handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
        port = runner.addresses[0][1]
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
