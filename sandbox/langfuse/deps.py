"""What every authenticated route of the Langfuse sandbox depends on: the store, its faults and
the caller's key pair (HTTP Basic, checked once for all routes but health)."""

from __future__ import annotations

import base64
import secrets
from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from sandbox.faults import FaultState
from sandbox.langfuse.common import ApiError
from sandbox.langfuse.store import LangfuseStore


class Unauthorized(ApiError):
    status = 401


async def get_store(request: Request) -> LangfuseStore:
    store: LangfuseStore = request.app.state.store
    return store


async def get_faults(request: Request) -> FaultState:
    faults: FaultState = request.app.state.faults
    return faults


StoreDep = Annotated[LangfuseStore, Depends(get_store)]
FaultsDep = Annotated[FaultState, Depends(get_faults)]


async def require_auth(request: Request, store: StoreDep) -> None:
    """HTTP Basic auth with the store's key pair; raises Unauthorized (401)."""
    header = request.headers.get("authorization")
    if header is None:
        raise Unauthorized("Unauthorized: no authorization header")
    expected = "Basic " + base64.b64encode(
        f"{store.public_key}:{store.secret_key}".encode()
    ).decode("ascii")
    if not secrets.compare_digest(header.strip().encode(), expected.encode()):
        raise Unauthorized("Invalid credentials. Confirm that you've configured the keys.")
