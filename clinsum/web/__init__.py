"""The clinicians' web page: static files in the package, and the routes that serve them.

The page is one more client of the plain JSON-RPC face: it talks to the WebSocket port
itself, so this module serves only what a browser needs before it can connect: the page,
its static files, a favicon and `/config.json` (the WebSocket port and whether a token is
needed). None of these carries patient data, so none needs the token; the data does, and the
WebSocket face asks for it. The HTTP face mounts these routes and sets the
Content-Security-Policy in one place; the page therefore has no inline script or style.

Rule: nothing here reads the records, the index or the store.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .. import digest

STATIC = Path(__file__).resolve().parent / "static"

# The digest's thresholds, which the charts draw: the screening thresholds in mmHg and mg/dL
# beyond which a reading is flagged (BP stage 2, sugar low or high), and the change in risk
# (0-1 scale) from the earliest visit that counts as meaningful.
THRESHOLDS = {
    "systolic": {"high": digest.BP_STAGE2_SYSTOLIC, "crisis": digest.BP_CRISIS_SYSTOLIC},
    "diastolic": {"high": digest.BP_STAGE2_DIASTOLIC, "crisis": digest.BP_CRISIS_DIASTOLIC},
    "sugar": {"low": digest.SUGAR_LOW, "high": digest.SUGAR_HIGH, "crisis": digest.SUGAR_CRISIS},
    "risk_change": digest.RISK_TREND,
}

# The page and its files change with the package, not per request: let the browser revalidate
# (ETag, Last-Modified) rather than cache blindly across an upgrade.
_NO_STALE = {"Cache-Control": "no-cache"}


def routes(ws_port: int, auth_required: bool) -> list[BaseRoute]:
    """The page's routes, for the HTTP face to mount at the root.

    Args:
        ws_port: the WebSocket face's port, which the page connects to.
        auth_required: whether the page must ask for an access token before connecting.
    """
    config = {"ws_port": ws_port, "auth_required": auth_required, "thresholds": THRESHOLDS}

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=_NO_STALE)

    async def favicon(request: Request) -> Response:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml", headers=_NO_STALE)

    async def config_json(request: Request) -> Response:
        return JSONResponse(config, headers={"Cache-Control": "no-store"})

    return [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/favicon.ico", favicon, methods=["GET", "HEAD"]),
        Route("/config.json", config_json, methods=["GET", "HEAD"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]


__all__ = ["STATIC", "THRESHOLDS", "routes"]
