"""The Django project's ASGI application, wrapped in guard.

    GUARD_CONFIG=config/guard.yaml uvicorn examples.django_app.asgi:application

Django's ASGI handler refuses lifespan events, so guard would never hear that the server is
shutting down. ``with_lifespan`` answers them for Django: guard's store opens on the first
guarded request and closes when the server shuts down (the embedded Redis saves its file and
stops). Under ``uvicorn --lifespan off`` there is no shutdown event: the store stays open until
the process exits (call ``await application.aclose()`` yourself if your server has another hook).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.asgi import get_asgi_application

from guard import GuardMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")
CONFIG = os.environ.get(
    "GUARD_CONFIG", str(Path(__file__).resolve().parents[2] / "config" / "guard.yaml")
)

django_app = get_asgi_application()


async def with_lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Django's app, with the lifespan events answered here (Django raises on them)."""
    if scope["type"] != "lifespan":
        await django_app(scope, receive, send)
        return
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})  # guard closes its store here
            return


application = GuardMiddleware(with_lifespan, config=CONFIG)
