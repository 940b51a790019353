"""Requests to one window-lock Variable by id (flows/window_lock.py), without Prefect's 2 s
back-off on a SQLite server's 503s."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

import httpx
from prefect.client.orchestration import SyncPrefectClient

from tasks.clock import SYSTEM, Clock

# A SQLite Prefect server answers 503 ("database is locked") to a DELETE whenever another write
# commits between its read of the row and its delete (prefect/server/models/variables.py
# delete_variable reads, emits the event, then deletes): it does for most releases, while the run's
# last task states are recorded. Prefect's client waits 2 s, then 4 s, before asking again; these
# pauses come first.
QUICK_RETRIES_S = (0.05, 0.1, 0.2, 0.4)


def _send_once(client: SyncPrefectClient, method: str, var_id: UUID, **kw: Any) -> int:
    """One request, without Prefect's retries: its status code."""
    http = client._client  # Prefect's httpx client: its base URL, auth headers and pool
    request = http.build_request(method, f"/variables/{var_id}", **kw)
    return httpx.Client.send(http, request).status_code


def by_id(
    client: SyncPrefectClient,
    method: Literal["PATCH", "DELETE"],
    var_id: UUID,
    clock: Clock = SYSTEM,
    **kw: Any,
) -> bool:
    """PATCH or DELETE one Variable by id; False if that Variable no longer exists."""
    status = 503
    for pause in QUICK_RETRIES_S:
        try:
            status = _send_once(client, method, var_id, **kw)
        except httpx.TransportError:
            break
        if status != 503:
            break
        clock.sleep(pause)
    if status in (200, 204):
        return True
    if status == 404:
        return False
    try:  # anything else (still locked, CSRF, a blip): Prefect's client, its retries, its errors
        client.request(method, "/variables/{id}", path_params={"id": var_id}, **kw)
        return True
    except httpx.HTTPStatusError as err:
        if err.response.status_code == 404:
            return False
        raise
