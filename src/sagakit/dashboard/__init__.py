"""sagakit's web dashboard: find sagas, read their logs, and act on them, in a browser.

``sagakit ui --db URL`` serves it (``pip install 'sagakit[ui]'``); :func:`create_app`
gives the same ASGI application to run under a server of your own. It has server-rendered
pages (overview, the list with every filter of :mod:`sagakit.operations`, the
needs-attention queue, a page per saga with live updates) and a JSON API under ``/api/``
described at ``/openapi.json``. Reads are open to whoever reaches it, so it binds
127.0.0.1 by default; every action needs the token it was started with.
"""

from sagakit.dashboard._app import create_app

__all__ = ["create_app"]
