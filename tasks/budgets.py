"""Budgets shared by every run that talks to one Prefect server: global concurrency limits.

- Langfuse requests (``TRUST_EVAL_LANGFUSE_RATE_LIMIT``): a limit with slot decay, refilled at
  the plan's rate; every request takes one slot (``tasks.langfuse_api.Calls``). Score batches
  on POST ingestion count in Langfuse's "ingestion" bucket instead, so they take slots of
  ``TRUST_EVAL_LANGFUSE_INGESTION_RATE_LIMIT`` (when set), refilled at that bucket's rate.
- TLM calls in flight (``TRUST_EVAL_TLM_CONCURRENCY_LIMIT``): a limit without decay. A run's TLM
  engine holds its slots in leased blocks (:class:`TLMSlots`), never one request per item, and
  sends at most as many items at once as it holds slots. A block goes back as soon as the run
  has no items for it; a run killed while holding slots loses them when its lease runs out,
  which only a persistent server does: a run on Prefect's embedded server (no
  ``PREFECT_API_URL``, or the CLI's own embedded one) with a ceiling is refused.

How the limits are created and sized: docs/SCALING.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.concurrency.asyncio import concurrency
from prefect.exceptions import ObjectNotFound
from prefect.settings import get_current_settings

from tasks.config import EMBEDDED_PREFECT_API_VAR, RunLogger, Tuning, no_ceiling_here
from tasks.errors import ConfigError

WAITED_S = 1.0
CREATE_HINT = "run `make prefect`, or create it: prefect gcl create {name} --limit N"


def on_persistent_server() -> bool:
    """Runs share a persistent Prefect server (PREFECT_API_URL), not each its own ephemeral one
    (Prefect's, or the CLI's embedded server), which runs no lease repossessor."""
    url = get_current_settings().api.url
    return url is not None and url != os.environ.get(EMBEDDED_PREFECT_API_VAR)


def check_limits(tuning: Tuning, logger: RunLogger | None = None) -> Tuning:
    """The limits named in the settings exist and have the right kind, or one ConfigError; the
    tuning to run with (the TLM slot block no larger than the ceiling: Prefect refuses a
    request for more slots than a limit has)."""
    if tuning.tlm_concurrency_limit and not on_persistent_server():
        raise ConfigError(no_ceiling_here(tuning.tlm_concurrency_limit))
    wanted = [
        ("TRUST_EVAL_LANGFUSE_RATE_LIMIT", tuning.langfuse_rate_limit, True),
        ("TRUST_EVAL_LANGFUSE_INGESTION_RATE_LIMIT", tuning.langfuse_ingestion_rate_limit, True),
        ("TRUST_EVAL_TLM_CONCURRENCY_LIMIT", tuning.tlm_concurrency_limit, False),
    ]
    wanted = [w for w in wanted if w[1]]
    if not wanted:
        return tuning
    with get_client(sync_client=True) as client:
        for var, name, decays in wanted:
            assert name is not None
            try:
                limit = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                raise ConfigError(
                    f"{var} names the global concurrency limit {name!r}, which the Prefect "
                    f"server at {client.api_url} does not have: {CREATE_HINT.format(name=name)}"
                ) from None
            if decays and not limit.slot_decay_per_second:
                raise ConfigError(
                    f"{var}: the global concurrency limit {name!r} needs a slot decay (the "
                    "requests per second it refills) to be a rate: prefect gcl update "
                    f"{name} --slot-decay-per-second R"
                )
            if not decays and limit.slot_decay_per_second:
                raise ConfigError(
                    f"{var}: the global concurrency limit {name!r} has a slot decay, so it "
                    "would count calls started, not calls in flight: use a limit without one"
                )
            if not decays and limit.active and limit.limit < 1:
                raise ConfigError(
                    f"{var}: the global concurrency limit {name!r} has no slots, so no TLM "
                    f"call could start: prefect gcl update {name} --limit N"
                )
            if not decays and limit.limit < tuning.tlm_slot_block:
                if logger is not None:
                    logger.info(
                        "the TLM ceiling %r has %d slots: taking them %d at a time, not %d "
                        "(TRUST_EVAL_TLM_SLOT_BLOCK)", name, limit.limit, limit.limit,
                        tuning.tlm_slot_block,
                    )  # fmt: skip
                tuning = tuning.model_copy(update={"tlm_slot_block": limit.limit})
    return tuning


class TLMSlots:
    """Slots of the shared TLM limit, held by one run's engine, on the engine's event loop.

    ``want(n)`` asks for slots up to ``n`` (one block request at a time, at most ``block``
    slots each); ``trim(n)`` gives back whole blocks the run no longer needs. ``on_change`` is
    called on the loop whenever ``held`` changes or a request fails (``error`` is then set).
    """

    def __init__(
        self,
        name: str,
        *,
        block: int,
        lease_s: float,
        flow_run_id: UUID | None,
        on_change: Callable[[], None],
        logger: RunLogger | None = None,
    ) -> None:
        self.name, self.block, self.lease_s = name, block, lease_s
        self.holder = None
        if flow_run_id is not None:  # the lease records which run holds the slots
            self.holder = ConcurrencyLeaseHolder(type="flow_run", id=flow_run_id)
        self.on_change, self.logger = on_change, logger
        self.error: str | None = None
        self.waited_s = 0.0  # asks that waited (over WAITED_S): other runs held the slots
        self._blocks: list[tuple[int, asyncio.Event]] = []
        self._asking: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # every block until it is given back

    @property
    def held(self) -> int:
        return sum(size for size, _ in self._blocks)

    def want(self, n: int) -> None:
        if self.error is None and self._asking is None and n > self.held:
            size = min(self.block, n - self.held)
            self._asking = asyncio.create_task(self._hold(size))
            self._tasks.add(self._asking)
            self._asking.add_done_callback(self._tasks.discard)

    def trim(self, need: int) -> None:
        for blk in sorted(self._blocks, key=lambda b: b[0]):
            size, release = blk
            if self.held - size < need:
                break
            self._blocks.remove(blk)
            release.set()

    async def _hold(self, size: int) -> None:
        release, granted = asyncio.Event(), False
        started = time.monotonic()
        try:
            async with concurrency(
                self.name, occupy=size, lease_duration=self.lease_s, strict=True,
                holder=self.holder, raise_on_lease_renewal_failure=False,
            ):  # fmt: skip
                granted = True
                waited = time.monotonic() - started
                if waited > WAITED_S:  # a free slot is granted in milliseconds
                    self.waited_s += waited
                if waited > 5 and self.logger is not None:
                    self.logger.info(
                        "waited %.0f s for %d slots of the shared TLM limit %r",
                        waited, size, self.name,
                    )  # fmt: skip
                self._blocks.append((size, release))
                self._asking = None
                self.on_change()
                await release.wait()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # the server refused or is gone: no more slots, no more sends
            if not granted:
                self.error = f"could not take slots of the shared TLM limit {self.name!r}: {err}"
            self._asking = None
            self.on_change()

    async def close(self) -> None:
        """Give every block back, stop asking, and wait until the server has them back."""
        if self._asking is not None:
            self._asking.cancel()  # Prefect gives back what the server grants it after this
        self.trim(0)
        if self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait(list(self._tasks), timeout=10)
        self._asking = None
