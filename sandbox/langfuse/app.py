"""The Langfuse sandbox's ASGI app: one route table, one auth dependency, one error handler.

The route table is the app's own: every route is named after its fault endpoint (``health``,
``observations``, ``scores.create``, ...), and the fault middleware names a request by the route
it matches, so a route and its endpoint name are written down once.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

from sandbox.faults import install
from sandbox.langfuse import (
    annotation_queues,
    ingest,
    ingestion,
    metrics,
    observations,
    review,
    score_configs,
    scores,
)
from sandbox.langfuse.common import ApiError, BadRequest, _api_error, error_body
from sandbox.langfuse.deps import Projects, StoreDep, require_auth
from sandbox.langfuse.store import LangfuseStore
from sandbox.runner import sandbox_app

meta = APIRouter()


@meta.get("/api/public/health", name="health")
async def health(store: StoreDep) -> Response:
    return JSONResponse({"status": "OK", "version": store.server_version})


@meta.get("/api/public/projects", name="projects", dependencies=[Depends(require_auth)])
async def projects(store: StoreDep) -> Response:
    project = {
        "id": store.project_id,
        "name": store.project_name,
        "organization": {"id": store.organization_id, "name": "Sandbox Org"},
        "metadata": {},
    }
    return JSONResponse({"data": [project]})


# (router, needs auth): every route of the public API but health needs the key pair
ROUTERS: tuple[tuple[APIRouter, bool], ...] = (
    (meta, False),
    (ingest.router, True),
    (ingestion.router, True),
    (observations.router, True),
    (scores.router, True),
    (score_configs.router, True),
    (annotation_queues.router, True),
    (metrics.router, True),
    (metrics.legacy_router, False),  # authenticates in the handler, after its events_only 404
    (review.router, True),  # sandbox only: /sandbox/...
)


def endpoint_of(request: Request) -> str | None:
    """The name of the route (in ``ROUTERS``) a request matches, a trailing slash ignored; None
    for no route or another method."""
    scope = dict(request.scope)
    path: str = scope["path"]
    for candidate in dict.fromkeys((path, path.rstrip("/") or "/")):
        scope["path"] = candidate
        for router, _ in ROUTERS:
            for route in router.routes:
                match, _child = route.matches(scope)
                if match is Match.FULL:
                    return getattr(route, "name", None)
    return None


async def _handle_error(request: Request, exc: Exception) -> Response:
    return _api_error(exc)


def create_langfuse_app(store: LangfuseStore) -> FastAPI:
    """The ASGI app serving ``store`` (its first project); ``app.state.projects`` holds every
    project (``Projects.add``), ``app.state.faults`` is its FaultState."""
    app = sandbox_app("Langfuse sandbox")
    app.state.store = store
    app.state.projects = Projects(store)
    for router, authed in ROUTERS:
        app.include_router(router, dependencies=[Depends(require_auth)] if authed else None)
    app.add_exception_handler(BadRequest, _handle_error)
    app.add_exception_handler(ApiError, _handle_error)
    install(app, endpoint_of, error_body)
    return app
