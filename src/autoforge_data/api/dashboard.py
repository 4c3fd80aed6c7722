"""The dashboard at ``/``: one server-rendered page, its static files and ``/api/v1/stats``.

The page is rendered with Jinja2 (autoescaping on) from the same readiness answer as
``/health/ready``; its script (``static/dashboard.js``, no build step, no CDN) polls
``/api/v1/stats`` for the numbers and charts and calls ``/api/v1/search`` for the search box,
putting every value into the page as text. A Content-Security-Policy allows scripts and styles
from this origin only. ``/`` still answers JSON to clients that do not ask for HTML (``curl``,
API clients), and ``/api`` always does.
"""

from __future__ import annotations

import datetime as dt
import functools
from importlib import resources
from typing import Any

import jinja2
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from autoforge_data import __version__
from autoforge_data.api import health
from autoforge_data.api import stats as stats_module
from autoforge_data.api.metrics import refresh_gauges
from autoforge_data.api.stats import summary

REFRESH_MS = 5000
STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
router = APIRouter(tags=["meta"])


@functools.cache
def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("autoforge_data.api", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["detail"] = _detail
    return env


def _detail(check: dict[str, Any]) -> str:
    """A component's numbers as ``key=value`` text (escaped by the template)."""
    return " ".join(f"{k}={v}" for k, v in check.items() if k != "status")


def _auth_required(app: FastAPI) -> bool:
    try:
        from autoforge_data.api.auth import auth_required
    except ImportError:  # an app without the API's auth module asks for no key
        return False
    return bool(auth_required(app.state.settings))


def index_body(app: FastAPI) -> dict[str, Any]:
    """What this service is and where to look (the JSON index)."""
    settings = app.state.settings
    return {
        "service": "autoforge-data",
        "version": __version__,
        "profile": settings.env,
        "links": {
            "dashboard": "/",
            "ready": "/health/ready",
            "live": "/health/live",
            "metrics": "/metrics",
            "stats": "/api/v1/stats",
            "docs": "/docs",
        },
    }


@router.get("/", include_in_schema=False, response_model=None)
async def home(request: Request) -> Response:
    """The dashboard for browsers; the JSON index for clients that do not ask for HTML."""
    if "text/html" not in request.headers.get("accept", ""):
        return JSONResponse(index_body(request.app))
    app = request.app
    status, checks = await health.shared_run(app, "ready", health.READY_CHECKS)
    settings = app.state.settings
    html = (
        _templates()
        .get_template("dashboard.html")
        .render(
            service="autoforge-data",
            version=__version__,
            profile=settings.env,
            mode=settings.target.mode.value,
            index_backend=settings.index_backend,
            status=status,
            checks=checks,
            auth_required=_auth_required(app),
            refresh_ms=REFRESH_MS,
            window=int(stats_module.INTERVAL),
            minutes=int(stats_module.INTERVAL * stats_module.POINTS / 60),
            rendered_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        )
    )
    return HTMLResponse(html, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"})


@router.get("/api")
async def api_index(request: Request) -> dict[str, Any]:
    """What this service is and where to look (always JSON)."""
    return index_body(request.app)


@router.get("/api/v1/stats")
async def stats(request: Request) -> dict[str, Any]:
    """Health, totals since start (latency, hit ratio, sizes, index, backup) and the last
    ten minutes in 10-second windows (``history``) for the dashboard."""
    app = request.app
    refreshed = await refresh_gauges(app)
    checks = refreshed["checks"]
    out = summary(app.state.obs)
    out["health"] = {"status": refreshed["status"], "checks": checks}
    out["backup"] = checks.get("backup")
    out["replica"] = checks.get("replica")
    history = getattr(app.state, "stats_history", None)
    out["history"] = history.points() if history is not None else []
    return out


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> Response:
    """The dashboard's script and stylesheet (an allow-list: no path reaches the filesystem)."""
    media = STATIC.get(name)
    if media is None:
        raise HTTPException(status_code=404)
    return Response(
        _static_bytes(name),
        media_type=media,
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


@functools.cache
def _static_bytes(name: str) -> bytes:
    return resources.files("autoforge_data.api").joinpath("static", name).read_bytes()
