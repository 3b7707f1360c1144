"""The web dashboard: its built page at `/` and hashed assets at `/assets/*` (no key needed).

The page is built by `make dashboard` (Vite, from web/dashboard) into `static/` beside this file;
when it is not built, `/` says how to build it and the API is served as usual.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.exceptions import HTTPException

BUILT_DIR = Path(__file__).parent / "static"

# The page talks to its own origin only: its scripts, styles, the API and its WebSockets.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "style-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# Asset names carry a hash of their content: a new build has new names.
_ASSET_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "public, max-age=31536000, immutable",
}

_NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Dashboard not built</title></head>
<body><main>
<h1>The dashboard is not built</h1>
<p>The API is served as usual (its document: <a href="/docs">/docs</a>,
<a href="/openapi.json">/openapi.json</a>). To build the dashboard, run
<code>make dashboard</code> (Node.js 20 and npm), then reload this page.</p>
</main></body></html>
"""

router = APIRouter(include_in_schema=False)


def dashboard_dir(request: Request) -> Path:
    """The folder of the built dashboard this app serves."""
    configured: Path | None = request.app.state.settings.dashboard_dir
    return configured or BUILT_DIR


@router.get("/")
async def dashboard_page(request: Request) -> Response:
    """The dashboard's page, or how to build it."""
    index = dashboard_dir(request) / "index.html"
    if not index.is_file():
        return HTMLResponse(_NOT_BUILT, headers=_PAGE_HEADERS)
    return FileResponse(index, media_type="text/html", headers=_PAGE_HEADERS)


@router.get("/assets/{name}")
async def dashboard_asset(request: Request, name: str) -> Response:
    """One built asset (a script, a stylesheet), by its hashed file name."""
    folder = dashboard_dir(request) / "assets"
    path = folder / name
    # The route's {name} holds no slash; refuse dot names and anything that is not a plain file.
    if name.startswith(".") or not path.is_file() or path.resolve().parent != folder.resolve():
        raise HTTPException(404)  # the app's handler answers OpenAI's envelope
    return FileResponse(path, headers=_ASSET_HEADERS)
