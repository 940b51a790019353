"""What every authenticated route of the Langfuse sandbox depends on: the caller's project (the
store its key pair opens), the faults, and the key pair itself (HTTP Basic, checked once for all
routes but health).

One sandbox server can hold several projects (:meth:`LangfuseSandbox.add_project`), each with its
own key pair and data, as one Langfuse server does: a request reaches the project of its keys.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from sandbox.faults import FaultState
from sandbox.langfuse.common import ApiError
from sandbox.langfuse.store import LangfuseStore


class Unauthorized(ApiError):
    status = 401


class Projects:
    """The projects one sandbox server serves: the first (``primary``) and any added later.
    Keys are looked up when a request comes in, so a store's keys may change after it is added."""

    def __init__(self, primary: LangfuseStore) -> None:
        self.primary = primary
        self._stores: list[LangfuseStore] = [primary]
        self._lock = threading.Lock()

    def add(self, store: LangfuseStore) -> None:
        with self._lock:
            if any(s.public_key == store.public_key for s in self._stores):
                raise ValueError(f"public key {store.public_key!r} is already in use")
            if store.settings is not self.primary.settings:
                raise ValueError("a project must share the server's settings")
            self._stores.append(store)

    def all(self) -> list[LangfuseStore]:
        with self._lock:
            return list(self._stores)

    def for_header(self, header: str | None) -> LangfuseStore | None:
        """The project whose key pair the ``Authorization: Basic`` header carries, else None."""
        if not header or not header.strip().lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(header.strip()[6:].strip(), validate=True).decode()
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        public, _, secret = decoded.partition(":")
        for store in self.all():
            if secrets.compare_digest(
                public.encode(), store.public_key.encode()
            ) and secrets.compare_digest(secret.encode(), store.secret_key.encode()):
                return store
        return None


def projects_of(request: Request) -> Projects:
    projects: Projects = request.app.state.projects
    return projects


async def get_store(request: Request) -> LangfuseStore:
    """The caller's project; the server's first project when the key pair opens none (health,
    which needs no auth; every other route refuses such a call in ``require_auth``)."""
    projects = projects_of(request)
    return projects.for_header(request.headers.get("authorization")) or projects.primary


async def get_faults(request: Request) -> FaultState:
    faults: FaultState = request.app.state.faults
    return faults


StoreDep = Annotated[LangfuseStore, Depends(get_store)]
FaultsDep = Annotated[FaultState, Depends(get_faults)]


async def require_auth(request: Request) -> None:
    """HTTP Basic auth with the key pair of one of the server's projects; raises Unauthorized."""
    header = request.headers.get("authorization")
    if header is None:
        raise Unauthorized("Unauthorized: no authorization header")
    if projects_of(request).for_header(header) is None:
        raise Unauthorized("Invalid credentials. Confirm that you've configured the keys.")
