"""The score-config routes: POST/GET /api/public/score-configs, GET/PATCH .../{configId}."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.langfuse.common import (
    NotFound,
    _json_object,
    _paged,
    iso,
)
from sandbox.langfuse.deps import StoreDep
from sandbox.langfuse.records import (
    ScoreConfigRecord,
)

router = APIRouter()


@router.post("/api/public/score-configs", name="score_configs.create")
async def create_score_config(request: Request, store: StoreDep) -> Response:
    config = store.create_score_config(await _json_object(request))
    return JSONResponse(score_config_json(config, store.project_id))


@router.get("/api/public/score-configs", name="score_configs.list")
async def list_score_configs(request: Request, store: StoreDep) -> Response:
    configs = sorted(store.score_configs(), key=lambda c: c.seq, reverse=True)
    page = _paged(configs, request.query_params, lambda c: score_config_json(c, store.project_id))
    return JSONResponse(page)


@router.get("/api/public/score-configs/{config_id}", name="score_configs.get")
async def get_score_config(store: StoreDep, config_id: str) -> Response:
    config = store.score_config(config_id)
    if config is None:
        raise NotFound("Score config not found within authorized project")
    return JSONResponse(score_config_json(config, store.project_id))


@router.patch("/api/public/score-configs/{config_id}", name="score_configs.update")
async def update_score_config(request: Request, store: StoreDep, config_id: str) -> Response:
    config = store.update_score_config(config_id, await _json_object(request))
    return JSONResponse(score_config_json(config, store.project_id))


# --------------------------------------------------------------------------- JSON


def score_config_json(config: ScoreConfigRecord, project_id: str) -> dict[str, Any]:
    """One ScoreConfig."""
    return {
        "id": config.id,
        "name": config.name,
        "createdAt": iso(config.created_ms),
        "updatedAt": iso(config.updated_ms),
        "projectId": project_id,
        "dataType": config.data_type,
        "isArchived": config.is_archived,
        "minValue": config.min_value,
        "maxValue": config.max_value,
        "categories": config.categories,
        "description": config.description,
    }
